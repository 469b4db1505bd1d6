//! What a jail is asked to be ([`JailSpec`], [`Limits`], [`JailerMode`]) and how it can fail or
//! end.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::VmConfig;

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
    pub(super) fn wants_cgroup(&self) -> bool {
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

pub(super) fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
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
