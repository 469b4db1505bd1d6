//! vCPUs: boot-time configuration and the `KVM_RUN` loop, one thread each.
//!
//! A vCPU leaves `KVM_RUN` for port and MMIO accesses (forwarded to the buses), for guest resets
//! and failures (reported through [`ExitSignal`]), and when the VMM kicks it with
//! [`KICK_SIGNAL_OFFSET`]. A kick either stops the vCPU or makes it record whether it is stuck
//! (halted with interrupts off, or never started), which is how fennec notices a guest that will
//! never run again. A kick while a pause is requested parks the vCPU on the [`PauseGate`] until
//! the VMM resumes or stops it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_run, Msrs, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use fennec_boot::x86_64::{cpuid, regs};
use fennec_devices::bus::Bus;

use super::vm::KvmVm;
use crate::ExitReason;

/// Real-time signal (offset from `SIGRTMIN`) used to kick vCPUs out of `KVM_RUN`.
pub const KICK_SIGNAL_OFFSET: i32 = 0;

const RFLAGS_IF: u64 = 1 << 9;

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("Failed to create vCPU {index}")]
    Create {
        /// vCPU index.
        index: u8,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// One of the KVM_SET_* calls at boot failed.
    #[error("Failed to set the {what} of vCPU {index}")]
    Configure {
        /// Which state.
        what: &'static str,
        /// vCPU index.
        index: u8,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM took fewer MSRs than asked.
    #[error("KVM accepted {set} of {wanted} boot MSRs on vCPU {index}")]
    Msrs {
        /// vCPU index.
        index: u8,
        /// MSRs accepted.
        set: usize,
        /// MSRs asked for.
        wanted: usize,
    },
    /// The kick signal handler could not be installed.
    #[error("Failed to install the vCPU kick signal handler")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
}

/// Where a vCPU stands, as last probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ProbedState {
    /// Running, or halted waiting for an interrupt.
    Running = 0,
    /// Halted with interrupts disabled: only an NMI or INIT wakes it, and fennec sends neither.
    HaltedIrqsOff = 1,
    /// An application processor the guest never started.
    NotStarted = 2,
}

/// Counts of a vCPU's exits from `KVM_RUN`, by kind.
#[derive(Debug, Default, serde::Serialize)]
pub struct VcpuExits {
    /// Port reads.
    pub io_in: AtomicU64,
    /// Port writes.
    pub io_out: AtomicU64,
    /// MMIO reads.
    pub mmio_read: AtomicU64,
    /// MMIO writes.
    pub mmio_write: AtomicU64,
    /// Kicks by the VMM (probes, pauses, stops).
    pub kicked: AtomicU64,
    /// Every other exit.
    pub other: AtomicU64,
}

/// State a vCPU thread shares with the VMM.
#[derive(Debug, Default)]
pub struct VcpuShared {
    probed: AtomicU8,
    /// Exit counters.
    pub exits: VcpuExits,
    /// Set by the VMM before a kick that asks for a [`Vcpu::describe`] report.
    report_wanted: AtomicBool,
    report: Mutex<Option<String>>,
    report_ready: Condvar,
}

impl VcpuShared {
    /// Asks the vCPU for a report of its registers and interrupt state at its next kick; the
    /// caller then kicks it and collects the report with [`VcpuShared::take_report`].
    pub fn want_report(&self) {
        *fennec_devices::lock(&self.report) = None;
        self.report_wanted.store(true, Ordering::SeqCst);
    }

