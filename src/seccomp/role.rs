//! The roles fennec's threads have: each has a syscall allowlist of its own ([`super::rules`]).

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
