//! Why a VM could not be built, started or driven.

use std::path::PathBuf;

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
    #[error("Cannot snapshot the VM")]
    SnapshotState(#[from] SaveStateError),
    /// A snapshot was asked of a running VM.
    #[error("Cannot snapshot the VM: it is running; pause it first (PATCH /vm Paused)")]
    NotPaused,
}

/// Why the paused VM's state could not be read for a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SaveStateError {
    /// The host's vCPUs keep more extended state than a snapshot holds.
    #[error("this host's vCPUs have an XSAVE area larger than the {0} bytes a snapshot holds")]
    XsaveTooLarge(usize),
    /// A vCPU's state could not be read.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// KVM refused to give the interrupt controllers, the PIT or the clock.
    #[error("KVM refused the VM's state")]
    Kvm(#[source] kvm_ioctls::Error),
    /// A device's state could not be read.
    #[error(transparent)]
    Devices(#[from] crate::device_manager::PersistError),
    /// The controller's answer was not a state.
    #[error("the VM's controller gave no state")]
    NoState,
}
