//! `fennec jail`: runs one `fennec run` confined the way Firecracker's jailer confines
//! Firecracker, as one command.
//!
//! As root, the jail:
//!
//! 1. makes the VM's directory `BASE/ID/root` (owned by the VM's uid, mode 0700) and puts the
//!    VM's files in it: the kernel and initrd copied, each drive's image bind-mounted (never
//!    copied; the image is given to the VM's uid), `/dev/kvm` and, with network interfaces,
//!    `/dev/net/tun` as device nodes of that uid, and the configuration as `vm.json`;
//! 2. with limits, makes the cgroup `fennec/ID` (cgroup v2) with `cpu.max`, `memory.max`,
//!    `pids.max`;
//! 3. starts the VM's process in new mount and PID namespaces (and, with `--netns`, in an
//!    existing network namespace), which joins the cgroup, bind-mounts the drives, mounts
//!    `/proc`, sets the rlimits, `pivot_root`s into the directory, drops every capability, the
//!    supplementary groups and root's uid and gid, sets `no_new_privs`, closes every inherited
//!    file descriptor but stdin, stdout and stderr, and executes this same fennec binary (the
//!    binary is static: nothing else of the host is needed) as
//!    `fennec run --config-file /vm.json`, with its own syscall filters and Landlock;
//! 4. waits for it, passes SIGTERM, SIGINT and SIGHUP on to it, and removes the directory and
//!    the cgroup when it ends.
//!
//! Every step that can fail says which and why; the VM then never starts.
//!
//! As Firecracker's `jailer` ([`JailerMode`], `src/jailer_mode.rs`), the same steps follow
//! that program's contract instead: the directory is `BASE/EXEC/ID/root` and may exist already
//! (engines put the VM's files there first), the program run is the `--exec-file` (fennec as
//! `firecracker`, or any other) with the caller's arguments and `--id`, cgroup files are
//! written as given, and nothing is removed afterwards. Without `--new-pid-ns` the jailer's
//! own process becomes the program, so its PID is the VM's; with it, the program is PID 1 of
//! a new PID namespace, its PID goes to `root/EXEC.pid`, and the jailer exits.

mod cgroup;
mod child;

use std::ffi::{CString, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::config::VmConfig;

pub use cgroup::CGROUP_ROOT;

/// Where jails go unless `--base` says otherwise.
pub const DEFAULT_BASE: &str = "/srv/fennec";

/// Resource limits of a jail. Cgroup limits need cgroup v2.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// CPUs' worth of time per period (`cpu.max`), such as 1.5.
    pub cpus: Option<f64>,
    /// Memory of the whole process, guest memory included, in bytes (`memory.max`).
    pub memory_max: Option<u64>,
    /// Processes and threads (`pids.max`).
    pub pids_max: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub nofile: Option<u64>,
    /// Largest file the VM may write, in bytes (`RLIMIT_FSIZE`).
    pub fsize: Option<u64>,
}

impl Limits {
    fn wants_cgroup(&self) -> bool {
        self.cpus.is_some() || self.memory_max.is_some() || self.pids_max.is_some()
    }
}

/// What the jail is asked to run.
#[derive(Clone, Debug)]
pub struct JailSpec {
    /// The jail's ID: its directory and cgroup are named after it.
    pub id: String,
    /// The uid the VM runs as (not 0).
    pub uid: u32,
    /// The gid the VM runs as (not 0).
    pub gid: u32,
    /// The directory jails are made in.
    pub base: PathBuf,
    /// A network namespace to join (a path such as /run/netns/NAME).
    pub netns: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// The VM's configuration, with host paths; `None` to serve only a control socket.
    pub config: Option<VmConfig>,
    /// The control socket's file name inside the jail's directory.
    pub api_socket: Option<String>,
    /// Further arguments for `fennec run` (`--seccomp-filter`, `--id`, `-v`, ...).
    pub run_args: Vec<OsString>,
    /// Firecracker's jailer's layout and process model instead of fennec's.
    pub jailer: Option<JailerMode>,
}

/// How Firecracker's `jailer` runs its program (see the module's documentation).
#[derive(Clone, Debug, Default)]
pub struct JailerMode {
    /// The program (`--exec-file`): opened before the jail, run as `argv[0]` = its file name.
    pub exec_file: PathBuf,
    /// Its arguments (after `--`); the jailer adds `--id` and the start times.
    pub args: Vec<OsString>,
    /// Fork into a new PID namespace and exit once the program runs (`--new-pid-ns`).
    pub new_pid_ns: bool,
    /// A new session, and /dev/null as stdin, stdout and stderr (`--daemonize`).
    pub daemonize: bool,
    /// The cgroup's parent (`--parent-cgroup`; default the program's file name).
    pub parent_cgroup: Option<String>,
    /// Cgroup v2 files to write, such as `memory.max=268435456` (`--cgroup`).
    pub cgroup: Vec<(String, String)>,
}