    /// Waits up to `timeout` for the report asked for by [`VcpuShared::want_report`]. `None`
    /// when the vCPU did not answer: it is parked, finished, or busy outside `KVM_RUN` (in a
    /// device access, say).
    pub fn take_report(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut report = fennec_devices::lock(&self.report);
        loop {
            if let Some(text) = report.take() {
                return Some(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.report_wanted.store(false, Ordering::SeqCst);
                return None;
            }
            report = self
                .report_ready
                .wait_timeout(report, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn deliver_report(&self, text: String) {
        *fennec_devices::lock(&self.report) = Some(text);
        self.report_ready.notify_all();
    }

    /// The state recorded at the last kick.
    pub fn probed(&self) -> ProbedState {
        match self.probed.load(Ordering::Acquire) {
            1 => ProbedState::HaltedIrqsOff,
            2 => ProbedState::NotStarted,
            _ => ProbedState::Running,
        }
    }
}

/// How vCPU threads report the end of the guest: the first reason wins, then `evt` fires.
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    /// A signal firing `evt`.
    pub fn new(evt: EventFd) -> Self {
        ExitSignal {
            reason: Mutex::new(None),
            evt,
        }
    }

    /// Records `reason` unless one is recorded already, and wakes the VMM.
    pub fn report(&self, reason: ExitReason) {
        fennec_devices::lock(&self.reason).get_or_insert(reason);
        if let Err(e) = self.evt.write(1) {
            log::error!("Failed to signal the end of the guest: {e}");
        }
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        fennec_devices::lock(&self.reason).clone()
    }
}

/// Where vCPUs wait while the VM is paused.
#[derive(Debug, Default)]
pub struct PauseGate {
    /// Mirrors `state.paused` so the run loop checks it without the lock.
    requested: AtomicBool,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    paused: bool,
    stopping: bool,
    parked: usize,
}

impl PauseGate {
    /// Asks vCPUs to park at their next exit; the caller then kicks them.
    pub fn close(&self) {
        let mut state = fennec_devices::lock(&self.state);
        state.paused = true;
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Lets parked vCPUs run again.
    pub fn open(&self) {
        let mut state = fennec_devices::lock(&self.state);
        state.paused = false;
        self.requested.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Releases parked vCPUs for good: the VM is stopping. Set `RunContext::stop` first.
    pub fn release_for_stop(&self) {
        let mut state = fennec_devices::lock(&self.state);
        state.stopping = true;
        self.changed.notify_all();
    }

    /// Waits until `count` vCPUs are parked, or `timeout` passes; true if they are.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = fennec_devices::lock(&self.state);
        while state.parked < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Parks the calling vCPU while a pause is requested.
    fn park_if_paused(&self) {
        if !self.requested.load(Ordering::SeqCst) {
            return;
        }
        let mut state = fennec_devices::lock(&self.state);
        if !state.paused || state.stopping {
            return;
        }
        state.parked += 1;
        self.changed.notify_all();
        while state.paused && !state.stopping {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.parked -= 1;
        self.changed.notify_all();
    }
}

/// What a running vCPU needs.
pub struct RunContext {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Set by the VMM before it kicks vCPUs to stop them.
    pub stop: Arc<AtomicBool>,
    /// Where the vCPU reports resets and failures.
    pub exit: Arc<ExitSignal>,
    /// The vCPU's probed state and counters.
    pub shared: Arc<VcpuShared>,
    /// Where the vCPU parks while the VM is paused.
    pub gate: Arc<PauseGate>,
}

thread_local! {
    /// The running vCPU's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: a non-null KVM_RUN is this thread's vCPU `kvm_run` mapping, set by `Vcpu::run`
        // and cleared before the VcpuFd owning the mapping is dropped; the signal runs on this
        // same thread, so the mapping is live. A volatile byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the kick handler (once per process).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let signum = kick_signal();
    INSTALLED
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(signum, handle_kick)
                .map_err(|e| e.errno())
        })
        .map_err(|errno| VcpuError::SignalHandler(vmm_sys_util::errno::Error::new(errno)))
}

/// One vCPU.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates vCPU `index` (its APIC ID) in `vm`.
    pub fn new(vm: &KvmVm, index: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(index.into())
            .map_err(|source| VcpuError::Create { index, source })?;
        Ok(Vcpu { index, fd })
    }

    fn set<T>(&self, what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, VcpuError> {
        r.map_err(|source| VcpuError::Configure {
            what,
            index: self.index,
            source,
        })
    }

    /// Sets CPUID, MSRs and the LAPIC; on the boot vCPU (`entry` given) also the registers for
    /// the boot protocol.
    pub fn configure(
        &self,
        supported_cpuid: &kvm_bindings::CpuId,
        count: u8,
        entry: Option<(regs::EntryMode, u64)>,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported_cpuid.clone();
        cpuid::filter(cpuid.as_mut_slice(), self.index, count);
        self.set("CPUID", self.fd.set_cpuid2(&cpuid))?;

        let entries = regs::boot_msrs();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::Msrs {
            index: self.index,
            set: 0,
            wanted: entries.len(),
        })?;
        let set = self.set("MSRs", self.fd.set_msrs(&msrs))?;
        if set != entries.len() {
            return Err(VcpuError::Msrs {
                index: self.index,
                set,
                wanted: entries.len(),
            });
        }

        let mut lapic = self.set("LAPIC", self.fd.get_lapic())?;
        regs::configure_lint(&mut lapic);
        self.set("LAPIC", self.fd.set_lapic(&lapic))?;

        if let Some((mode, entry)) = entry {
            self.set("registers", self.fd.set_regs(&regs::boot_regs(mode, entry)))?;
            let mut sregs = self.set("special registers", self.fd.get_sregs())?;
            regs::configure_sregs(&mut sregs, mode);
            self.set("special registers", self.fd.set_sregs(&sregs))?;
            self.set("FPU", self.fd.set_fpu(&regs::boot_fpu()))?;
        }
        Ok(())
    }

    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Runs the guest until it resets, fails, or the VMM stops it.
    pub fn run(mut self, ctx: RunContext) {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run_ptr));
        while !ctx.stop.load(Ordering::SeqCst) {
            ctx.gate.park_if_paused();
            if ctx.stop.load(Ordering::SeqCst) {
                break;
            }
            let outcome = match self.fd.run() {
                Ok(VcpuExit::InternalError) => Some(self.internal_error()),
                Ok(exit) => handle_exit(self.index, exit, &ctx),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    ctx.shared.exits.kicked.fetch_add(1, Ordering::Relaxed);
                    if !ctx.stop.load(Ordering::SeqCst) {
                        self.probe(&ctx.shared);
                    }
                    if ctx.shared.report_wanted.swap(false, Ordering::SeqCst) {
                        ctx.shared.deliver_report(self.describe());
                    }
                    None
                }
                Err(e) => Some(ExitReason::VcpuFailed {
                    index: self.index,
                    message: format!("KVM_RUN failed: {e}"),
                }),
            };
            if let Some(reason) = outcome {
                ctx.exit.report(reason);
                break;
            }
        }
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    }

