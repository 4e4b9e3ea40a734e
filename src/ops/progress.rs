//! Progress for long operations: a bar on a terminal, nothing but the final counts otherwise
//! (a log or a cron mail should not fill with redraws).

use crate::ops::operation::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Runs `f` with a progress callback that draws a bar labelled `label` on stderr (when it is
/// a terminal), and clears the bar when `f` returns.
pub fn with_bar<R>(label: &str, f: impl FnOnce(Progress) -> R) -> R {
    let bar = Bar::new(label);
    let out = f(&|done, total| bar.update(done, total));
    bar.finish();
    out
}

struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(label: &str) -> Bar {
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

    fn update(&self, done: u64, total: Option<u64>) {
        if let Some(b) = &self.0 {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(done);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