impl JailerMode {
    /// The program's file name: the chroot's parent directory and its `argv[0]`.
    pub fn exec_name(&self) -> Result<String, JailError> {
        self.exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                JailError::Unsupported(format!(
                    "--exec-file {} has no usable file name",
                    self.exec_file.display()
                ))
            })
    }
}

/// Why a jail could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The VM would run as root.
    #[error("the VM may not run as uid or gid 0: give --uid and --gid of an unprivileged user")]
    Root,
    /// The jail needs root.
    #[error("fennec jail must run as root (it makes namespaces, device nodes and cgroups)")]
    NotRoot,
    /// The ID is unusable.
    #[error("the jail ID {0:?} must be 1 to 64 letters, digits, '-' or '_'")]
    BadId(String),
    /// A jail with this ID exists.
    #[error("{0} exists: another jail with this ID runs, or one was left behind (remove it)")]
    Exists(PathBuf),
    /// What the VM is given cannot go into a jail.
    #[error("{0}")]
    Unsupported(String),
    /// Cgroup limits were asked for on a host without cgroup v2 (or its controllers).
    #[error("{0}")]
    Cgroup(String),
    /// A step of making the jail failed.
    #[error("cannot {what}: {source}")]
    Step {
        /// The step.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A step inside the new namespaces failed (the VM never started).
    #[error("in the jail: {0}")]
    Child(String),
    /// The memory limit killed the VM.
    #[error(
        "the VM was killed for memory: the jail's memory limit ({limit_mib} MiB, memory.max) is \
         below what it used (the guest has {guest_mib} MiB, and fennec needs a few MiB more)"
    )]
    OutOfMemory {
        /// The limit.
        limit_mib: u64,
        /// The guest's memory.
        guest_mib: usize,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Step { what, source }
}

/// How the jailed fennec ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
}

/// One file the VM's directory holds.
#[derive(Clone, Debug)]
struct Placed {
    source: PathBuf,
    /// Its name in the jail's root.
    name: String,
    /// Bind-mounted (a drive), or copied (the kernel and initrd, read once).
    bind: bool,
    read_only: bool,
}

/// The VM's files and the configuration that names them by their places in the jail.
fn place_files(config: &VmConfig) -> Result<(Vec<Placed>, VmConfig), JailError> {
    let mut config = config.clone();
    let mut placed = Vec::new();
    if let Some(boot) = config.boot_source.as_mut() {
        placed.push(Placed {
            source: boot.kernel_image_path.clone(),
            name: "kernel".into(),
            bind: false,
            read_only: true,
        });
        boot.kernel_image_path = "/kernel".into();
        if let Some(initrd) = boot.initrd_path.as_mut() {
            placed.push(Placed {
                source: initrd.clone(),
                name: "initrd".into(),
                bind: false,
                read_only: true,
            });
            *initrd = "/initrd".into();
        }
    }
    for drive in &mut config.drives {
        let Some(path) = drive.image_path().map(Path::to_path_buf) else {
            return Err(JailError::Unsupported(format!(
                "drive {:?} is cloned from a template: clone it first (fennec image clone) \
                 and give the jail its path",
                drive.id
            )));
        };
        if !valid_id(&drive.id) {
            return Err(JailError::Unsupported(format!(
                "drive ID {:?} cannot name a file in the jail (use letters, digits, '-', '_')",
                drive.id
            )));
        }
        let name = format!("drive-{}", drive.id);
        placed.push(Placed {
            source: path,
            name: name.clone(),
            bind: true,
            read_only: drive.read_only,
        });
        drive.source = crate::config::DriveSource::Path(PathBuf::from("/").join(&name));
    }
    Ok((placed, config))
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The jailed process, for the signal handler that passes signals on.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signo: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; `pid` is our own child.
        unsafe { libc::kill(pid, signo) };
    }
}

/// Makes the jail, runs the VM in it until it ends, and removes the jail.
pub fn run(spec: &JailSpec) -> Result<Ended, JailError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::NotRoot);
    }
    if spec.uid == 0 || spec.gid == 0 {
        return Err(JailError::Root);
    }
    if !valid_id(&spec.id) {
        return Err(JailError::BadId(spec.id.clone()));
    }
    let (files, config) = match &spec.config {
        Some(c) => {
            let (files, config) = place_files(c)?;
            (files, Some(config))
        }
        None => (Vec::new(), None),
    };
    if let Some(jailer) = &spec.jailer {
        return run_as_jailer(spec, jailer);
    }
    let dir = spec.base.join(&spec.id);
    if dir.exists() {
        return Err(JailError::Exists(dir));
    }
    let cgroup = match spec.limits.wants_cgroup() {
        true => Some(cgroup::Cgroup::create(&spec.id, &spec.limits)?),
        false => None,
    };
    let made = Jail {
        dir: dir.clone(),
        cgroup,
    };
    let root = dir.join("root");
    build_root(spec, &root, &files, config.as_ref())?;
    log::info!("Jail {} made in {}", spec.id, root.display());

    let plan = child::Plan::new(spec, &root, &files, made.cgroup.as_ref(), config.is_some())?;
    let ended = made.spawn_and_wait(plan)?;
    if let (Ended::Killed(libc::SIGKILL), Some(cg)) = (ended, &made.cgroup) {
        if cg.oom_kills() > 0 {
            return Err(JailError::OutOfMemory {
                limit_mib: spec.limits.memory_max.unwrap_or(0) >> 20,
                guest_mib: config.map_or(0, |c| c.machine_config.mem_size_mib),
            });
        }
    }
    Ok(ended)
}

