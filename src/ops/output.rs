//! What every command does with its result: `--json` printing and the exit code.
//!
//! Exit codes: 0 ok, 1 problems found (verify, files that failed to import, records
//! refused), 2 usage or environment error (returned as `Err`, printed by `main`).

use std::process::ExitCode;

/// Exit code when a command ran but found problems.
pub const EXIT_PROBLEMS: u8 = 1;

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("plain data"));
}

/// 0, or [`EXIT_PROBLEMS`] when the command found problems.
pub fn status(problems: bool) -> ExitCode {
    if problems {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}