    /// Describes a `KVM_EXIT_INTERNAL_ERROR` that `run` just returned.
    fn internal_error(&mut self) -> ExitReason {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or_default();
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit KVM_RUN just returned is KVM_EXIT_INTERNAL_ERROR, for which KVM fills
        // the `internal` member of the exit union; it is plain data, read by value.
        let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
        let what = match suberror {
            1 => "instruction emulation failed",
            2 => "simultaneous exceptions",
            3 => "event delivery failed",
            _ => "unknown",
        };
        ExitReason::VcpuFailed {
            index: self.index,
            message: format!("KVM internal error {suberror} ({what}) at rip {rip:#x}"),
        }
    }

    /// One line on where the vCPU stands: its run state, instruction pointer and flags, and
    /// the interrupts its local APIC holds (in service, requested) and KVM has pending. What a
    /// stalled guest needs to be understood.
    pub fn describe(&self) -> String {
        let mut line = format!("vCPU {}:", self.index);
        match self.fd.get_mp_state() {
            Ok(mp) => line += &format!(" {}", mp_state_name(mp.mp_state)),
            Err(e) => line += &format!(" mp_state unreadable ({e})"),
        }
        if let Ok(r) = self.fd.get_regs() {
            let irqs = if r.rflags & RFLAGS_IF != 0 {
                "on"
            } else {
                "off"
            };
            line += &format!(
                " rip={:#x} rsp={:#x} rflags={:#x} (interrupts {irqs})",
                r.rip, r.rsp, r.rflags
            );
        }
        if let Ok(lapic) = self.fd.get_lapic() {
            line += &format!(" | {}", regs::describe_lapic(&lapic));
        }
        if let Ok(ev) = self.fd.get_vcpu_events() {
            if ev.interrupt.injected != 0 {
                line += &format!(" | injecting vector {:#x}", ev.interrupt.nr);
            }
            if ev.exception.injected != 0 || ev.exception.pending != 0 {
                line += &format!(" | exception {} pending", ev.exception.nr);
            }
            if ev.nmi.pending != 0 || ev.nmi.injected != 0 {
                line += " | NMI pending";
            }
        }
        line
    }

