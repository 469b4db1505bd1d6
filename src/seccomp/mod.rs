//! Syscall filters: one allowlist per thread [`Role`], installed by each thread on itself.
//!
//! A thread started through [`crate::threads::spawn`] installs its role's filter before it runs
//! anything of its own, so a vCPU thread is filtered before its first `KVM_RUN` and the API
//! thread before its first `accept`. The thread that builds a VM (the CLI's main thread, or
//! the control socket's service) does so unfiltered, like Firecracker's VMM thread: it opens
//! `/dev/kvm`, the images and the TAPs, which no guest can reach yet. The CLI then calls
//! [`install`] with [`Role::ApiService`] on it once the VM runs.
//!
//! The allowlists themselves, with who needs each syscall, are in [`rules`]. What happens on a
//! syscall outside them is the process-wide [`SeccompLevel`] ([`set_level`]): by default the
//! kernel kills the whole process with SIGSYS; `log` lets the syscall through and has the
//! kernel log it (`audit: type=1326 ... comm="fennec-vcpu0" ... syscall=N` in the kernel log),
//! which is how to find what a new code path needs; `off` installs nothing.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

pub mod need;
pub mod role;
pub mod rules;

pub use need::{Call, SyscallNeed};
pub use role::Role;

/// What a filter does with a syscall outside its role's allowlist.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SeccompLevel {
    /// Install no filters.
    Off,
    /// Allow the syscall and have the kernel log it (for finding what a code path needs).
    Log,
    /// Kill the process with SIGSYS.
    #[default]
    Kill,
}

impl SeccompLevel {
    fn action(self) -> Option<SeccompAction> {
        match self {
            SeccompLevel::Off => None,
            SeccompLevel::Log => Some(SeccompAction::Log),
            SeccompLevel::Kill => Some(SeccompAction::KillProcess),
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => SeccompLevel::Off,
            1 => SeccompLevel::Log,
            _ => SeccompLevel::Kill,
        }
    }
}

impl std::fmt::Display for SeccompLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SeccompLevel::Off => "off",
            SeccompLevel::Log => "log",
            SeccompLevel::Kill => "kill",
        })
    }
}

/// Why a filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules do not compile (a bug in [`rules`]).
    #[error("cannot compile the {role} syscall filter: {message}")]
    Compile {
        /// The thread role.
        role: &'static str,
        /// Why.
        message: String,
    },
    /// A filtered thread started a thread of another role (a bug: start it from an
    /// unfiltered thread, or give it the same role).
    #[error("a thread under the {had} syscall filter cannot start a {role} thread")]
    Mixed {
        /// The role of the starting thread.
        had: &'static str,
        /// The role asked for.
        role: &'static str,
    },
    /// The kernel refused the filter.
    #[error("cannot install the {role} syscall filter (the kernel needs seccomp filters, CONFIG_SECCOMP_FILTER): {source}")]
    Install {
        /// The thread role.
        role: &'static str,
        /// Why.
        #[source]
        source: seccompiler::Error,
    },
}

static LEVEL: AtomicU8 = AtomicU8::new(SeccompLevel::Kill as u8);

/// Sets what filters installed from now on do with a forbidden syscall (the default is
/// [`SeccompLevel::Kill`]). Threads already filtered keep their filters.
pub fn set_level(level: SeccompLevel) {
    LEVEL.store(level as u8, Ordering::SeqCst);
}

/// The level filters are installed with.
pub fn level() -> SeccompLevel {
    SeccompLevel::from_u8(LEVEL.load(Ordering::SeqCst))
}

thread_local! {
    /// The role whose filter this thread installed, if any.
    static INSTALLED: Cell<Option<Role>> = const { Cell::new(None) };
}

/// The role whose filter the calling thread runs under, if it installed one.
pub fn current() -> Option<Role> {
    INSTALLED.with(Cell::get)
}

/// Installs `role`'s filter on the calling thread, at the current [`level`]. `inherited` is
/// the role of the thread that started this one (its filter is this thread's too): the same
/// role's filter is not stacked twice.
pub fn install_on_thread(role: Role, inherited: Option<Role>) -> Result<(), SeccompError> {
    let level = level();
    let Some(mismatch) = level.action() else {
        return Ok(());
    };
    match inherited.or(current()) {
        Some(had) if had == role => {
            INSTALLED.with(|c| c.set(Some(role)));
            return Ok(());
        }
        Some(had) => {
            return Err(SeccompError::Mixed {
                had: had.name(),
                role: role.name(),
            })
        }
        None => {}
    }
    for program in programs(role, level, mismatch)? {
        seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
            role: role.name(),
            source,
        })?;
    }
    INSTALLED.with(|c| c.set(Some(role)));
    log::debug!(
        "Thread {} runs under the {} filter ({level})",
        thread_name(),
        role.name()
    );
    Ok(())
}

