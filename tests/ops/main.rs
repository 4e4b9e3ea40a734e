//! The operator's commands, run as the real binary against a running server and a stopped
//! directory (inspect, replay, edit, verify, purge, backup, restore, import-legacy, top,
//! config check, healthcheck, upgrades of the data directory), `ops/backup.sh`, and the assets in ops/ that must match the
//! code. One test binary; the shared harness is `tests/harness/` (`harness::ops` runs the
//! commands and seeds stopped directories).

#[path = "../harness/mod.rs"]
mod harness;

mod assets;
mod backup;
mod backup_script;
mod config;
mod config_rules;
mod config_typos;
mod disk;
mod disk_full;
mod erase_backups;
mod healthcheck;
mod import;
mod inspect;
mod inspect_lines;
mod top;
mod upgrade;
mod verify_purge;
