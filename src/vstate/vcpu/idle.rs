//! Noticing a guest that can never run again, without waking one that is merely idle.
//!
//! A guest that halts every vCPU with interrupts disabled is dead: only an NMI or INIT would
//! wake it, and fennec sends neither. Telling that from an idle guest (halted, interrupts on,
//! waiting for a timer) needs the vCPU's registers, which only the vCPU thread can read, so it
//! has to be kicked out of `KVM_RUN` and asked. [`IdleWatch`] decides when: it reads the
//! thread's CPU time from its CPU clock (which does not disturb it, and needs no `/proc`: a
//! jail has none) and asks only once a vCPU has been still for a while, then again after
//! longer and longer pauses (up to [`MAX_INTERVAL`]) while it stays still. A vCPU that runs starts over. An idle guest is
//! woken a few times in its first seconds of idleness, then about once a minute.

use std::time::{Duration, Instant};

use super::ProbedState;

/// How long a vCPU must be still before it is first probed.
pub const SETTLE: Duration = Duration::from_millis(500);
/// The longest pause between two probes of a vCPU that stays still.
pub const MAX_INTERVAL: Duration = Duration::from_secs(64);

/// How long thread `thread` of this process has run on a CPU, in nanoseconds, from its CPU
/// clock. `None` once it has ended; probes then follow the schedule alone.
pub fn activity(thread: libc::pthread_t) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `thread` is a thread of this process not joined yet (its caller holds its
    // `JoinHandle`), so its handle is valid; `clock` is a valid out-pointer.
    if unsafe { libc::pthread_getcpuclockid(thread, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; a clock of a thread that has ended gives EINVAL.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// One vCPU's probing schedule and what its last probe found.
#[derive(Debug)]
pub struct IdleWatch {
    last: Option<u64>,
    /// The next observation is the vCPU settling after a probe, not the guest running.
    after_probe: bool,
    next_probe: Instant,
    interval: Duration,
    state: Option<ProbedState>,
}

impl IdleWatch {
    /// A watch for a vCPU that starts running at `now`.
    pub fn new(now: Instant) -> Self {
        IdleWatch {
            last: None,
            after_probe: false,
            next_probe: now + SETTLE,
            interval: SETTLE,
            state: None,
        }
    }

    /// Takes the thread's CPU time at `now`; true when it is time to probe the vCPU.
    pub fn observe(&mut self, activity: Option<u64>, now: Instant) -> bool {
        if self.after_probe {
            self.after_probe = false;
        } else if activity.is_some() && activity != self.last {
            // It ran: whatever the last probe found may have changed.
            self.state = None;
            self.interval = SETTLE;
            self.next_probe = now + SETTLE;
        }
        self.last = activity;
        now >= self.next_probe
    }

    /// Records what a probe at `now` found, and schedules the next one.
    pub fn probed(&mut self, state: ProbedState, now: Instant) {
        self.state = Some(state);
        self.after_probe = true;
        self.interval = (self.interval * 2).min(MAX_INTERVAL);
        self.next_probe = now + self.interval;
    }

    /// What the last probe found, while the vCPU has not run since.
    pub fn state(&self) -> Option<ProbedState> {
        self.state
    }
}

/// True when no vCPU can run again: each is halted with interrupts off or was never started,
/// and at least one halted.
pub fn all_stuck<'a>(watches: impl Iterator<Item = &'a IdleWatch> + Clone) -> bool {
    let stuck = |s: Option<ProbedState>| {
        matches!(
            s,
            Some(ProbedState::HaltedIrqsOff | ProbedState::NotStarted)
        )
    };
    watches.clone().all(|w| stuck(w.state()))
        && watches
            .into_iter()
            .any(|w| w.state() == Some(ProbedState::HaltedIrqsOff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbedState::*;

    fn watch_with(state: ProbedState) -> IdleWatch {
        let now = Instant::now();
        let mut w = IdleWatch::new(now);
        w.probed(state, now);
        w
    }

    #[test]
    fn test_idle_watch_probes_only_after_settling() {
        let start = Instant::now();
        let mut w = IdleWatch::new(start);
        assert!(!w.observe(Some(1), start));
        assert!(!w.observe(Some(1), start + SETTLE / 2));
        assert!(w.observe(Some(1), start + SETTLE));
    }

    #[test]
    fn test_idle_watch_backs_off_while_the_vcpu_stays_still() {
        let start = Instant::now();
        let mut w = IdleWatch::new(start);
        let mut now = start + SETTLE;
        let mut probes = Vec::new();
        // Ten minutes of observations every 250 ms of a vCPU that never runs.
        while now < start + Duration::from_secs(600) {
            if w.observe(Some(5), now) {
                probes.push(now - start);
                w.probed(Running, now);
            }
            now += Duration::from_millis(250);
        }
        assert!(probes.len() <= 16, "{probes:?}");
        let gaps: Vec<_> = probes.windows(2).map(|p| p[1] - p[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps
            .iter()
            .all(|g| *g <= MAX_INTERVAL + Duration::from_millis(250)));
    }

    #[test]
    fn test_idle_watch_forgets_the_probe_when_the_vcpu_runs() {
        let start = Instant::now();
        let mut w = IdleWatch::new(start);
        w.observe(Some(1), start);
        w.probed(HaltedIrqsOff, start + SETTLE);
        // The probe itself makes the thread run once: not the guest.
        assert!(!w.observe(Some(2), start + SETTLE * 2));
        assert_eq!(w.state(), Some(HaltedIrqsOff));
        w.observe(Some(3), start + SETTLE * 3);
        assert_eq!(w.state(), None);
    }

    #[test]
    fn test_all_stuck_halted_bsp_and_unstarted_aps() {
        let w = [
            watch_with(HaltedIrqsOff),
            watch_with(NotStarted),
            watch_with(NotStarted),
        ];
        assert!(all_stuck(w.iter()));
    }

    #[test]
    fn test_all_stuck_one_running_vcpu_keeps_guest_alive() {
        let w = [watch_with(HaltedIrqsOff), watch_with(Running)];
        assert!(!all_stuck(w.iter()));
    }

    #[test]
    fn test_all_stuck_nothing_halted_is_not_stuck() {
        let w = [watch_with(NotStarted)];
        assert!(!all_stuck(w.iter()));
    }

    #[test]
    fn test_all_stuck_unprobed_vcpu_is_not_stuck() {
        let w = [watch_with(HaltedIrqsOff), IdleWatch::new(Instant::now())];
        assert!(!all_stuck(w.iter()));
    }

    #[test]
    fn test_activity_reads_another_threads_cpu_clock() {
        use std::os::unix::thread::JoinHandleExt;
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (ready, ran_enough) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::spawn(move || {
            // Runs 10 ms of CPU time, however long that takes on a loaded machine, then waits
            // (off the CPU) until told to end.
            let own = || {
                // SAFETY: `pthread_self` is this live thread.
                activity(unsafe { libc::pthread_self() }).unwrap()
            };
            while own() < 10_000_000 {}
            ready.send(()).unwrap();
            let _ = wait.recv();
        });
        let thread = busy.as_pthread_t();
        ran_enough.recv().unwrap();
        let ran = activity(thread).expect("the thread's CPU clock");
        assert!(ran >= 10_000_000, "{ran} ns");
        // Waiting (surely, after a while), it runs no more.
        std::thread::sleep(Duration::from_millis(20));
        let waiting = activity(thread);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(activity(thread), waiting);
        go.send(()).unwrap();
        busy.join().unwrap();
    }
}
