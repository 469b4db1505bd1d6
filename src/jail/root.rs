//! The jail's root directory: made (or reused, as the jailer), owned by the VM's uid, holding
//! the VM's files and device nodes.
//!
//! The directory belongs to the VM's uid, and as the jailer it is reused from run to run: what
//! is in it may have been put there by that uid, a symbolic link to any file of the host among
//! it. So nothing here goes by a path inside it. The root is opened once (`O_NOFOLLOW`, it must
//! be a directory), and every entry is made relative to it with the `*at` calls: whatever had
//! the entry's name is removed first (a link, not what it points to), the entry is then made
//! new (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mknodat`), and given to the uid through its own
//! descriptor (`fchown`). A `dev` or `dev/net` that is anything but a directory is refused.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, DirBuilderExt, MetadataExt};
use std::path::Path;

use super::files::Placed;
use super::spec::{step, JailError, JailSpec};
use crate::config::VmConfig;

/// A directory of the jail, opened without following links: entries are made in it by name.
struct Dir {
    fd: OwnedFd,
    /// For messages.
    path: std::path::PathBuf,
}

fn cstring(name: &str) -> Result<CString, JailError> {
    CString::new(name)
        .ok()
        .filter(|_| !name.is_empty() && !name.contains('/') && name != "." && name != "..")
        .ok_or_else(|| JailError::Unsupported(format!("{name:?} cannot name a file in the jail")))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Dir {
    /// Opens `path`, which must be a directory and not a link to one.
    fn open(path: &Path) -> Result<Dir, JailError> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| JailError::Unsupported(format!("{} has a NUL", path.display())))?;
        // SAFETY: `c` is a NUL-terminated path; open returns a new descriptor or -1.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(refused_dir(path, last_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The subdirectory `name`, made (mode 0755) if missing; anything else by that name, a
    /// link to a directory included, is refused.
    fn subdir(&self, name: &str) -> Result<Dir, JailError> {
        let c = cstring(name)?;
        // SAFETY: `self.fd` is an open directory; `c` is a NUL-terminated single name.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
            let e = last_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(step(format!("make {}", self.path.join(name).display()))(e));
            }
        }
        // SAFETY: as above; openat returns a new descriptor or -1.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        let path = self.path.join(name);
        if fd < 0 {
            return Err(refused_dir(&path, last_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Dir { fd, path })
    }

    /// Removes whatever is named `name` (a file, a device node, a link: never what a link
    /// points to); nothing there is fine.
    fn remove(&self, name: &str) -> Result<(), JailError> {
        let c = cstring(name)?;
        // SAFETY: `self.fd` is an open directory; `c` is a NUL-terminated single name.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            let e = last_error();
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(step(format!("remove {}", self.path.join(name).display()))(
                    e,
                ));
            }
        }
        Ok(())
    }

    /// A new regular file `name` (mode `mode`), in place of whatever had the name.
    fn new_file(&self, name: &str, mode: u32) -> Result<File, JailError> {
        self.remove(name)?;
        let c = cstring(name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // SAFETY: `self.fd` is an open directory; `c` is a NUL-terminated single name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(step(format!("make {}", self.path.join(name).display()))(
                last_error(),
            ));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// A new character device node `name` (mode 0600), in place of whatever had the name,
    /// given to `uid`:`gid`.
    fn new_char_device(
        &self,
        name: &str,
        (major, minor): (u32, u32),
        owner: (u32, u32),
    ) -> Result<(), JailError> {
        self.remove(name)?;
        let c = cstring(name)?;
        let what = || format!("make {}", self.path.join(name).display());
        // SAFETY: `self.fd` is an open directory; `c` is a NUL-terminated single name.
        let made = unsafe {
            libc::mknodat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major, minor),
            )
        };
        if made != 0 {
            return Err(step(what())(last_error()));
        }
        // SAFETY: as above; the node just made is changed, never a link's target.
        let owned = unsafe {
            libc::fchownat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                owner.0,
                owner.1,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if owned != 0 {
            return Err(step(what())(last_error()));
        }
        Ok(())
    }
}

fn refused_dir(path: &Path, e: std::io::Error) -> JailError {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => JailError::Unsupported(format!(
            "{} is not a directory (a link, or a file): refused",
            path.display()
        )),
        _ => step(format!("open {}", path.display()))(e),
    }
}

