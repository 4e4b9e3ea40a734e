//! Progress for long operations: a bar on a terminal, nothing but the final counts otherwise
//! (a log or a cron mail should not fill with redraws).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(label: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({elapsed})")
                .expect("valid template"),
        );
        bar.set_message(label.to_owned());
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        Bar(Some(bar))
    }

    pub fn update(&self, done: u64, total: Option<u64>) {
        if let Some(b) = &self.0 {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Bar {
    /// No bar at all (for views that draw their own screen).
    pub fn hidden() -> Bar {
        Bar(None)
    }
}
