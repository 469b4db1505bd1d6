//! The syscall allowlist of each thread role, with who needs each syscall.
//!
//! Every role gets `common` (memory, locks, time, logging, thread exit); roles that start
//! threads get `thread_start`; then each role adds its own. A syscall a role needs and does
//! not have kills fennec with SIGSYS (the default level) and shows in the kernel log as
//! `audit: type=1326 ... comm="fennec-ROLE" ... syscall=N`; run with `--seccomp-filter log` to
//! collect every such call of a code path at once, and add each here with a comment saying
//! who makes it.
//!
//! Argument checks where an argument decides what the call can do: `ioctl` request numbers per
//! role, `mmap`/`mprotect` never executable, `clone` only for threads, `openat` read-only
//! except for the one role that opens images, `fcntl` and `madvise` by command, `prctl` only to
//! name a thread. No role may `execve`, `fork`, `ptrace`, create sockets, or mount anything.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompRule};

use super::need::{Call, SyscallNeed};
use super::role::Role;
use crate::config::{KindVisitor, VirtioDeviceConfig, VmConfig};

/// The ioctl request numbers fennec's filtered threads make.
#[allow(non_snake_case, missing_docs)]
pub mod ioctls {
    use kvm_bindings::{
        kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
        kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, KVMIO,
    };

    vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
}

/// A role's rules under construction: syscall number to the argument checks of which one must
/// hold (none: always allowed).
struct Rules(BTreeMap<i64, Vec<SeccompRule>>);

impl Rules {
    /// Allows `nr` whatever its arguments.
    fn allow(&mut self, nr: i64) -> &mut Self {
        self.0.insert(nr, Vec::new());
        self
    }

    /// Allows `nr` when one of `alternatives` (each a list of conditions that must all hold)
    /// holds. Adding alternatives to a syscall already allowed outright changes nothing.
    fn allow_if(&mut self, nr: i64, alternatives: Vec<Vec<SeccompCondition>>) -> &mut Self {
        if self.0.get(&nr).is_some_and(Vec::is_empty) {
            return self;
        }
        let rules = self.0.entry(nr).or_default();
        for conditions in alternatives {
            rules.push(SeccompRule::new(conditions).expect("a rule has conditions"));
        }
        self
    }

    /// Allows `ioctl` with these request numbers.
    fn ioctls(&mut self, requests: &[u64]) -> &mut Self {
        let alternatives = requests.iter().map(|r| vec![arg_eq(1, *r)]).collect();
        self.allow_if(libc::SYS_ioctl, alternatives)
    }

    /// Allows `fcntl` with these commands.
    fn fcntls(&mut self, commands: &[libc::c_int]) -> &mut Self {
        let alternatives = commands
            .iter()
            .map(|c| vec![arg_eq(1, *c as u64)])
            .collect();
        self.allow_if(libc::SYS_fcntl, alternatives)
    }
}

/// Argument `index` (32 bits) equals `value`.
fn arg_eq(index: u8, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, Len::Dword, Op::Eq, value).expect("a valid condition")
}

/// Argument `index` has none of the bits of `mask` set.
fn arg_clear(index: u8, len: Len, mask: u64) -> SeccompCondition {
    SeccompCondition::new(index, len, Op::MaskedEq(mask), 0).expect("a valid condition")
}

/// Argument `index` has every bit of `mask` set.
fn arg_set(index: u8, len: Len, mask: u64) -> SeccompCondition {
    SeccompCondition::new(index, len, Op::MaskedEq(mask), mask).expect("a valid condition")
}

/// Whether threads of `role` start threads (and so need `thread_start`, and `clone3`
/// answered with ENOSYS: see [`refusals`]).
pub fn starts_threads(role: Role) -> bool {
    matches!(role, Role::Api | Role::ApiService)
}