    fn probe(&self, shared: &VcpuShared) {
        if log::log_enabled!(log::Level::Trace) {
            if let (Ok(mp), Ok(r)) = (self.fd.get_mp_state(), self.fd.get_regs()) {
                log::trace!(
                    "vCPU {}: mp_state {} rip {:#x} rflags {:#x}",
                    self.index,
                    mp.mp_state,
                    r.rip,
                    r.rflags
                );
            }
        }
        let state = match self.fd.get_mp_state().map(|s| s.mp_state) {
            Ok(KVM_MP_STATE_HALTED) => match self.fd.get_regs() {
                Ok(r) if r.rflags & RFLAGS_IF == 0 => ProbedState::HaltedIrqsOff,
                _ => ProbedState::Running,
            },
            Ok(KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED) => ProbedState::NotStarted,
            _ => ProbedState::Running,
        };
        shared.probed.store(state as u8, Ordering::Release);
    }
}

/// KVM's name for a vCPU run state.
fn mp_state_name(state: u32) -> String {
    match state {
        KVM_MP_STATE_RUNNABLE => "runnable".into(),
        KVM_MP_STATE_UNINITIALIZED => "uninitialized".into(),
        KVM_MP_STATE_INIT_RECEIVED => "init-received".into(),
        KVM_MP_STATE_HALTED => "halted".into(),
        KVM_MP_STATE_SIPI_RECEIVED => "sipi-received".into(),
        other => format!("mp_state {other}"),
    }
}

/// Handles one `KVM_RUN` exit; `Some` ends the guest.
fn handle_exit(index: u8, exit: VcpuExit<'_>, ctx: &RunContext) -> Option<ExitReason> {
    let exits = &ctx.shared.exits;
    let counter = match exit {
        VcpuExit::IoIn(..) => &exits.io_in,
        VcpuExit::IoOut(..) => &exits.io_out,
        VcpuExit::MmioRead(..) => &exits.mmio_read,
        VcpuExit::MmioWrite(..) => &exits.mmio_write,
        _ => &exits.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio.read(port.into(), data) {
                data.fill(0xff);
                log::debug!("vCPU {index}: read from unhandled port {port:#x}");
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            if !ctx.pio.write(port.into(), data) {
                log::debug!("vCPU {index}: write to unhandled port {port:#x}");
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                data.fill(0xff);
                log::debug!("vCPU {index}: read from unhandled MMIO {addr:#x}");
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio.write(addr, data) {
                log::debug!("vCPU {index}: write to unhandled MMIO {addr:#x}");
            }
            None
        }
        // A triple fault: how Linux's `reboot=t` and any CPU reset end up here.
        VcpuExit::Shutdown => Some(ExitReason::Reset),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET => Some(ExitReason::Reset),
            KVM_SYSTEM_EVENT_SHUTDOWN => Some(ExitReason::PowerOff),
            KVM_SYSTEM_EVENT_CRASH => Some(ExitReason::VcpuFailed {
                index,
                message: "the guest reported a crash".into(),
            }),
            other => {
                log::debug!("vCPU {index}: ignoring system event {other}");
                None
            }
        },
        VcpuExit::Hlt => Some(ExitReason::Halted),
        VcpuExit::FailEntry(reason, cpu) => Some(ExitReason::VcpuFailed {
            index,
            message: format!(
                "KVM could not enter the guest (hardware reason {reason:#x} on CPU {cpu})"
            ),
        }),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => None,
        // Anything else would come back on every re-entry: end the guest rather than spin.
        other => Some(ExitReason::VcpuFailed {
            index,
            message: format!("unexpected KVM exit {other:?}"),
        }),
    }
}
