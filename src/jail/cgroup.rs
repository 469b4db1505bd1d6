//! The jail's cgroup (v2): `fennec/ID` under the unified hierarchy, with the jail's limits;
//! as Firecracker's jailer, `PARENT/ID` with the files `--cgroup` names.

use std::fs;
use std::path::{Path, PathBuf};

use super::spec::{JailError, Limits};

/// Where the unified cgroup hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The period `cpu.max` is written against, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// A jail's cgroup, removed by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

fn cgroup_err(message: String) -> JailError {
    JailError::Cgroup(message)
}

fn write(path: &Path, value: &str) -> Result<(), JailError> {
    fs::write(path, value)
        .map_err(|e| cgroup_err(format!("cannot write {value:?} to {}: {e}", path.display())))
}

impl Cgroup {
    /// Makes `fennec/ID` with `limits`, enabling the controllers they need on the way.
    pub fn create(id: &str, limits: &Limits) -> Result<Cgroup, JailError> {
        Self::create_in("fennec", id, limits, &[])
    }

    /// Makes `parent/ID` with `limits` and then `files` written (`memory.max=...`), enabling
    /// the controllers they need on the way (a file's controller is its name's first part).
    pub fn create_in(
        parent: &str,
        id: &str,
        limits: &Limits,
        files: &[(String, String)],
    ) -> Result<Cgroup, JailError> {
        if parent.is_empty() || parent.contains("..") || parent.starts_with('/') {
            return Err(cgroup_err(format!(
                "the parent cgroup {parent:?} must be a relative path without '..'"
            )));
        }
        for (file, _) in files {
            if file.contains('/') || !file.contains('.') || file.starts_with("cgroup.") {
                return Err(cgroup_err(format!(
                    "{file:?} is not a controller's file (such as memory.max or cpu.max)"
                )));
            }
        }
        let root = Path::new(CGROUP_ROOT);
        let available = fs::read_to_string(root.join("cgroup.controllers")).map_err(|_| {
            cgroup_err(format!(
                "cgroup v2 is not mounted at {CGROUP_ROOT}: the jail's cgroup limits (--cpus, \
                 --memory-max, --pids-max; the jailer's --cgroup) need the unified hierarchy \
                 (Debian 12's default; systemd.unified_cgroup_hierarchy=1 on older hosts), or \
                 leave them out"
            ))
        })?;
        let mut wanted = Vec::new();
        if limits.cpus.is_some() {
            wanted.push("cpu");
        }
        if limits.memory_max.is_some() {
            wanted.push("memory");
        }
        if limits.pids_max.is_some() {
            wanted.push("pids");
        }
        for (file, _) in files {
            let controller = file.split('.').next().unwrap_or_default();
            if !wanted.contains(&controller) {
                wanted.push(controller);
            }
        }
        for controller in &wanted {
            if !available.split_whitespace().any(|c| c == *controller) {
                return Err(cgroup_err(format!(
                    "the cgroup v2 controller {controller:?} is not available at {CGROUP_ROOT} \
                     (it offers: {}); is it bound to a cgroup v1 hierarchy?",
                    available.trim()
                )));
            }
        }
        // Each level from the root to the parent passes the controllers down.
        let mut dirs = vec![root.to_path_buf()];
        for part in Path::new(parent).components() {
            let dir = dirs[dirs.len() - 1].join(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cgroup_err(format!("cannot make {}: {e}", dir.display()))),
            }
            dirs.push(dir);
        }
        let parent = dirs[dirs.len() - 1].clone();
        for dir in &dirs {
            for controller in &wanted {
                write(
                    &dir.join("cgroup.subtree_control"),
                    &format!("+{controller}"),
                )?;
            }
        }
        let path = parent.join(id);
        fs::create_dir(&path).map_err(|e| {
            cgroup_err(format!(
                "cannot make the jail's cgroup {}: {e}",
                path.display()
            ))
        })?;
        let cgroup = Cgroup { path };
        if let Some(cpus) = limits.cpus {
            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
            write(
                &cgroup.path.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
        if let Some(bytes) = limits.memory_max {
            write(&cgroup.path.join("memory.max"), &bytes.to_string())?;
            // Over the limit means killed, not swapped out.
            let swap = cgroup.path.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(pids) = limits.pids_max {
            write(&cgroup.path.join("pids.max"), &pids.to_string())?;
        }
        for (file, value) in files {
            write(&cgroup.path.join(file), value)?;
        }
        log::info!(
            "Cgroup {} made with the jail's limits",
            cgroup.path.display()
        );
        Ok(cgroup)
    }

    /// `cgroup.procs`, which the VM's process writes itself into.
    pub fn procs(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// How many times the out-of-memory killer killed a process of the cgroup.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.path.join("memory.events"))
            .ok()
            .and_then(|events| {
                events.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Removes the cgroup (its processes have ended).
    pub fn remove(self) {
        // A cgroup is busy for a moment after its last process is reaped.
        for _ in 0..100 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => {
                    log::warn!("Cannot remove the cgroup {}: {e}", self.path.display());
                    return;
                }
            }
        }
        log::warn!("The cgroup {} stays busy; left behind", self.path.display());
    }
}