/// [`run`] as Firecracker's jailer: returns only with `--new-pid-ns` (once the program runs)
/// or on failure; otherwise this process becomes the program.
fn run_as_jailer(spec: &JailSpec, jailer: &JailerMode) -> Result<Ended, JailError> {
    let exec_name = jailer.exec_name()?;
    let root = spec.base.join(&exec_name).join(&spec.id).join("root");
    build_root(spec, &root, &[], None)?;
    let cgroup = match (jailer.cgroup.is_empty(), spec.limits.wants_cgroup()) {
        (true, false) => None,
        _ => {
            let parent = jailer.parent_cgroup.as_deref().unwrap_or(&exec_name);
            Some(cgroup::Cgroup::create_in(
                parent,
                &spec.id,
                &spec.limits,
                &jailer.cgroup,
            )?)
        }
    };
    log::info!("Jail {} made in {}", spec.id, root.display());
    let plan = child::Plan::new(spec, &root, &[], cgroup.as_ref(), false)?;
    if !jailer.new_pid_ns {
        let Err(message) = plan.steps();
        return Err(JailError::Child(message));
    }
    let (pid, err_read) = fork_in_pid_namespace(plan)?;
    let mut failure = String::new();
    let _ = fs::File::from(err_read).read_to_string(&mut failure);
    if !failure.is_empty() {
        let _ = wait(pid);
        return Err(JailError::Child(failure));
    }
    let pid_file = root.join(format!("{exec_name}.pid"));
    fs::write(&pid_file, pid.to_string()).map_err(step(format!("write {}", pid_file.display())))?;
    Ok(Ended::Exited(0))
}

/// What the jail made, removed when dropped.
struct Jail {
    dir: PathBuf,
    cgroup: Option<cgroup::Cgroup>,
}

impl Jail {
    fn spawn_and_wait(&self, plan: child::Plan) -> Result<Ended, JailError> {
        // The VM's process is PID 1 of a PID namespace of its own: when it ends, so does
        // everything it could have started.
        let (pid, err_read) = fork_in_pid_namespace(plan)?;
        CHILD.store(pid, Ordering::SeqCst);
        for signo in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: `forward` is async-signal-safe (an atomic load and kill).
            unsafe { libc::signal(signo, forward as *const () as libc::sighandler_t) };
        }
        // The child reports a failed step here; a successful exec closes the pipe.
        let mut failure = String::new();
        let _ = fs::File::from(err_read).read_to_string(&mut failure);
        let status = wait(pid);
        CHILD.store(0, Ordering::SeqCst);
        if !failure.is_empty() {
            return Err(JailError::Child(failure));
        }
        status.map_err(step("wait for the VM's process"))
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            cg.remove();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            log::warn!("Cannot remove the jail {}: {e}", self.dir.display());
        }
    }
}

/// Forks `plan`'s process as PID 1 of a new PID namespace; returns its PID and the pipe on
/// which it reports a failed step (closed by a successful exec).
fn fork_in_pid_namespace(plan: child::Plan) -> Result<(libc::pid_t, OwnedFd), JailError> {
    let (err_read, err_write) = pipe().map_err(step("make a pipe"))?;
    // SAFETY: unshare takes flags only; CLONE_NEWPID affects this process's later children.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(step("make a PID namespace")(std::io::Error::last_os_error()));
    }
    // SAFETY: this process has one thread (the CLI starts none before the jail), so the child
    // may run anything; it ends in exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(step("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_read);
        plan.run(err_write);
    }
    drop(err_write);
    Ok((pid, err_read))
}

fn wait(pid: libc::pid_t) -> std::io::Result<Ended> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(if libc::WIFSIGNALED(status) {
                Ended::Killed(libc::WTERMSIG(status))
            } else {
                Ended::Exited(libc::WEXITSTATUS(status))
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the jail's root directory with the VM's files (drives as empty mount points, bound
/// in the child), its device nodes and its configuration.
fn build_root(
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

#[cfg(test)]
mod tests;
