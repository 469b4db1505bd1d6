//! Noticing a guest that can never run again, without waking one that is merely idle.
//!
//! A guest that halts every vCPU with interrupts disabled is dead: only an NMI or INIT would
//! wake it, and fennec sends neither. Telling that from an idle guest (halted, interrupts on,
//! waiting for a timer) needs the vCPU's registers, which only the vCPU thread can read, so it
//! has to be kicked out of `KVM_RUN` and asked. [`IdleWatch`] decides when: it reads the
//! thread's scheduler counters from `/proc` (which does not disturb it) and asks only once a
//! vCPU has been still for a while, then again after longer and longer pauses (up to
//! [`MAX_INTERVAL`]) while it stays still. A vCPU that runs starts over. An idle guest is
//! woken a few times in its first seconds of idleness, then about once a minute.

use std::time::{Duration, Instant};

use super::ProbedState;

/// How long a vCPU must be still before it is first probed.
pub const SETTLE: Duration = Duration::from_millis(500);
/// The longest pause between two probes of a vCPU that stays still.
pub const MAX_INTERVAL: Duration = Duration::from_secs(64);

/// A thread's scheduler counters: nanoseconds on a CPU, and times it was scheduled in. `None`
/// where the kernel does not report them (no `schedstat`); probes then follow the schedule
/// alone.
pub fn activity(tid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut fields = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let on_cpu = fields.next()??;
    let _waiting = fields.next()??;
    let slices = fields.next()??;
    Some((on_cpu, slices))
}

/// One vCPU's probing schedule and what its last probe found.
#[derive(Debug)]
pub struct IdleWatch {
    last: Option<(u64, u64)>,
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

    /// Takes the thread's counters at `now`; true when it is time to probe the vCPU.
    pub fn observe(&mut self, activity: Option<(u64, u64)>, now: Instant) -> bool {
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
        assert!(!w.observe(Some((1, 1)), start));
        assert!(!w.observe(Some((1, 1)), start + SETTLE / 2));
        assert!(w.observe(Some((1, 1)), start + SETTLE));
    }

    #[test]
    fn test_idle_watch_backs_off_while_the_vcpu_stays_still() {
        let start = Instant::now();
        let mut w = IdleWatch::new(start);
        let mut now = start + SETTLE;
        let mut probes = Vec::new();
        // Ten minutes of observations every 250 ms of a vCPU that never runs.
        while now < start + Duration::from_secs(600) {
            if w.observe(Some((5, 5)), now) {
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
        w.observe(Some((1, 1)), start);
        w.probed(HaltedIrqsOff, start + SETTLE);
        // The probe itself makes the thread run once: not the guest.
        assert!(!w.observe(Some((2, 2)), start + SETTLE * 2));
        assert_eq!(w.state(), Some(HaltedIrqsOff));
        w.observe(Some((3, 3)), start + SETTLE * 3);
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
    fn test_activity_reads_this_thread() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // Off the CPU and back: scheduled in at least once more.
        std::thread::sleep(Duration::from_millis(2));
        let (on_cpu, slices) = activity(tid).expect("schedstat of this thread");
        assert!(on_cpu > 0, "{on_cpu}");
        assert!(slices > 0, "{slices}");
        std::thread::sleep(Duration::from_millis(2));
        assert_ne!(activity(tid), Some((on_cpu, slices)));
    }
}