/// Whether the calling thread may start a thread of `role`: an unfiltered thread may start
/// any; a filtered one only threads of its own role (installing another filter takes prctl and
/// seccomp, which no allowlist has) and only if its role starts threads at all.
pub fn may_start(role: Role) -> Result<(), SeccompError> {
    match current() {
        Some(had) if had != role || !rules::starts_threads(had) => Err(SeccompError::Mixed {
            had: had.name(),
            role: role.name(),
        }),
        _ => Ok(()),
    }
}

/// Installs `role`'s filter on the calling thread (see [`install_on_thread`]).
pub fn install(role: Role) -> Result<(), SeccompError> {
    install_on_thread(role, None)
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// The filters installed on a thread of `role` at `level`, compiled once per process.
fn programs(
    role: Role,
    level: SeccompLevel,
    mismatch: SeccompAction,
) -> Result<&'static [BpfProgram], SeccompError> {
    type Cache = [OnceLock<Result<Vec<BpfProgram>, String>>; Role::ALL.len()];
    static LOG: Cache = [const { OnceLock::new() }; Role::ALL.len()];
    static KILL: Cache = [const { OnceLock::new() }; Role::ALL.len()];
    let cache = match level {
        SeccompLevel::Log => &LOG,
        _ => &KILL,
    };
    let compiled = cache[role as usize]
        .get_or_init(|| compile_role(role, mismatch).map_err(|e| e.to_string()));
    compiled
        .as_deref()
        .map_err(|message| SeccompError::Compile {
            role: role.name(),
            message: message.clone(),
        })
}

/// The filters a thread of `role` runs under at `level` (not [`SeccompLevel::Off`]), in the
/// order they are installed (the order `PTRACE_SECCOMP_GET_FILTER` indexes them): first, one per
/// errno, filters that answer the syscalls of [`rules::refusals`] with that errno; then the
/// role's allowlist. Where filters disagree the kernel takes the strictest answer, so a refused
/// syscall fails with its errno (its allowlist allows it) instead of killing the process.
pub fn role_filters(role: Role, level: SeccompLevel) -> Result<Vec<BpfProgram>, SeccompError> {
    let compiled = level
        .action()
        .ok_or_else(|| "no filters at level off".to_string())
        .and_then(|mismatch| compile_role(role, mismatch).map_err(|e| e.to_string()));
    compiled.map_err(|message| SeccompError::Compile {
        role: role.name(),
        message,
    })
}

fn compile_role(
    role: Role,
    mismatch: SeccompAction,
) -> Result<Vec<BpfProgram>, seccompiler::Error> {
    // The refusals go first: installing the allowlist after them takes prctl and seccomp, which
    // they allow and the allowlist does not.
    let mut out = Vec::new();
    for (errno, syscalls) in rules::refusals(role) {
        let rules = syscalls.iter().map(|nr| (*nr, Vec::new())).collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch(),
        )?;
        out.push(filter.try_into()?);
    }
    out.push(compile(rules::allowlist(role), mismatch)?);
    Ok(out)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
) -> Result<BpfProgram, seccompiler::Error> {
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch())?;
    Ok(filter.try_into()?)
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

/// A test-only hook: with `FENNEC_SECCOMP_SELFTEST=vcpu` in its environment, each vCPU thread
/// calls `uname(2)`, which no filter allows, right after installing its filter, so a test can
/// see that the filters really apply (the process dies with SIGSYS, or with `log` the call
/// goes through and is logged). It grants nothing: the call is one the thread may not make.
pub(crate) fn selftest(role: Role) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("FENNEC_SECCOMP_SELFTEST").ok());
    if wanted.as_deref() == Some(role.name()) {
        log::warn!(
            "Seccomp self-test: the {} thread calls uname(2)",
            role.name()
        );
        // SAFETY: uname writes into the utsname buffer it is given, which lives on this frame.
        let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `buf` is a valid, writable utsname.
        unsafe { libc::uname(&mut buf) };
    }
}

#[cfg(test)]
mod tests;
