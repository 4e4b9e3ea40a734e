//! A real headless Chromium against the real service: the example page from
//! `ops/site-example/` with outbox.js, the client script outbox serves (`page`); what the
//! script keeps and sends again when the network, outbox or the browser's storage fails
//! (`queue`), across tabs and when the tab closes (`tabs`), within its bounds (`limits`); its
//! answers to refusals and lost answers behind a scripted proxy (`refusals`,
//! `proxy`). WebDriver and the page server are in `support`, the visitor's actions and the
//! real binary with a stub dashboard in `visitor`. The tests take turns (`harness::turn`,
//! through `support::browser_tools`). One test binary; the shared harness is `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod limits;
mod page;
mod proxy;
mod queue;
mod refusals;
mod support;
mod tabs;
mod visitor;
