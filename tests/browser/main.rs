//! A real headless Chromium against the real service: the example page from
//! `ops/site-example/` submitting the three ways a site does (`page`), and its answers to
//! refusals and lost answers behind a scripted proxy (`refusals`, `proxy`). WebDriver and the
//! page server are in `support`. The tests take turns (`harness::turn`, through
//! `support::browser_tools`). One test binary; the shared harness is `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod page;
mod proxy;
mod refusals;
mod support;
