//! The jail's root directory: made (or reused, as the jailer), owned by the VM's uid, holding
//! the VM's files and device nodes.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::files::Placed;
use super::spec::{step, JailError, JailSpec};
use crate::config::VmConfig;

/// Makes the jail's root directory with the VM's files (drives as empty mount points, bound
/// in the child), its device nodes and its configuration.
pub(super) fn build_root(
    spec: &JailSpec,
    root: &Path,
    files: &[Placed],
    config: Option<&VmConfig>,
) -> Result<(), JailError> {
    let owner = |path: &Path| {
        chown(path, Some(spec.uid), Some(spec.gid))
            .map_err(step(format!("give {} to the VM's uid", path.display())))
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&spec.base)
        .map_err(step(format!("make {}", spec.base.display())))?;
    // The jailer's directories may exist: engines put the VM's files in first.
    let existing = spec.jailer.is_some();
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(existing)
        .create(root.parent().unwrap_or(root))
        .map_err(step(format!("make the jail in {}", spec.base.display())))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(existing)
        .create(root)
        .map_err(step(format!("make {}", root.display())))?;
    owner(root)?;
    for f in files {
        let target = root.join(&f.name);
        let meta = fs::metadata(&f.source).map_err(step(format!("read {}", f.source.display())))?;
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
            // The mount point; the image itself is the VM uid's for the run.
            fs::File::create(&target).map_err(step(format!("make {}", target.display())))?;
            owner(&f.source)?;
        } else {
            fs::copy(&f.source, &target)
                .map_err(step(format!("copy {} into the jail", f.source.display())))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o400))
                .map_err(step(format!("make {} read-only", target.display())))?;
            owner(&target)?;
        }
    }
    let dev = root.join("dev");
    let mkdir = |path: &Path| match fs::create_dir(path) {
        Err(e) if !(existing && e.kind() == std::io::ErrorKind::AlreadyExists) => Err(e),
        _ => Ok(()),
    };
    mkdir(&dev).map_err(step("make the jail's /dev"))?;
    let mut nodes = vec![("kvm", 232)];
    if config.is_some_and(|c| !c.net.is_empty()) || config.is_none() {
        mkdir(&dev.join("net")).map_err(step("make the jail's /dev/net"))?;
        nodes.push(("net/tun", 200));
    }
    for (name, minor) in nodes {
        let path = dev.join(name);
        if existing {
            // Made here, never taken from what was there.
            let _ = fs::remove_file(&path);
        }
        mknod_char(&path, 10, minor).map_err(step(format!("make /dev/{name} in the jail")))?;
        owner(&path)?;
    }
    mkdir(&root.join("proc")).map_err(step("make the jail's /proc"))?;
    if let Some(config) = config {
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| JailError::Unsupported(format!("cannot write the configuration: {e}")))?;
        let path = root.join("vm.json");
        fs::write(&path, json).map_err(step("write the jail's vm.json"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400))
            .map_err(step("make the jail's vm.json read-only"))?;
        owner(&path)?;
    }
    Ok(())
}

fn mknod_char(path: &Path, major: u32, minor: u32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path; mknod reads it and makes a character device node.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
