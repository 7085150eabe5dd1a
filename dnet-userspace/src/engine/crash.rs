//! Test-only crash points: a daemon started with `DNET_CRASH_AT=NAME` kills
//! itself with SIGKILL (as `kill -9` would) when it reaches
//! `crash::point("NAME")`, so a test can stop an operation at one exact
//! step and check what the next start makes of it. Compiled in only with
//! `debug_assertions`; in a release build every point is a no-op.
//!
//! Points (see where each `crash::point` call sits):
//! - `network-create:made`: a network's kernel objects made, not committed;
//! - `container-create:made`: a container's namespace, endpoint, ports and
//!   process made, not committed;
//! - `connect:made`: an endpoint attached, not committed;
//! - `veth:created`: a veth pair made, its alias not yet set;
//! - `container-remove:committed`, `disconnect:committed`,
//!   `network-remove:committed`: a removal committed, nothing torn down.
//!
//! `DNET_HOLD_AT=reaper:remove` stops the reaper (`driver::Reaper`) before
//! its first link removal, for good: removals are recorded, answered and
//! left for the next start. With `DNET_HOLD_WHILE=FILE` too, it holds only
//! while FILE exists: a test releases it when it has seen what it waits.

/// The environment variable that names the point to crash at.
pub const ENV: &str = "DNET_CRASH_AT";

/// Kills the daemon with SIGKILL if it was started with `DNET_CRASH_AT=name`.
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(name) {
        tracing::warn!("{ENV}={name}: killing the daemon here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// A release build has no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}

/// The environment variable that names the point to stop at for good.
pub const HOLD_ENV: &str = "DNET_HOLD_AT";
/// The environment variable that names the file whose removal ends a hold.
pub const HOLD_WHILE_ENV: &str = "DNET_HOLD_WHILE";

/// Blocks the calling thread if the daemon was started with
/// `DNET_HOLD_AT=name`: for good, or while the file `DNET_HOLD_WHILE` names
/// exists. A test holds background work there (the reaper's removals) to
/// see what a daemon killed before it finished leaves, or what waits for it.
#[cfg(debug_assertions)]
pub fn hold(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(HOLD_ENV).ok()).as_deref() != Some(name) {
        return;
    }
    match std::env::var_os(HOLD_WHILE_ENV) {
        Some(file) => {
            tracing::warn!("{HOLD_ENV}={name}: holding here while {file:?} exists");
            while std::path::Path::new(&file).exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        None => {
            tracing::warn!("{HOLD_ENV}={name}: holding here");
            loop {
                std::thread::park();
            }
        }
    }
}

/// A release build has no hold points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hold(_name: &str) {}
