//! Durability: SIGKILLs at random moments (`crash`), the faults a small server meets
//! (`faults`, with an opt-in soak), and power cuts on a FUSE filesystem that forgets unsynced
//! writes (`power_cut`, `powerfs`); `kill` is the kill cycle they share. One test binary;
//! the shared harness is `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod crash;
mod faults;
mod kill;
mod power_cut;
mod powerfs;
mod repair;
