//! The jailed process's side: from a fork in the new PID namespace to `fexecve` of fennec.
//!
//! Everything it needs is prepared before the fork ([`Plan::new`]), so a failure names its
//! step; the message goes back to the jail on a pipe that a successful exec closes.

use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::cgroup::Cgroup;
use super::files::Placed;
use super::spec::{step, JailError, JailSpec, JailerMode, Limits};

/// Linux's `_LINUX_CAPABILITY_VERSION_3`, for capset.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Everything the jailed process does, prepared before the fork.
pub(super) struct Plan {
    cgroup_procs: Option<PathBuf>,
    netns: Option<PathBuf>,
    root: PathBuf,
    /// Drive images: source, mount point, read-only.
    binds: Vec<(PathBuf, PathBuf, bool)>,
    limits: Limits,
    uid: u32,
    gid: u32,
    exe: OwnedFd,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// `--daemonize`: /dev/null, opened before the jail, for stdin, stdout and stderr, and a
    /// new session.
    daemon: Option<OwnedFd>,
}

fn cstring(s: &OsStr) -> Result<CString, JailError> {
    CString::new(s.as_bytes())
        .map_err(|_| JailError::Unsupported(format!("{s:?} holds a NUL byte")))
}

impl Plan {
    pub(super) fn new(
        spec: &JailSpec,
        root: &Path,
        files: &[Placed],
        cgroup: Option<&Cgroup>,
        has_config: bool,
    ) -> Result<Plan, JailError> {
        // The program, opened now: the jail's root holds no copy of it. fennec's own binary,
        // or the jailer's --exec-file.
        let (exe, args) = match &spec.jailer {
            None => {
                let exe = File::open("/proc/self/exe").map_err(step("open fennec's own binary"))?;
                let mut args: Vec<OsString> = vec!["fennec".into(), "run".into()];
                args.extend(spec.run_args.iter().cloned());
                if has_config {
                    args.extend(["--config-file".into(), "/vm.json".into()]);
                }
                if let Some(socket) = &spec.api_socket {
                    args.extend(["--api-socket".into(), format!("/{socket}").into()]);
                }
                (exe, args)
            }
            Some(jailer) => {
                let exe = File::open(&jailer.exec_file).map_err(step(format!(
                    "open the --exec-file {}",
                    jailer.exec_file.display()
                )))?;
                (exe, jailer_argv(spec, jailer)?)
            }
        };
        let exe = exe.into();
        let daemon = match spec.jailer.as_ref().is_some_and(|j| j.daemonize) {
            true => Some(
                File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(step("open /dev/null"))?
                    .into(),
            ),
            false => None,
        };
        let argv = args
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = std::env::var_os("RUST_LOG")
            .map(|v| {
                let mut kv = OsString::from("RUST_LOG=");
                kv.push(v);
                cstring(&kv)
            })
            .transpose()?
            .into_iter()
            .collect();
        Ok(Plan {
            cgroup_procs: cgroup.map(Cgroup::procs),
            netns: spec.netns.clone(),
            root: root.to_path_buf(),
            binds: files
                .iter()
                .filter(|f| f.bind)
                .map(|f| (f.source.clone(), root.join(&f.name), f.read_only))
                .collect(),
            limits: spec.limits.clone(),
            uid: spec.uid,
            gid: spec.gid,
            exe,
            argv,
            envp,
            daemon,
        })
    }

    /// Runs the steps in the child; never returns.
    pub(super) fn run(self, err: OwnedFd) -> ! {
        let Err(message) = self.steps();
        let _ = File::from(err).write_all(message.as_bytes());
        // SAFETY: _exit ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(127) }
    }

