//! Every thread fennec starts goes through [`spawn`], with a [`Role`] and a name, and runs
//! under its role's syscall filter ([`crate::seccomp`]) from its first instruction of fennec's.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::seccomp;

/// What a thread is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs one vCPU: `KVM_RUN` and the device accesses it exits for.
    Vcpu,
    /// The VMM's controller: the event loop serving devices, console input and lifecycle
    /// commands.
    Vmm,
    /// Writes the guest's console output to where it goes (stdout, a file).
    Console,
    /// The control socket: accepts connections, reads requests, writes answers.
    Api,
    /// Drives a running VM: serves the control socket's requests (pause, resume, swapping a
    /// drive, snapshots, shutdown), and is the CLI's main thread once the VM runs.
    ApiService,
    /// Waits for the signals fennec handles (SIGTERM, SIGINT, SIGHUP, SIGUSR1).
    Signals,
}

impl Role {
    /// Every role, in declaration order (`role as usize` indexes it).
    pub const ALL: [Role; 6] = [
        Role::Vcpu,
        Role::Vmm,
        Role::Console,
        Role::Api,
        Role::ApiService,
        Role::Signals,
    ];

    /// The role's name, as thread names and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Vcpu => "vcpu",
            Role::Vmm => "vmm",
            Role::Console => "console",
            Role::Api => "api",
            Role::ApiService => "api-service",
            Role::Signals => "signals",
        }
    }
}

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
