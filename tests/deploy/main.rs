//! Deployment, with the real tools: nginx in front (`nginx`, `two_instances`), the systemd
//! unit and its syscall filter (`systemd`), the Debian package (`package_deb`), the container
//! image and the compose file in podman (`container`, `compose`). Each needs a tool or an
//! artefact; without it the test says SKIP loudly and passes, except under CI, where it
//! fails (`harness::tools`). Those that run take turns (`harness::turn`): each stands up a
//! whole system with deadlines of its own. One test binary; the shared harness is
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod compose;
mod container;
mod nginx;
mod package_deb;
mod systemd;
mod two_instances;
