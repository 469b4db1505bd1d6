//! The boot timer: one MMIO byte a guest writes [`MAGIC`] to when it is up (its init, before it
//! starts its work), and the VMM learns how long the boot took from a point it chose, usually
//! its own process start. Boot time is then measured the same way on every machine, by tests
//! and benchmarks, with no console parsing. Only the first report counts; other writes and every
//! read are ignored (reads give 0).
//!
//! From a Linux guest's shell: `devmem 0xc0000000 8 123` (busybox), or any `/dev/mem` writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::bus::BusDevice;

/// The value that reports the boot done.
pub const MAGIC: u8 = 123;

/// The boot time, once reported: microseconds from the VMM's start point, 0 until then.
#[derive(Debug, Default)]
pub struct BootTime(AtomicU64);

impl BootTime {
    /// The boot time in microseconds, if the guest has reported it.
    pub fn micros(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us),
        }
    }
}

/// The device.
pub struct BootTimer {
    start: Instant,
    time: Arc<BootTime>,
}

impl BootTimer {
    /// A boot timer counting from `start`, publishing into `time`.
    pub fn new(start: Instant, time: Arc<BootTime>) -> Self {
        BootTimer { start, time }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.first() != Some(&MAGIC) || self.time.micros().is_some() {
            return;
        }
        let us = (self.start.elapsed().as_micros() as u64).max(1);
        self.time.0.store(us, Ordering::Relaxed);
        log::info!(
            "Guest boot time: {}.{:03} ms since fennec started",
            us / 1000,
            us % 1000
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn test_the_first_magic_write_reports_and_nothing_else_does() {
        let time = Arc::new(BootTime::default());
        let start = Instant::now() - Duration::from_millis(5);
        let mut timer = BootTimer::new(start, time.clone());
        timer.write(0, &[MAGIC - 1]);
        timer.write(1, &[MAGIC]);
        timer.write(0, &[]);
        assert_eq!(time.micros(), None);
        timer.write(0, &[MAGIC]);
        let first = time.micros().expect("reported");
        assert!(first >= 5_000, "{first} µs");
        std::thread::sleep(Duration::from_millis(2));
        timer.write(0, &[MAGIC]);
        assert_eq!(time.micros(), Some(first), "only the first report counts");
        let mut byte = [0xff];
        timer.read(0, &mut byte);
        assert_eq!(byte, [0]);
    }
}
