//! Making a jail and running the VM in it: as `fennec jail` (made, run, removed) or as
//! Firecracker's `jailer` (its layout, its process model).

use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use super::files::{place_files, valid_id};
use super::root::{build_root, write_pid_file, Owners};
use super::spec::{step, Ended, JailError, JailSpec, JailerMode};
use super::{cgroup, child};

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
    // Drives are the VM uid's while it runs, and their owners' again once it ends.
    let made = Jail {
        dir: dir.clone(),
        cgroup,
        owners: Owners::of(&files),
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
    write_pid_file(&root, &format!("{exec_name}.pid"), pid)?;
    Ok(Ended::Exited(0))
}

/// What the jail made, removed when dropped.
struct Jail {
    dir: PathBuf,
    cgroup: Option<cgroup::Cgroup>,
    owners: Owners,
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
        self.owners.restore();
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
