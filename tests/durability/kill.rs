//! The kill cycle that `crash`, `faults` and `power_cut` repeat: the real binary under
//! concurrent posts, killed with SIGKILL at a chosen moment; and the check that a store holds
//! every acknowledged submission exactly once afterwards.

use crate::harness::{free_port, spawn_binary_async};
use std::path::Path;
use std::time::Duration;

/// One crash cycle against the real binary: starts it on `dir` (with `extra` flags), posts
/// distinct submissions from `clients` concurrent clients (trace IDs `{prefix}-{client}-{n}`),
/// kills it with SIGKILL after `after`, and waits for it to exit. Returns the trace IDs that
/// were answered 2xx and when the kill was sent. Any other answer before the kill fails the
/// test; a dropped connection is the kill (not acknowledged).
pub async fn post_then_kill(
    dir: &Path,
    extra: &[&str],
    clients: usize,
    prefix: &str,
    after: Duration,
) -> (std::collections::HashSet<String>, std::time::Instant) {
    post_then_kill_during(dir, extra, clients, prefix, after, || {}).await
}

/// [`post_then_kill`], with `during` run on its own thread once the server answers (an ops
/// command against it, say); the kill does not wait for it, the return does.
pub async fn post_then_kill_during(
    dir: &Path,
    extra: &[&str],
    clients: usize,
    prefix: &str,
    after: Duration,
    during: impl FnOnce() + Send + 'static,
) -> (std::collections::HashSet<String>, std::time::Instant) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let port = free_port();
    let child = spawn_binary_async(dir, port, extra).await;
    let during = tokio::task::spawn_blocking(during);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let acked: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("{prefix}-{c:02}-{n:06}");
                n += 1;
                let r = client
                    .post(format!("http://127.0.0.1:{port}/api/collect"))
                    .header("Idempotency-Key", &id)
                    .json(&serde_json::json!({"email": format!("{id}@example.com")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().insert(id);
                    }
                    Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                    Err(_) => break, // the server died mid-request: not acknowledged
                }
            }
        }));
    }
    tokio::time::sleep(after).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = std::time::Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    during.await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    let acked = acked.lock().unwrap().clone();
    (acked, killed_at)
}

/// After crashes: the store in `dir` opens, holds every trace ID in `acked`, counts each
/// stored record once (accepted less purged = pending = due index entries, delivery being
/// off) and balances its counters.
pub fn assert_each_acked_stored_once(dir: &Path, acked: &std::collections::HashSet<String>) {
    let store = outbox::store::Store::open(dir).expect("the store opens after the last crash");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| store.get(id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged submissions lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let counts = store.counts().unwrap();
    let due = store.due_until(i64::MAX, usize::MAX).unwrap().len();
    assert_eq!(counts.pending as usize, due, "due index and counters agree");
    assert_eq!(
        (counts.accepted - counts.purged) as usize,
        due,
        "each stored trace ID is counted exactly once"
    );
    assert!(counts.balanced(), "{counts:?}");
    assert!(due >= acked.len());
}