/// Syscalls `role` may make but that fail with an errno rather than kill the process, by
/// errno: `clone3` for roles that start threads (it takes its flags in memory, where a filter
/// cannot look; ENOSYS makes glibc fall back to `clone`, whose flags the allowlist checks);
/// `openat` for roles that open no files, all but the API service (glibc's malloc may try to
/// read /sys/devices/system/cpu/online in any thread, and does without it).
pub fn refusals(role: Role) -> Vec<(i32, Vec<i64>)> {
    let mut out = Vec::new();
    if starts_threads(role) {
        out.push((libc::ENOSYS, vec![libc::SYS_clone3]));
    }
    if role != Role::ApiService {
        out.push((libc::EACCES, vec![libc::SYS_openat]));
    }
    out
}

/// The allowlist of `role`.
pub fn allowlist(role: Role) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut r = Rules(BTreeMap::new());
    common(&mut r);
    if starts_threads(role) {
        thread_start(&mut r);
    }
    match role {
        Role::Vcpu => vcpu(&mut r),
        Role::Vmm => vmm(&mut r),
        Role::Console => console(&mut r),
        Role::Api => api(&mut r),
        Role::ApiService => api_service(&mut r),
        Role::Signals => signals(&mut r),
    }
    for need in device_needs().filter(|n| n.role == role) {
        match need.call {
            Call::Any(nr) => r.allow(nr),
            Call::Ioctl(request) => r.ioctls(&[request]),
            Call::Args2(nr, a0, a1) => r.allow_if(nr, vec![vec![arg_eq(0, a0), arg_eq(1, a1)]]),
        };
    }
    r.0
}

/// What the devices' backends need beyond a role's base, each kind's listed (with who needs
/// it) in its configuration file ([`VirtioDeviceConfig::SYSCALLS`]).
pub fn device_needs() -> impl Iterator<Item = &'static SyscallNeed> {
    struct Needs(Vec<&'static SyscallNeed>);
    impl KindVisitor for Needs {
        fn visit<C: VirtioDeviceConfig>(&mut self) {
            self.0.extend(C::SYSCALLS);
        }
    }
    let mut needs = Needs(Vec::new());
    VmConfig::visit_kinds(&mut needs);
    needs.0.into_iter()
}

/// What every thread does: allocate, lock, read the clock, log, end.
fn common(r: &mut Rules) {
    let no_exec = || vec![vec![arg_clear(2, Len::Dword, libc::PROT_EXEC as u64)]];
    // The allocator; Rust's std for thread stacks and signal stacks. Never executable memory.
    r.allow_if(libc::SYS_mmap, no_exec())
        .allow_if(libc::SYS_mprotect, no_exec())
        .allow(libc::SYS_munmap)
        .allow(libc::SYS_mremap)
        .allow(libc::SYS_brk)
        // glibc's free returns memory with MADV_DONTNEED, and so does a thread's exit (its stack).
        .allow_if(
            libc::SYS_madvise,
            vec![vec![arg_eq(2, libc::MADV_DONTNEED as u64)]],
        )
        // glibc's malloc sizes its arenas by the CPUs this thread may run on: the affinity, or
        // /sys/devices/system/cpu/online (openat below).
        .allow(libc::SYS_sched_getaffinity)
        // Mutexes, condition variables, channels.
        .allow(libc::SYS_futex)
        .allow(libc::SYS_sched_yield)
        // The clock, where the vDSO cannot answer; sleeping (retry waits).
        .allow(libc::SYS_clock_gettime)
        .allow(libc::SYS_clock_nanosleep)
        .allow(libc::SYS_nanosleep)
        // HashMap's random keys, once per thread.
        .allow(libc::SYS_getrandom)
        // Logging to stderr; each role's own writes (eventfds, TAPs, sockets) too.
        .allow(libc::SYS_write)
        .allow(libc::SYS_gettid)
        .allow(libc::SYS_getpid)
        // Dropping files; in debug builds Rust checks each fd it closes with F_GETFD.
        .allow(libc::SYS_close)
        .fcntls(&[libc::F_GETFD])
        // Read-only opens: for the roles that open nothing (all but the API service), the
        // arena sizing above, refused with EACCES (see `refusals`); the API service opens
        // what its requests name.
        .allow_if(libc::SYS_openat, read_only_open())
        .allow(libc::SYS_read)
        .allow(libc::SYS_statx)
        .allow(libc::SYS_fstat)
        .allow(libc::SYS_lseek)
        // Signal handling (the vCPU kick), blocking signals around thread start and exit.
        .allow(libc::SYS_rt_sigreturn)
        .allow(libc::SYS_rt_sigprocmask)
        // A thread's end: std frees its signal stack, glibc its robust list; the process's end.
        .allow(libc::SYS_sigaltstack)
        .allow(libc::SYS_exit)
        .allow(libc::SYS_exit_group);
}

