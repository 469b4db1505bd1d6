//! vCPUs: their boot-time configuration ([`Vcpu`]), the thread that runs each one as a state
//! machine driven by commands ([`run`]), and how the VMM tells an idle vCPU from a busy one
//! without waking it ([`idle`]).
//!
//! A vCPU thread leaves `KVM_RUN` for port and MMIO accesses (forwarded to the buses), for
//! guest resets and failures (reported through [`run::ExitSignal`]), and when the VMM kicks it
//! ([`KICK_SIGNAL_OFFSET`]) to hand it a command: pause, resume, describe or probe itself, stop.
//! A paused vCPU waits for its next command, so it can still answer while parked.

use kvm_bindings::{
    KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;

use fennec_boot::x86_64::{cpuid, regs};

use super::vm::KvmVm;
use crate::vstate::exit::ExitReason;

pub mod idle;
pub mod run;
pub mod state;

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
    /// A running vCPU's state was asked for (a snapshot needs the VM paused).
    #[error("vCPU {0} is running")]
    Running(u8),
    /// A vCPU's saved state was asked for twice.
    #[error("vCPU {0}'s state was taken already")]
    StateTaken(u8),
    /// A vCPU did not answer in time.
    #[error("vCPU {0} did not answer")]
    NoAnswer(u8),
}

/// Where a vCPU stands, as a probe found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbedState {
    /// Running, or halted waiting for an interrupt.
    Running,
    /// Halted with interrupts disabled: only an NMI or INIT wakes it, and fennec sends neither.
    HaltedIrqsOff,
    /// An application processor the guest never started.
    NotStarted,
}

/// One vCPU.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    /// The MSRs KVM lets a VMM save (`KVM_GET_MSR_INDEX_LIST`), for snapshots.
    msr_list: std::sync::Arc<[u32]>,
}

impl Vcpu {
    /// Creates vCPU `index` (its APIC ID) in `vm`; `msr_list` is what a snapshot saves of its
    /// MSRs.
    pub fn new(vm: &KvmVm, index: u8, msr_list: std::sync::Arc<[u32]>) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(index.into())
            .map_err(|source| VcpuError::Create { index, source })?;
        Ok(Vcpu {
            index,
            fd,
            msr_list,
        })
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

        self.put_msrs(&regs::boot_msrs())?;

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

    /// The vCPU's file descriptor, for its run loop.
    pub(super) fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Describes a `KVM_EXIT_INTERNAL_ERROR` that `run` just returned.
    pub(super) fn internal_error(&mut self) -> ExitReason {
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

    /// Whether the vCPU can run again: halted with interrupts off, or never started, or not.
    pub fn probe(&self) -> ProbedState {
        match self.fd.get_mp_state().map(|s| s.mp_state) {
            Ok(KVM_MP_STATE_HALTED) => match self.fd.get_regs() {
                Ok(r) if r.rflags & RFLAGS_IF == 0 => ProbedState::HaltedIrqsOff,
                _ => ProbedState::Running,
            },
            Ok(KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED) => ProbedState::NotStarted,
            _ => ProbedState::Running,
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
