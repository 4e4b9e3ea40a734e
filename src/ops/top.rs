//! `outbox top`: a live view of a running server through the admin channel.

use crate::ops::command::TopArgs;
use std::process::ExitCode;

pub fn run(_a: TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("outbox top is not available yet")
}
