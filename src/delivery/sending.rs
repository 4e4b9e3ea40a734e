//! The sends a delivery worker has running: each attempt is a task of its own, in its own
//! span, that cannot take the worker down with it (a panic counts as a failed attempt), and
//! whose claim is noted for release if the task ends without a result.

use super::classify::{Reply, Transport};
use super::client::{Attempt, Sender};
use super::gate::Probe;
use super::request::{self, Credentials, RequestError, Target};
use crate::store::Record;
use crate::time::Now;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{Id, JoinError, JoinSet};
use tracing::Instrument;

/// A send that finished.
pub(super) struct Sent {
    pub record: Record,
    pub probe: Probe,
    pub result: Result<Attempt, RequestError>,
}

/// The span of one attempt: its logs carry the trace ID, never the payload.
pub(super) fn span(record: &Record) -> tracing::Span {
    tracing::info_span!("delivery", trace_id = %record.trace_id, attempt = record.attempts + 1)
}

/// Sends running now, and the trace ID each carries.
#[derive(Default)]
pub(super) struct Running {
    pub set: JoinSet<Sent>,
    ids: HashMap<Id, String>,
    /// Claims of tasks that ended without a result (cut off at shutdown): given back by the
    /// next store round, so that no claim outlives its send.
    pub lost: Vec<String>,
}

impl Running {
    /// Keeps a finished send for the next step; a task that ended without one has its
    /// claim noted for release.
    pub fn collect(&mut self, finished: &mut Vec<Sent>, r: Result<(Id, Sent), JoinError>) {
        match r {
            Ok((id, sent)) => {
                self.ids.remove(&id);
                finished.push(sent);
            }
            Err(e) => {
                if !e.is_cancelled() {
                    tracing::error!(error = %e, "a delivery task failed");
                }
                self.lost.extend(self.ids.remove(&e.id()));
            }
        }
    }

    /// Builds the request for `record` and sends it in a task of its own.
    pub fn spawn<S: Sender>(
        &mut self,
        record: Record,
        probe: Probe,
        (sender, target, creds): (Arc<S>, Arc<Target>, Arc<Credentials>),
        now: Now,
    ) {
        let span = span(&record);
        let timestamp = now.wall_ms.div_euclid(1000);
        let trace_id = record.trace_id.clone();
        let task = self.set.spawn(
            async move {
                let send = async {
                    match request::build(&record, &creds, &target, timestamp) {
                        Ok(req) => Ok(sender.send(req).await),
                        Err(e) => Err(e),
                    }
                };
                let result = AssertUnwindSafe(send)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Ok(panicked()));
                Sent {
                    record,
                    probe,
                    result,
                }
            }
            .instrument(span),
        );
        self.ids.insert(task.id(), trace_id);
    }
}

/// The attempt of a send whose task panicked: the request may have gone out, so it counts as
/// a failed attempt and is retried after the backoff (a release would send it again at once).
fn panicked() -> Attempt {
    tracing::error!("a delivery task panicked; its record is retried after the backoff");
    Attempt {
        reply: Reply::Transport(Transport::Other),
        retry_after: None,
        detail: "the delivery task panicked; see the outbox log".into(),
        elapsed: Duration::ZERO,
    }
}
