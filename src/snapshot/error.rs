//! Why a snapshot could not be taken, read or loaded.

/// Why a snapshot could not be taken, read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a snapshot, or one cut short.
    #[error("{path} is not a fennec snapshot state file ({why})")]
    NotASnapshot {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A state file someone other than fennec's uid or root could have written.
    #[error(
        "{path} {why}: a state file names the host files and TAPs its VM opens, so fennec \
         restores only one its own uid or root wrote and no one else may write (chown and \
         chmod go-w it, if its writer is trusted)"
    )]
    Untrusted {
        /// The file.
        path: String,
        /// Who could have written it.
        why: String,
    },
    /// Another format version.
    #[error("{path} is a snapshot of format version {found}; this fennec reads version {reads}")]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: u32,
        /// The version this fennec reads.
        reads: u32,
    },
    /// The payload does not match its checksum.
    #[error("{path} is corrupted: its checksum does not match")]
    Checksum {
        /// The file.
        path: String,
    },
    /// The payload does not parse.
    #[error("{path}: the snapshot's state does not parse: {why}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The memory file does not fit the state.
    #[error("{path}: {why}")]
    Memory {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The state's configuration is not one fennec builds.
    #[error("the snapshot's configuration cannot be built")]
    Config(#[source] crate::config::ConfigError),
    /// Another number of vCPU states than vCPUs, or not in order.
    #[error("the snapshot has {states} vCPU states for {vcpus} vCPUs")]
    VcpuStates {
        /// States in the file.
        states: usize,
        /// vCPUs in its configuration.
        vcpus: usize,
    },
    /// Not the two PICs and the IOAPIC.
    #[error("the snapshot has {0} interrupt controllers where a VM has 3")]
    Irqchips(usize),
    /// The memory regions do not match the memory size.
    #[error("the snapshot's memory regions do not match its memory size")]
    MemoryLayout,
    /// The host keeps more extended vCPU state than a snapshot holds.
    #[error("this host's vCPUs have a {host}-byte XSAVE area; snapshots hold {held}")]
    XsaveArea {
        /// This host's.
        host: usize,
        /// A snapshot's.
        held: usize,
    },
    /// The devices' state does not fit the VM's devices.
    #[error("the snapshot's devices do not fit the VM")]
    Devices(#[source] crate::device_manager::PersistError),
    /// KVM refused the interrupt controllers, the PIT or the clock.
    #[error("KVM refused the snapshot's VM state")]
    KvmState(#[source] kvm_ioctls::Error),
    /// A vCPU's state could not be put back.
    #[error("KVM refused a vCPU's state")]
    Vcpu(#[source] crate::vstate::vcpu::VcpuError),
    /// A checkpoint of that name exists already.
    #[error("checkpoint {name:?} exists ({dir})")]
    CheckpointExists {
        /// Its name.
        name: String,
        /// Its directory.
        dir: String,
    },
    /// A checkpoint's name, store or disks could not be used.
    #[error("checkpoint {name:?}")]
    Store {
        /// The checkpoint.
        name: String,
        /// Why.
        #[source]
        source: crate::storage::StorageError,
    },
    /// A drive's store snapshot failed (in the storage helper, which answers in words).
    #[error("checkpoint: drive {id:?}: {why}")]
    DriveSnapshot {
        /// The drive.
        id: String,
        /// The helper's answer.
        why: String,
    },
    /// A checkpoint's manifest does not parse.
    #[error("{path}: not a checkpoint manifest: {why}")]
    Manifest {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// A checkpoint names a drive its VM does not have.
    #[error("the checkpoint's VM has no drive {0:?}")]
    NoSuchDrive(String),
}
