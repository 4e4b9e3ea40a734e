//! The test list every engine runs: [`conformance_tests!`](crate::conformance_tests) writes
//! one test per check of this module's parent for an engine's own test module.

/// One test per conformance check for an engine's test module: `conformance_tests!(fresh)`
/// where `fresh(check_name)` is an async fn returning `Option<(guard, store)>`: a new, empty
/// store (`store` dereferences to a [`RecordStore`](crate::store::RecordStore)) and what must live as long as it (a
/// temporary directory, a cluster), or `None` when the engine cannot run here (after a loud
/// SKIP). The list of checks is kept here once, so a new check runs against every engine.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@each $fresh;
            idempotency,
            claim_and_settle,
            dead_letters,
            busy_record_refuses_changes,
            purge_after_window,
            erasure_by_address,
            list_and_quarantine,
            removals_are_counted,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_guard, store)) = $fresh(stringify!($name)).await else {
                return;
            };
            $crate::store::conformance::$name(&*store).await;
        }
    )*};
}
