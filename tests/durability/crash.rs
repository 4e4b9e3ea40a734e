//! Crash safety of intake: the real binary is killed with SIGKILL at random moments while
//! several clients post; after each restart every trace ID that got a 2xx must be stored,
//! exactly once. Bounded to about 20 cycles of under a few seconds each.

use crate::kill;
use rand::Rng;
use std::collections::HashSet;
use std::time::Duration;

const CYCLES: usize = 20;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_submission() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut acked = HashSet::new();
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let after = Duration::from_millis(rng.gen_range(50..700));
        let prefix = format!("kill-{cycle:02}");
        acked.extend(
            kill::post_then_kill(&dir, &[], CLIENTS, &prefix, after)
                .await
                .0,
        );
    }

    assert!(
        acked.len() > CYCLES * 10,
        "the load should get through between kills ({})",
        acked.len()
    );
    kill::assert_each_acked_stored_once(&dir, &acked);
}
