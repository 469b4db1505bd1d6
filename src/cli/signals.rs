//! The signals `fennec run` takes itself, on a thread of its own: SIGTERM, SIGINT and SIGHUP
//! stop the VM cleanly (so the terminal is restored) instead of killing fennec; SIGUSR1 logs
//! the VM's state.

use std::sync::{Mutex, PoisonError};

use fennec::api::service;
use fennec::seccomp::Role;
use fennec::threads;
use fennec::VmHandle;

/// Signals fennec takes itself: SIGTERM, SIGINT and SIGHUP stop the VM cleanly (so the
/// terminal is restored) instead of killing fennec; SIGUSR1 logs the VM's state.
const HANDLED_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// Blocks [`HANDLED_SIGNALS`] in this thread, and so in every thread started after it; they
/// are then taken by [`on_signals`]. `fennec run` calls it before it starts any thread, so no
/// thread can be killed by one. `None` if that fails (the defaults then apply).
pub fn block_signals() -> Option<libc::sigset_t> {
    // A handler that never runs (the signals stay blocked, sigwait takes them): as PID 1 of a
    // PID namespace (in `fennec jail`), a process gets no signal whose action is the default.
    extern "C" fn never_runs(_: libc::c_int) {}
    for signo in HANDLED_SIGNALS {
        // SAFETY: installs an async-signal-safe (empty) handler for a valid signal number.
        unsafe { libc::signal(signo, never_runs as *const () as libc::sighandler_t) };
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid.
    let ok = unsafe {
        libc::sigemptyset(&mut set);
        HANDLED_SIGNALS.iter().for_each(|s| {
            libc::sigaddset(&mut set, *s);
        });
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0
    };
    ok.then_some(set)
}

/// Waits for the handled signals on its own thread and calls `on_signal` for each.
pub fn on_signals(set: libc::sigset_t, on_signal: impl Fn(i32) + Send + 'static) {
    let spawned = threads::spawn(Role::Signals, "signals", move || loop {
        let mut signo: libc::c_int = 0;
        // SAFETY: `set` holds signals blocked in every thread, so sigwait is the only taker;
        // `signo` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut signo) } == 0 {
            on_signal(signo);
        }
    });
    if let Err(e) = spawned {
        log::warn!("Cannot start the signal thread ({e}); SIGTERM, SIGINT and SIGHUP kill fennec");
    }
}

/// Where the signal thread finds the VM of `fennec run`: not started yet (a stop signal is then
/// remembered), or running.
#[derive(Default)]
pub struct SignalTarget {
    handle: Option<VmHandle>,
    stop_asked: bool,
}

impl SignalTarget {
    /// What signal `signo` does: stops (or describes) the VM, or is remembered until it starts.
    pub fn on_signal(target: &Mutex<SignalTarget>, signo: i32) {
        let mut t = target.lock().unwrap_or_else(PoisonError::into_inner);
        match (&t.handle, signo) {
            (Some(handle), _) => service::on_signal(handle, signo),
            (None, libc::SIGUSR1) => log::warn!("Received SIGUSR1 before the VM started"),
            (None, _) => {
                log::info!("Received signal {signo} before the VM started; it stops at once");
                t.stop_asked = true;
            }
        }
    }

    /// The VM ended: signals have nothing to stop from now on.
    pub fn ended(target: &Mutex<SignalTarget>) {
        target.lock().unwrap_or_else(PoisonError::into_inner).handle = None;
    }

    /// The VM started: signals reach it from now on, and a stop asked for before, now.
    pub fn started(target: &Mutex<SignalTarget>, handle: &VmHandle) -> Result<(), fennec::Error> {
        let mut t = target.lock().unwrap_or_else(PoisonError::into_inner);
        t.handle = Some(handle.clone());
        if t.stop_asked {
            handle.stop()?;
        }
        Ok(())
    }
}
