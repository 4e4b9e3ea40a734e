//! Crash safety of intake: the real binary is killed with SIGKILL at random moments while
//! several clients post; after each restart every trace ID that got a 2xx must be stored,
//! exactly once. Bounded to about 20 cycles of under a few seconds each.

mod common;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use outbox::store::Store;
use rand::Rng;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CYCLES: usize = 20;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_submission() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let port = common::free_port();
        let dir2 = dir.clone();
        let child = tokio::task::spawn_blocking(move || common::spawn_binary(&dir2, port, &[]))
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("kill-{cycle:02}-{c:02}-{n:06}");
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
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..700))).await;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.wait()
        })
        .await
        .unwrap()
        .unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > CYCLES * 10,
        "the load should get through between kills ({})",
        acked.len()
    );
    let store = Store::open(&dir).expect("the store opens after the last kill");
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
    let entries = outbox_entries(&store);
    assert_eq!(
        counts.accepted as usize, entries,
        "each stored trace ID is counted exactly once"
    );
    assert!(counts.balanced(), "{counts:?}");
    assert!(entries >= acked.len());
}

/// Number of records in the store (pending, since delivery is off).
fn outbox_entries(store: &Store) -> usize {
    let c = store.counts().unwrap();
    let due = store.due_until(i64::MAX, usize::MAX).unwrap().len();
    assert_eq!(c.pending as usize, due, "due index and counters agree");
    due
}
