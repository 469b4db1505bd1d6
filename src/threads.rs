//! Every thread fennec starts goes through [`spawn`], with a [`Role`] and a name, so what a
//! thread may do can be decided per role in one place (a syscall filter per role, say).

use std::io;
use std::thread::JoinHandle;

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
    /// Serves the control socket's requests: configures, starts and drives the VM.
    ApiService,
    /// Waits for the signals fennec handles (SIGTERM, SIGINT, SIGHUP, SIGUSR1).
    Signals,
}

impl Role {
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
pub fn spawn<F, T>(role: Role, name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    log::debug!("Starting thread fennec-{name} ({})", role.name());
    std::thread::Builder::new()
        .name(format!("fennec-{name}"))
        .spawn(f)
}
