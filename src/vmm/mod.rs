//! Building, starting and ending a VM.
//!
//! A VM is built in four steps ([`Vm::new`], in `build.rs`): **create** the machine (KVM VM,
//! guest memory, irqchip, vCPUs), **attach** its devices (the device manager assigns their
//! slots, ports and interrupts), **describe** it to the guest from what was attached (the
//! command line's virtio-mmio entries, the MP table), then **boot** a kernel into it. Every step
//! that can fail because of the configuration happens there. [`Vm::start`]
//! (`controller.rs`) only starts threads: one per vCPU, and the controller thread with the
//! event loop, which runs until the guest ends and reports an [`ExitReason`]. A [`VmHandle`]
//! (`handle.rs`) pauses, resumes, describes, shuts down and stops the VM and reads its
//! counters.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fennec_boot::loader::LoaderError;
use fennec_boot::x86_64::acpi::AcpiError;
use fennec_boot::x86_64::bootparams::BootParamsError;
use fennec_boot::x86_64::mptable::MptableError;

use crate::config::ConfigError;
use crate::device_manager::DeviceError;
use crate::vstate::kvm::KvmError;
use crate::vstate::memory::MemoryError;
use crate::vstate::vcpu::VcpuError;
use crate::vstate::vm::VmError;

mod build;
mod controller;
mod handle;
mod restore;

pub use build::Vm;
pub use handle::{Stopper, VmHandle, VmMetrics, VmState};

/// Why a guest stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine (i8042 reset, triple fault): Linux's `reboot`.
    Reset,
    /// The guest powered the machine off.
    PowerOff,
    /// The guest's kernel said it panicked (through the pvpanic device, which ACPI describes):
    /// the VM ends there, before `panic=N` would reset it.
    Panicked,
    /// Every vCPU halted with interrupts disabled: the guest can never run again.
    Halted,
    /// The host stopped the VM.
    Stopped,
    /// A vCPU failed.
    VcpuFailed {
        /// Which vCPU.
        index: u8,
        /// What happened.
        message: String,
    },
}

impl ExitReason {
    /// Whether the guest ended the way a guest should: reset, power-off, or stopped by the host.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::Reset | ExitReason::PowerOff | ExitReason::Stopped
        )
    }
}

impl ExitReason {
    /// A stable one-word name: `reset`, `power_off`, `panicked`, `halted`, `stopped`,
    /// `vcpu_failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::Reset => "reset",
            ExitReason::PowerOff => "power_off",
            ExitReason::Panicked => "panicked",
            ExitReason::Halted => "halted",
            ExitReason::Stopped => "stopped",
            ExitReason::VcpuFailed { .. } => "vcpu_failed",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reset => write!(
                f,
                "the guest reset (a reboot, a triple fault, or a kernel panic under panic=N)"
            ),
            ExitReason::PowerOff => write!(f, "the guest powered off"),
            ExitReason::Panicked => write!(f, "the guest's kernel panicked"),
            ExitReason::Halted => write!(
                f,
                "the guest halted with interrupts disabled on every vCPU and can never run again"
            ),
            ExitReason::Stopped => write!(f, "stopped by the host"),
            ExitReason::VcpuFailed { index, message } => {
                write!(f, "vCPU {index} failed: {message}")
            }
        }
    }
}

/// Errors building or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("Invalid configuration")]
    Config(#[from] ConfigError),
    /// KVM is unusable.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// More vCPUs than KVM allows.
    #[error("{wanted} vCPUs asked for, but KVM allows at most {max}")]
    TooManyVcpus {
        /// vCPUs configured.
        wanted: u8,
        /// KVM's limit.
        max: usize,
    },
    /// A file could not be opened.
    #[error("Cannot open {what} {path}")]
    Open {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel or initrd path names something other than a file (a FIFO, a device, a
    /// directory).
    #[error("The {what} {path} is {kind}, not a regular file")]
    NotAFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Guest memory could not be mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Boot parameters could not be written.
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
    /// The MP table could not be written.
    #[error(transparent)]
    Mptable(#[from] MptableError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// Boot page tables or GDT could not be written.
    #[error("Failed to write the boot page tables and GDT")]
    BootTables(#[source] vm_memory::GuestMemoryError),
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A vCPU could not be created or configured.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A device could not be set up.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A thread, or an eventfd the threads share, could not be made.
    #[error("Failed to start the VM: cannot create the {what}")]
    Start {
        /// What could not be made.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files the running VM may open could not be restricted.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// A thread's syscall filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The stop request could not be sent.
    #[error("Failed to ask the VM to stop")]
    Stop(#[source] std::io::Error),
    /// The controller thread panicked.
    #[error("The VMM controller thread panicked")]
    ControllerPanicked,
    /// The VM has exited, so it cannot do what was asked.
    #[error("The VM is not running")]
    NotRunning,
    /// The vCPUs did not park in time; the VM runs on.
    #[error("The vCPUs did not stop within {} s; the VM runs on", .0.as_secs())]
    PauseTimeout(std::time::Duration),
    /// The guest cannot be asked through its ACPI power button.
    #[error("No ACPI power button: {0}")]
    NoPowerButton(&'static str),
    /// The power button's interrupt could not be raised.
    #[error("Cannot raise the ACPI power button's interrupt")]
    PowerButton(#[source] std::io::Error),
    /// The keyboard interrupt of a Ctrl-Alt-Del could not be raised.
    #[error("Cannot raise the keyboard interrupt")]
    CtrlAltDel(#[source] std::io::Error),
    /// A drive's completed writes could not be made durable.
    #[error("Cannot flush drive {id:?}")]
    Flush {
        /// The drive.
        id: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No drive has the given ID.
    #[error("No drive has the ID {0:?}")]
    NoSuchDrive(String),
    /// No network interface has this ID.
    #[error("No network interface has the ID {0:?}")]
    NoSuchNet(String),
    /// A snapshot could not be taken, read or loaded.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// A snapshot's state could not be read from the paused VM.
    #[error("Cannot snapshot the VM: {0}")]
    SnapshotState(String),
    /// A snapshot was asked of a running VM.
    #[error("Cannot snapshot the VM: it is running; pause it first (PATCH /vm Paused)")]
    NotPaused,
}

/// Opens the kernel or initrd at `path`, which must be a regular file, naming it in the error.
/// The open does not block (a FIFO would wait for a writer, and the control socket with it),
/// and the check is on what was opened, not on the path. Reads of a regular file never block,
/// so the descriptor keeps `O_NONBLOCK`.
pub(crate) fn open(what: &'static str, path: &Path) -> Result<File, Error> {
    let open_error = |source| Error::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(open_error)?;
    let file_type = file.metadata().map_err(open_error)?.file_type();
    if !file_type.is_file() {
        return Err(Error::NotAFile {
            what,
            path: path.to_path_buf(),
            kind: fennec_devices::virtio::block::disk::file_kind(file_type),
        });
    }
    Ok(file)
}

/// Logs a device's non-zero counters on one line.
pub(crate) fn log_metrics(kind: &str, id: &str, metrics: &impl serde::Serialize) {
    let counters = match serde_json::to_value(metrics) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return,
    };
    let m: Vec<String> = counters
        .iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    log::info!("{kind} {id:?}: {}", m.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_reason_clean_only_for_reset_poweroff_stop() {
        assert!(ExitReason::Reset.is_clean());
        assert!(ExitReason::Stopped.is_clean());
        assert!(!ExitReason::Halted.is_clean());
    }
}
