//! What the guest-facing threads may open once the VM is built (Landlock).
//!
//! The threat model: a guest that breaks out of its device emulation runs in a vCPU thread or
//! the VMM's event loop. Those threads, and only those, are confined: they are started by a
//! short-lived launcher thread that restricts itself first, so they inherit its Landlock
//! domain, and they can open nothing but the files their devices name
//! ([`crate::config::VirtioDeviceConfig::files`]). Every backend they use (images, TAPs, the
//! console) was opened before. The threads that act for the operator (the control socket's
//! service and its action thread, the CLI's main thread) are not in that domain: what the
//! operator's API requests name (a snapshot's files, a metrics or log file, a drive's new
//! image) opens wherever the operator says, as Firecracker's does. They run under their own
//! syscall filter ([`crate::seccomp`]), and no guest can send them a request.
//!
//! Threads share their process's memory, so this confines a compromised thread's system calls,
//! not everything it can reach: a jail (`fennec jail`, or fennec as Firecracker's `jailer`)
//! confines the whole process (its own root, an unprivileged uid, namespaces, cgroups), and is
//! how a VM should run where its guest is not trusted. Where the kernel has no Landlock
//! (before 5.13, or not enabled at boot), fennec runs without it and says so at `-v`.

use std::path::{Path, PathBuf};

use ::landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};

use crate::config::{FileUse, VmConfig};

/// The newest Landlock ABI fennec knows the rights of; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V3;

/// The files a running VM's guest-facing threads may still open.
#[derive(Clone, Debug, Default)]
pub struct FileAccess {
    /// Files opened read-only.
    pub read: Vec<PathBuf>,
    /// Files opened read-write.
    pub read_write: Vec<PathBuf>,
    /// Directories beneath which anything may be made, read and written.
    pub dirs: Vec<PathBuf>,
}

impl FileAccess {
    /// What `config`'s VM (built, its template drives provisioned) needs for its devices
    /// ([`crate::config::VirtioDeviceConfig::files`]).
    pub fn for_vm(config: &VmConfig) -> Self {
        let mut access = FileAccess::default();
        for file in config.device_files() {
            match file {
                FileUse::Read(path) => access.read.push(path),
                FileUse::ReadWrite(path) => access.read_write.push(path),
                FileUse::Beneath(dir) => access.dirs.push(dir),
            }
        }
        access
    }
}

/// How far the restriction went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforced {
    /// Every right fennec asked for is enforced.
    Fully,
    /// The kernel's Landlock is older: some rights are not enforced (for example truncation
    /// before ABI 3).
    Partially,
    /// The kernel has no Landlock.
    Not,
}

/// Why the restriction could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A path of the rules cannot be opened.
    #[error("cannot give the running VM access to {path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: ::landlock::PathFdError,
    },
    /// Landlock refused the rules.
    #[error("cannot restrict the files the VM may open (Landlock): {0}")]
    Ruleset(#[from] ::landlock::RulesetError),
}

/// Restricts the calling thread, and the threads it starts from now on, to `access`.
pub fn restrict_thread(access: &FileAccess) -> Result<Enforced, SandboxError> {
    let all = AccessFs::from_all(ABI_WANTED);
    let read_file = AccessFs::from_read(ABI_WANTED) & AccessFs::from_file(ABI_WANTED);
    let write_file = AccessFs::WriteFile | AccessFs::Truncate;
    let rule = |path: &Path, rights| -> Result<PathBeneath<PathFd>, SandboxError> {
        let fd = PathFd::new(path).map_err(|source| SandboxError::Path {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PathBeneath::new(fd, rights))
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .create()?;
    for path in &access.read {
        ruleset = ruleset.add_rule(rule(path, read_file)?)?;
    }
    for path in &access.read_write {
        ruleset = ruleset.add_rule(rule(path, read_file | write_file)?)?;
    }
    for path in &access.dirs {
        ruleset = ruleset.add_rule(rule(path, all)?)?;
    }
    let status = ruleset.restrict_self()?;
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Not,
    };
    match enforced {
        Enforced::Fully => log::info!(
            "Landlock: the vCPU and VMM threads may open only the {} files of their devices",
            access.read.len() + access.read_write.len() + access.dirs.len()
        ),
        Enforced::Partially => log::info!(
            "Landlock: enforced as far as this kernel's Landlock goes (some rights of ABI {} \
             are not)",
            ABI_WANTED as i32
        ),
        Enforced::Not => log::info!(
            "Landlock is not available in this kernel: the guest-facing threads' files are not \
             restricted"
        ),
    }
    Ok(enforced)
}

/// With `FENNEC_LANDLOCK_SELFTEST=PATH`, the calling thread (`who`) tries to open PATH and
/// logs what happened: how the tests see which threads Landlock confines.
pub(crate) fn selftest(who: &str) {
    static WANTED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let wanted =
        WANTED.get_or_init(|| std::env::var_os("FENNEC_LANDLOCK_SELFTEST").map(PathBuf::from));
    let Some(path) = wanted else {
        return;
    };
    match std::fs::File::open(path) {
        Ok(_) => log::warn!(
            "Landlock self-test: the {who} thread opened {}",
            path.display()
        ),
        Err(e) => log::warn!(
            "Landlock self-test: the {who} thread cannot open {}: {e}",
            path.display()
        ),
    }
}
