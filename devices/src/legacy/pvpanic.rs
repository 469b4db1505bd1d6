//! The pvpanic device: one byte-wide register through which a guest kernel tells the VMM that
//! it panicked, before `panic=N` reboots it (or it spins forever with `panic=0`), so the VMM can
//! say "the guest kernel panicked" instead of "the guest reset".
//!
//! It is QEMU's ISA flavour: ACPI names it `QEMU0001` with one I/O port, and Linux's
//! `pvpanic-mmio` driver (`CONFIG_PVPANIC_MMIO`, a module in Debian's kernels, loaded by udev
//! from the ACPI ID) binds to it. Reading the register gives the events the device takes
//! ([`PANICKED`] only); the driver's panic notifier writes [`PANICKED`].

use vm_superio::Trigger;

use crate::bus::{byte_register, BusDevice};

/// The event a panicking kernel writes.
pub const PANICKED: u8 = 1 << 0;
/// The event a kernel writes once a crash kernel is loaded: not offered, since fennec has no use
/// for it, so a guest never sends it.
pub const CRASH_LOADED: u8 = 1 << 1;

/// The register, and what it fires when the guest panics.
pub struct PvPanic<T: Trigger> {
    panicked: T,
}

impl<T: Trigger> PvPanic<T>
where
    T::E: std::fmt::Display,
{
    /// A register that fires `panicked` when the guest writes [`PANICKED`].
    pub fn new(panicked: T) -> Self {
        PvPanic { panicked }
    }
}

impl<T: Trigger + Send> BusDevice for PvPanic<T>
where
    T::E: std::fmt::Display,
{
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if byte_register(offset, data.len()) == Some(0) {
            data[0] = PANICKED;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if byte_register(offset, data.len()) != Some(0) || data[0] & PANICKED == 0 {
            return;
        }
        if let Err(e) = self.panicked.trigger() {
            log::error!("pvpanic: cannot signal the guest's panic: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[derive(Clone, Default)]
    struct Count(Arc<AtomicU32>);

    impl Trigger for Count {
        type E = std::io::Error;
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn test_pvpanic_offers_only_panicked() {
        let mut dev = PvPanic::new(Count::default());
        let mut byte = [0xffu8];
        dev.read(0, &mut byte);
        assert_eq!(byte, [PANICKED]);
        let mut wide = [0xffu8; 2];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0, 0]);
    }

    #[test]
    fn test_pvpanic_write_of_panicked_fires_once_per_write() {
        let count = Count::default();
        let mut dev = PvPanic::new(count.clone());
        dev.write(0, &[PANICKED]);
        dev.write(0, &[PANICKED | CRASH_LOADED]);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn test_pvpanic_ignores_other_events_widths_and_offsets() {
        let count = Count::default();
        let mut dev = PvPanic::new(count.clone());
        dev.write(0, &[CRASH_LOADED]);
        dev.write(0, &[0]);
        dev.write(0, &[PANICKED, 0]);
        dev.write(1, &[PANICKED]);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }
}