    /// Every step, ending in the program's exec; in this process, or in the forked child.
    pub(super) fn steps(&self) -> Result<Infallible, String> {
        if let Some(procs) = &self.cgroup_procs {
            std::fs::write(procs, "0")
                .map_err(|e| format!("cannot join the cgroup ({}): {e}", procs.display()))?;
        }
        if let Some(netns) = &self.netns {
            let ns = File::open(netns).map_err(|e| {
                format!("cannot open the network namespace {}: {e}", netns.display())
            })?;
            // SAFETY: setns on an fd we own, with the namespace type it must be.
            check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map_err(|e| {
                format!("cannot join the network namespace {}: {e}", netns.display())
            })?;
        }
        // SAFETY: unshare takes flags only.
        check(unsafe { libc::unshare(libc::CLONE_NEWNS) })
            .map_err(|e| format!("cannot make a mount namespace: {e}"))?;
        // Nothing mounted from here on reaches the host.
        mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE)
            .map_err(|e| format!("cannot make the mounts private: {e}"))?;
        mount(
            Some(&self.root),
            &self.root,
            None,
            libc::MS_BIND | libc::MS_REC,
        )
        .map_err(|e| format!("cannot bind the jail's root: {e}"))?;
        for (source, target, read_only) in &self.binds {
            mount(Some(source), target, None, libc::MS_BIND)
                .map_err(|e| format!("cannot bind {} into the jail: {e}", source.display()))?;
            if *read_only {
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                mount(None, target, None, flags)
                    .map_err(|e| format!("cannot make {} read-only: {e}", source.display()))?;
            }
        }
        self.set_rlimits()?;
        self.enter_root()?;
        self.drop_privileges()?;
        // Every inherited descriptor but stdin, stdout and stderr closes on exec.
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only marks descriptors.
        check(unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) as i32
        })
        .map_err(|e| format!("cannot close inherited file descriptors: {e}"))?;
        if let Some(null) = &self.daemon {
            // SAFETY: setsid takes nothing; dup2 copies a descriptor we own onto 0, 1 and 2.
            check(unsafe { libc::setsid() }.min(0))
                .map_err(|e| format!("cannot start a new session (--daemonize): {e}"))?;
            for fd in 0..3 {
                // SAFETY: as above.
                check(unsafe { libc::dup2(null.as_raw_fd(), fd) }.min(0))
                    .map_err(|e| format!("cannot redirect fd {fd} to /dev/null: {e}"))?;
            }
        }
        let argv: Vec<*const libc::c_char> = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp: Vec<*const libc::c_char> = self
            .envp
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        // SAFETY: argv and envp are NUL-terminated arrays of NUL-terminated strings that outlive
        // the call; the fd is fennec's binary, open for reading.
        unsafe { libc::fexecve(self.exe.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
        Err(format!(
            "cannot execute {:?} in the jail: {}",
            self.argv[0],
            std::io::Error::last_os_error()
        ))
    }

    fn set_rlimits(&self) -> Result<(), String> {
        for (resource, value, name) in [
            (libc::RLIMIT_NOFILE, self.limits.nofile, "open files"),
            (libc::RLIMIT_FSIZE, self.limits.fsize, "file size"),
        ] {
            let Some(value) = value else { continue };
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: setrlimit reads the rlimit it is given.
            check(unsafe { libc::setrlimit(resource, &limit) })
                .map_err(|e| format!("cannot limit {name} to {value}: {e}"))?;
        }
        Ok(())
    }

    /// Makes the jail's directory the root: `pivot_root`, or where the host's root is the
    /// initial ramfs (which cannot be pivoted away from), moving it over `/` and `chroot`ing,
    /// as `switch_root` does; the process has no capability left to leave either way.
    fn enter_root(&self) -> Result<(), String> {
        let root = cpath(&self.root)?;
        let dot = c".";
        // SAFETY: chdir to a NUL-terminated path.
        check(unsafe { libc::chdir(root.as_ptr()) })
            .map_err(|e| format!("cannot enter {}: {e}", self.root.display()))?;
        // SAFETY: pivot_root(".", ".") stacks the old root under the new one; both paths are
        // NUL-terminated.
        let pivoted =
            unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } == 0;
        if pivoted {
            // SAFETY: detaches the old root, stacked on ".", from the namespace.
            check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) })
                .map_err(|e| format!("cannot detach the host's root: {e}"))?;
        } else {
            let why = std::io::Error::last_os_error();
            if why.raw_os_error() != Some(libc::EINVAL) {
                return Err(format!("cannot pivot_root into the jail: {why}"));
            }
            mount(Some(Path::new(".")), Path::new("/"), None, libc::MS_MOVE)
                .map_err(|e| format!("cannot move the jail's root over /: {e}"))?;
            // SAFETY: chroot to a NUL-terminated path.
            check(unsafe { libc::chroot(dot.as_ptr()) })
                .map_err(|e| format!("cannot chroot into the jail: {e}"))?;
        }
        // SAFETY: chdir to a NUL-terminated path.
        check(unsafe { libc::chdir(c"/".as_ptr()) })
            .map_err(|e| format!("cannot enter the jail's root: {e}"))
    }

    /// Every capability, the supplementary groups, root's gid and uid; then no_new_privs.
    fn drop_privileges(&self) -> Result<(), String> {
        for cap in 0..64 {
            // SAFETY: prctl with integer arguments; EINVAL past the last capability ends it.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(format!("cannot drop capability {cap}: {e}"));
            }
        }
        // SAFETY: prctl with integer arguments.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        })
        .map_err(|e| format!("cannot clear the ambient capabilities: {e}"))?;
        // SAFETY: setgroups with an empty list; setresgid/setresuid take ids.
        check(unsafe { libc::setgroups(0, std::ptr::null()) })
            .map_err(|e| format!("cannot drop the supplementary groups: {e}"))?;
        // SAFETY: as above.
        check(unsafe { libc::setresgid(self.gid, self.gid, self.gid) })
            .map_err(|e| format!("cannot become gid {}: {e}", self.gid))?;
        // SAFETY: as above. Leaving uid 0 clears the permitted and effective capabilities.
        check(unsafe { libc::setresuid(self.uid, self.uid, self.uid) })
            .map_err(|e| format!("cannot become uid {}: {e}", self.uid))?;
        // The inheritable set too (setresuid leaves it).
        let mut header = [CAPABILITY_VERSION_3, 0];
        let data = [0u32; 6];
        // SAFETY: capset reads a version 3 header (version, pid 0: this thread) and two
        // {effective, permitted, inheritable} triples.
        check(unsafe {
            libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) as i32
        })
        .map_err(|e| format!("cannot clear the capabilities: {e}"))?;
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
            .map_err(|e| format!("cannot set no_new_privs: {e}"))
    }
}

/// The jailer's program's command line: its file name, the caller's arguments, then `--id`
/// and the start times (wall clock and CPU, in microseconds), as Firecracker's jailer passes
/// them.
fn jailer_argv(spec: &JailSpec, jailer: &JailerMode) -> Result<Vec<OsString>, JailError> {
    let mut args: Vec<OsString> = vec![jailer.exec_name()?.into()];
    args.extend(jailer.args.iter().cloned());
    let wall_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut cpu = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut cpu) };
    let cpu_us = cpu.tv_sec as u128 * 1_000_000 + cpu.tv_nsec as u128 / 1000;
    for (flag, value) in [
        ("--id", spec.id.clone()),
        ("--start-time-us", wall_us.to_string()),
        ("--start-time-cpu-us", cpu_us.to_string()),
    ] {
        args.extend([flag.into(), value.into()]);
    }
    Ok(args)
}

fn check(r: i32) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} holds a NUL byte", p.display()))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), String> {
    let source = source.map(cpath).transpose()?;
    let target = cpath(target)?;
    let fstype = fstype.map(|t| CString::new(t).expect("no NUL"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string living across the call; no data.
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            std::ptr::null(),
        )
    };
    check(r).map_err(|e| e.to_string())
}
