//! The terminal of `outbox top`: raw keys on the alternate screen, given back as it was.

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The terminal in no-echo, key-at-a-time mode on the alternate screen; restored on drop
/// (also when unwinding), so the shell gets its terminal back whatever happens.
pub struct Screen(Option<Termios>);

impl Screen {
    pub fn enter() -> anyhow::Result<Screen> {
        let stdin = std::io::stdin();
        let saved = if stdin.is_terminal() {
            let saved = termios::tcgetattr(&stdin)?;
            let mut raw = saved.clone();
            // ISIG stays on: Ctrl-C still raises SIGINT, which sets the quit flag.
            raw.local_flags
                .remove(LocalFlags::ICANON | LocalFlags::ECHO);
            termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
            Some(saved)
        } else {
            None
        };
        print!("\x1b[?1049h\x1b[?25l");
        Ok(Screen(saved))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}

/// Waits up to `timeout` for `q` (or Ctrl-C, via the flag). True means quit.
pub fn wait_for_quit(timeout: Duration, quit: &AtomicBool) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + timeout;
    let stdin = std::io::stdin();
    loop {
        if quit.load(Ordering::Relaxed) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let step = PollTimeout::try_from(left.min(Duration::from_millis(200))).expect("small");
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, step), Ok(n) if n > 0) {
            let mut key = [0u8; 1];
            match nix::unistd::read(0, &mut key) {
                Ok(1) if matches!(key[0], b'q' | b'Q' | 3) => return true,
                Ok(0) => std::thread::sleep(left), // stdin closed: only signals can quit
                _ => {}
            }
        }
    }
}