/// `openat(dirfd, path, flags, mode)` that cannot write or create: the access mode is
/// O_RDONLY and none of O_CREAT, O_TRUNC, O_APPEND is set.
fn read_only_open() -> Vec<Vec<SeccompCondition>> {
    let writes = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64;
    vec![vec![arg_clear(2, Len::Dword, writes)]]
}

/// What a thread that starts threads needs, most of it made by the new thread before it
/// installs a filter of its own.
fn thread_start(r: &mut Rules) {
    // pthread_create: clone with CLONE_THREAD only, never a new process. (clone3 gets ENOSYS
    // from a second filter, so glibc falls back to clone.)
    r.allow_if(
        libc::SYS_clone,
        vec![vec![arg_set(
            0,
            Len::Qword,
            (libc::CLONE_THREAD | libc::CLONE_VM) as u64,
        )]],
    )
    .allow(libc::SYS_clone3)
    // The new thread: glibc registers its robust mutex list and restartable sequences, std
    // names it (PR_SET_NAME only).
    .allow(libc::SYS_set_robust_list)
    .allow(libc::SYS_rseq)
    .allow_if(
        libc::SYS_prctl,
        vec![vec![arg_eq(0, libc::PR_SET_NAME as u64)]],
    );
}

/// A vCPU: `KVM_RUN`, and the port and MMIO accesses it exits for.
fn vcpu(r: &mut Rules) {
    r.ioctls(&[
        // Running the guest.
        ioctls::KVM_RUN(),
        // Describe and Probe (a stalled guest's report, halt detection), internal errors.
        ioctls::KVM_GET_REGS(),
        ioctls::KVM_GET_SREGS(),
        ioctls::KVM_GET_LAPIC(),
        ioctls::KVM_GET_MP_STATE(),
        ioctls::KVM_GET_VCPU_EVENTS(),
        // Saving a paused vCPU for a snapshot: the rest of its state.
        ioctls::KVM_GET_CPUID2(),
        ioctls::KVM_GET_MSRS(),
        ioctls::KVM_GET_XSAVE(),
        ioctls::KVM_GET_XCRS(),
        ioctls::KVM_GET_DEBUGREGS(),
    ]);
    // The serial port writes the guest's output to the console's writer: a buffer (futex, in
    // common), a tee file (write), or a socket a library caller gave (send).
    r.allow(libc::SYS_sendto);
}