/// Gives `file` to the VM's uid and gid.
fn give(file: &File, spec: &JailSpec, what: &str) -> Result<(), JailError> {
    std::os::unix::fs::fchown(file, Some(spec.uid), Some(spec.gid))
        .map_err(step(format!("give {what} to the VM's uid")))
}

/// Makes the jail's root directory with the VM's files (drives as empty mount points, bound
/// in the child), its device nodes and its configuration.
pub(super) fn build_root(
    spec: &JailSpec,
    root: &Path,
    files: &[Placed],
    config: Option<&VmConfig>,
) -> Result<(), JailError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&spec.base)
        .map_err(step(format!("make {}", spec.base.display())))?;
    // The jailer's directories may exist: engines put the VM's files in first.
    let existing = spec.jailer.is_some();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(existing)
        .create(root.parent().unwrap_or(root))
        .map_err(step(format!("make the jail in {}", spec.base.display())))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(existing)
        .create(root)
        .map_err(step(format!("make {}", root.display())))?;
    let dir = Dir::open(root)?;
    std::os::unix::fs::fchown(&dir.fd, Some(spec.uid), Some(spec.gid))
        .map_err(step(format!("give {} to the VM's uid", root.display())))?;
    for f in files {
        let meta =
            std::fs::metadata(&f.source).map_err(step(format!("read {}", f.source.display())))?;
        let kind = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        if !(kind.is_file() || (f.bind && kind.is_block_device())) {
            return Err(JailError::Unsupported(format!(
                "{} is not a regular file{}",
                f.source.display(),
                if f.bind { " or a block device" } else { "" }
            )));
        }
        if f.bind {
            // The mount point; the image itself is the VM uid's for the run (given back when
            // the jail ends).
            let target = dir.new_file(&f.name, 0o600)?;
            give(&target, spec, &f.name)?;
            chown(&f.source, Some(spec.uid), Some(spec.gid))
                .map_err(step(format!("give {} to the VM's uid", f.source.display())))?;
        } else {
            let mut target = dir.new_file(&f.name, 0o400)?;
            let mut source =
                File::open(&f.source).map_err(step(format!("read {}", f.source.display())))?;
            std::io::copy(&mut source, &mut target)
                .map_err(step(format!("copy {} into the jail", f.source.display())))?;
            give(&target, spec, &f.name)?;
        }
    }
    let dev = dir.subdir("dev")?;
    let owner = (spec.uid, spec.gid);
    dev.new_char_device("kvm", (10, 232), owner)?;
    if config.is_some_and(|c| !c.net.is_empty()) || config.is_none() {
        dev.subdir("net")?
            .new_char_device("tun", (10, 200), owner)?;
    }
    if let Some(config) = config {
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| JailError::Unsupported(format!("cannot write the configuration: {e}")))?;
        let mut file = dir.new_file("vm.json", 0o400)?;
        file.write_all(json.as_bytes())
            .map_err(step("write the jail's vm.json"))?;
        give(&file, spec, "vm.json")?;
    }
    Ok(())
}

/// Writes `pid` to `name` in the jail's root, made new in place of whatever had the name.
pub(super) fn write_pid_file(root: &Path, name: &str, pid: libc::pid_t) -> Result<(), JailError> {
    let mut file = Dir::open(root)?.new_file(name, 0o644)?;
    file.write_all(pid.to_string().as_bytes())
        .map_err(step(format!("write {}", root.join(name).display())))
}

/// The owner of each drive the jail gives the VM's uid, to give back when it ends.
#[derive(Debug, Default)]
pub(super) struct Owners(Vec<(std::path::PathBuf, u32, u32)>);

impl Owners {
    /// The owners of the drives among `files`, before the jail gives them away (a drive that
    /// cannot be read is left out: making the root fails on it, saying why).
    pub fn of(files: &[Placed]) -> Owners {
        let owners = files
            .iter()
            .filter(|f| f.bind)
            .filter_map(|f| {
                let meta = std::fs::metadata(&f.source).ok()?;
                Some((f.source.clone(), meta.uid(), meta.gid()))
            })
            .collect();
        Owners(owners)
    }

    /// Gives each drive back to its owner.
    pub fn restore(&self) {
        for (path, uid, gid) in &self.0 {
            if let Err(e) = chown(path, Some(*uid), Some(*gid)) {
                log::warn!(
                    "Cannot give {} back to uid {uid} gid {gid}: {e}",
                    path.display()
                );
            }
        }
    }
}
