//! Every thread fennec starts goes through [`spawn`], with a [`Role`] and a name, and runs
//! under its role's syscall filter ([`crate::seccomp`]) from its first instruction of fennec's.
//! [`process_start`] is when the process started, as far as fennec knows.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::seccomp::{self, Role};

/// Starts `f` on a thread named `fennec-NAME` (Linux keeps the first 15 bytes) with `role`.
/// The thread installs its role's syscall filter before `f` runs; if it cannot, `f` never runs
/// and the error is returned here.
pub fn spawn<F, T>(role: Role, name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    log::debug!("Starting thread fennec-{name} ({})", role.name());
    seccomp::may_start(role).map_err(io::Error::other)?;
    // The filter the new thread inherits from this one.
    let inherited = seccomp::current();
    let (filtered_tx, filtered) = mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(format!("fennec-{name}"))
        .spawn(move || {
            let installed = seccomp::install_on_thread(role, inherited);
            let failed = installed.is_err();
            let _ = filtered_tx.send(installed);
            if failed {
                // End the thread without running `f` and without a panic message: the caller
                // reports the error.
                std::panic::resume_unwind(Box::new("no syscall filter"));
            }
            seccomp::selftest(role);
            if role == Role::ApiService {
                crate::sandbox::selftest(role.name());
            }
            f()
        })?;
    match filtered.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Err(io::Error::other(
            "the thread ended before installing its syscall filter",
        )),
    }
}

/// When this process started, as far as fennec knows: the time of the first call. The guest's
/// boot time (its boot timer write) is measured from here; the `fennec` binary calls it first
/// thing in `main`, a library user may do the same.
pub fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}