/// The VMM's event loop: queues, console input, lifecycle (the devices' backends add theirs:
/// [`device_needs`]).
fn vmm(r: &mut Rules) {
    // The event loop; a paused VM's loop is made when the VM pauses.
    r.allow(libc::SYS_epoll_wait)
        .allow(libc::SYS_epoll_pwait)
        .allow(libc::SYS_epoll_ctl)
        .allow(libc::SYS_epoll_create1)
        .allow(libc::SYS_eventfd2)
        // Console input (read, in common), or recv from a socket a library caller gave.
        .allow(libc::SYS_recvfrom)
        // Kicking vCPU threads (pthread_kill) to pause, resume, describe or probe them.
        .allow(libc::SYS_tgkill)
        // Describing the VM and pressing the power button read the IOAPIC's pins.
        // A snapshot of a paused VM reads the interrupt controllers (KVM_GET_IRQCHIP again),
        // the PIT and the KVM clock.
        .ioctls(&[
            ioctls::KVM_GET_IRQCHIP(),
            ioctls::KVM_GET_PIT2(),
            ioctls::KVM_GET_CLOCK(),
        ])
        // Copies of eventfds for the paused VM's loop.
        .fcntls(&[libc::F_DUPFD_CLOEXEC])
        // A device's rate limiter arms its timer when a request must wait.
        .allow(libc::SYS_timerfd_settime);
}

/// Writing the guest's console output to stdout.
fn console(r: &mut Rules) {
    // Waiting for output (futex) and writing it (write), in common; send if stdout is a socket.
    r.allow(libc::SYS_sendto);
}

/// The control socket: accepting connections, reading requests, writing answers.
fn api(r: &mut Rules) {
    r.allow(libc::SYS_accept4)
        .allow(libc::SYS_recvfrom)
        .allow(libc::SYS_sendto)
        // Read and write timeouts on a connection.
        .allow_if(
            libc::SYS_setsockopt,
            vec![
                vec![
                    arg_eq(1, libc::SOL_SOCKET as u64),
                    arg_eq(2, libc::SO_RCVTIMEO as u64),
                ],
                vec![
                    arg_eq(1, libc::SOL_SOCKET as u64),
                    arg_eq(2, libc::SO_SNDTIMEO as u64),
                ],
            ],
        )
        .allow(libc::SYS_shutdown);
}

/// Driving a running VM: the control socket's requests, the CLI's main thread.
fn api_service(r: &mut Rules) {
    // Swapping a drive's image (PATCH /drives) opens it for writing and locks it: Landlock, not
    // this filter, decides which files.
    r.allow(libc::SYS_openat)
        .allow(libc::SYS_flock)
        .fcntls(&[libc::F_GETFL, libc::F_SETFL, libc::F_DUPFD_CLOEXEC])
        // Pausing, resuming and describing kick the vCPU threads; so does stopping them.
        .allow(libc::SYS_tgkill)
        // New rate limits (PATCH /drives) re-arm a waiting device's timer.
        .allow(libc::SYS_timerfd_settime)
        // A live snapshot flushes the drive's image before the store snapshots it; a VM
        // snapshot syncs its files.
        .allow(libc::SYS_fdatasync)
        .allow(libc::SYS_fsync)
        // A VM snapshot sizes its memory file and writes its pages where they are, leaving
        // holes for pages of zeros.
        .allow(libc::SYS_ftruncate)
        .allow(libc::SYS_pwrite64)
        // ... each into a file of its own beside the one it replaces, renamed over it once
        // whole: a VM restored from the old files may have them mapped.
        .allow(libc::SYS_rename)
        // A checkpoint makes its directory in the store's checkpoints directory.
        .allow(libc::SYS_mkdir)
        // The storage helper: requests over its socket pair, and reaping it at the end.
        .allow(libc::SYS_recvfrom)
        .allow(libc::SYS_sendto)
        .allow(libc::SYS_shutdown)
        .allow(libc::SYS_wait4)
        // Removing the control socket at exit.
        .allow(libc::SYS_unlink)
        .allow(libc::SYS_unlinkat)
        // The CLI restores the terminal it put in raw mode (tcgetattr, tcsetattr).
        .ioctls(&[libc::TCGETS, libc::TCSETS]);
}

/// Waiting for SIGTERM, SIGINT, SIGHUP and SIGUSR1, and passing them on.
fn signals(r: &mut Rules) {
    // sigwait; a stop writes an eventfd, SIGUSR1's report waits on the controller's channel
    // (both in common).
    r.allow(libc::SYS_rt_sigtimedwait);
}
