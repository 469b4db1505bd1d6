//! What the process may open once its VM is built (Landlock).
//!
//! Building a VM opens everything it needs: `/dev/kvm`, the kernel and initrd (loaded, then
//! closed), the drives' images, the TAPs through `/dev/net/tun`, the console's files. From then
//! on the thread that built it, and every thread it starts (the vCPUs, the VMM's event loop),
//! can open only:
//!
//! - the drives' images, as the configuration gives them (read-only drives read-only), so a
//!   drive's image can be opened again (`PATCH /drives` with the same path);
//! - whatever is beneath the directories given with `--allow-path`, for images swapped in later;
//! - `/proc/self/task`, read-only (the VMM's halt detection reads each vCPU's `schedstat`);
//! - in the control socket's directory, nothing but the removal of entries (the socket, at exit).
//!
//! Everything else is refused by the kernel (EACCES), whatever the process's uid. Threads
//! started before the VM was built (the control socket's, the console's, the signal thread)
//! are not in the Landlock domain; their syscall filters refuse `openat` altogether. Where the
//! kernel has no Landlock (before 5.13, or not enabled at boot), fennec runs without it and says
//! so at `-v`.

use std::path::{Path, PathBuf};

use ::landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};

use crate::config::{FileUse, VmConfig};

/// The newest Landlock ABI fennec knows the rights of; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V3;

/// The files a running VM's threads may still open.
#[derive(Clone, Debug, Default)]
pub struct FileAccess {
    /// Files opened read-only.
    pub read: Vec<PathBuf>,
    /// Files opened read-write.
    pub read_write: Vec<PathBuf>,
    /// Directories beneath which anything may be read and written.
    pub dirs: Vec<PathBuf>,
    /// Directories in which entries may be removed (not read or written).
    pub remove_in: Vec<PathBuf>,
}

impl FileAccess {
    /// What `config`'s VM (built, its template drives provisioned) needs for its devices
    /// ([`crate::config::VirtioDeviceConfig::files`]), plus `allowed` directories.
    pub fn for_vm(config: &VmConfig, allowed: &[PathBuf]) -> Self {
        let mut access = FileAccess {
            dirs: allowed.to_vec(),
            ..FileAccess::default()
        };
        for file in config.device_files() {
            match file {
                FileUse::Read(path) => access.read.push(path),
                FileUse::ReadWrite(path) => access.read_write.push(path),
                FileUse::Beneath(dir) => access.dirs.push(dir),
            }
        }
        access
    }

    /// Also the files beside each drive's image (its directory), for a running VM's drives
    /// switched to other files there: how Firecracker's engines use `PATCH /drives`, with the
    /// files they placed next to the first ones (in the jail).
    pub fn with_drive_dirs(mut self, config: &VmConfig) -> Self {
        for drive in &config.drives {
            if let Some(dir) = drive.image_path().and_then(Path::parent) {
                let dir = match dir.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => dir.to_path_buf(),
                };
                if !self.dirs.contains(&dir) {
                    self.dirs.push(dir);
                }
            }
        }
        self
    }

    /// Lets the control socket at `socket` be removed at exit.
    pub fn with_socket(mut self, socket: &Path) -> Self {
        let dir = match socket.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        self.remove_in.push(dir);
        self
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
        // Files beneath may also be made: a VM snapshot's state and memory files, and a
        // checkpoint's directory.
        let rights =
            read_file | write_file | AccessFs::ReadDir | AccessFs::MakeReg | AccessFs::MakeDir;
        ruleset = ruleset.add_rule(rule(path, rights)?)?;
    }
    for path in &access.remove_in {
        ruleset = ruleset.add_rule(rule(path, AccessFs::RemoveFile.into())?)?;
    }
    ruleset = ruleset.add_rule(rule(
        Path::new("/proc/self/task"),
        AccessFs::from_read(ABI_WANTED),
    )?)?;
    let status = ruleset.restrict_self()?;
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Not,
    };
    match enforced {
        Enforced::Fully => log::info!(
            "Landlock: the running VM may open only its {} drive images and {} allowed paths",
            access.read.len() + access.read_write.len(),
            access.dirs.len()
        ),
        Enforced::Partially => log::info!(
            "Landlock: enforced as far as this kernel's Landlock goes (some rights of ABI {} \
             are not)",
            ABI_WANTED as i32
        ),
        Enforced::Not => log::info!(
            "Landlock is not available in this kernel: the running VM's files are not restricted"
        ),
    }
    Ok(enforced)
}
