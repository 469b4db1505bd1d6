//! fennec's ACPI power registers: what a guest with ACPI (a distribution kernel) uses to power
//! off and reset, and the event register behind the power button.
//!
//! The machine is hardware-reduced ACPI: no PM1 blocks and no SCI. Four byte-wide registers in
//! port I/O, which the FADT and the DSDT point at:
//!
//! | offset | register | |
//! | --- | --- | --- |
//! | 0 | sleep control | the guest writes `SLP_TYP << 2 \| SLP_EN`; soft-off ([`S5_SLEEP_TYPE`]) powers off |
//! | 1 | sleep status | reads 0: the machine never wakes from a sleep it did not enter |
//! | 2 | reset | writing [`RESET_VALUE`] resets |
//! | 3 | events | the generic event device's: reading returns the pending events ([`POWER_BUTTON`]) and clears them |
//!
//! [`AcpiPower::press_power_button`] sets the event and raises the generic event device's
//! interrupt; the guest's `_EVT` method reads the register and notifies the power button, and
//! its OS (systemd-logind on most distributions) powers off.

use vm_superio::Trigger;

use crate::bus::{byte_register, BusDevice};

/// Offset of the sleep control register.
pub const SLEEP_CONTROL: u8 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS: u8 = 1;
/// Offset of the reset register.
pub const RESET: u8 = 2;
/// Offset of the generic event device's event register.
pub const EVENTS: u8 = 3;

/// The value that resets the machine when written to the reset register.
pub const RESET_VALUE: u8 = 0x0f;
/// The `SLP_TYP` of soft-off, as the DSDT's `\_S5` gives it.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The power button's bit in the event register.
pub const POWER_BUTTON: u8 = 1 << 0;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The four registers and what they signal.
pub struct AcpiPower<T: Trigger> {
    power_off: T,
    reset: T,
    event_irq: T,
    events: u8,
}

impl<T: Trigger> AcpiPower<T>
where
    T::E: std::fmt::Display,
{
    /// The enabled events, for a snapshot.
    pub fn save(&self) -> u8 {
        self.events
    }

    /// Puts a snapshot's enabled events back.
    pub fn restore(&mut self, events: u8) {
        self.events = events;
    }

    /// Registers that fire `power_off` when the guest enters soft-off, `reset` when it resets,
    /// and `event_irq` (the generic event device's interrupt) when an event is pending.
    pub fn new(power_off: T, reset: T, event_irq: T) -> Self {
        AcpiPower {
            power_off,
            reset,
            event_irq,
            events: 0,
        }
    }

    /// Presses the power button: sets its event and raises the interrupt.
    pub fn press_power_button(&mut self) -> Result<(), T::E> {
        self.events |= POWER_BUTTON;
        self.event_irq.trigger()
    }

    fn sleep(&mut self, value: u8) {
        if value & SLP_EN == 0 {
            return;
        }
        let kind = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if kind != S5_SLEEP_TYPE {
            // S1 to S4 need a wake-up path fennec does not have; the guest is told only of S5.
            crate::warn_guest!(
                "ACPI: the guest asked for sleep type {kind}, which fennec does not have"
            );
            return;
        }
        if let Err(e) = self.power_off.trigger() {
            log::error!("ACPI: failed to signal the guest's power-off: {e}");
        }
    }
}

impl<T: Trigger + Send> BusDevice for AcpiPower<T>
where
    T::E: std::fmt::Display,
{
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if byte_register(offset, data.len()) == Some(EVENTS) {
            data[0] = std::mem::take(&mut self.events);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match byte_register(offset, data.len()) {
            Some(SLEEP_CONTROL) => self.sleep(data[0]),
            Some(RESET) if data[0] == RESET_VALUE => {
                if let Err(e) = self.reset.trigger() {
                    log::error!("ACPI: failed to signal the guest's reset: {e}");
                }
            }
            _ => {}
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

    impl Count {
        fn get(&self) -> u32 {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Trigger for Count {
        type E = std::io::Error;
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn device() -> (AcpiPower<Count>, Count, Count, Count) {
        let (off, reset, irq) = (Count::default(), Count::default(), Count::default());
        (
            AcpiPower::new(off.clone(), reset.clone(), irq.clone()),
            off,
            reset,
            irq,
        )
    }

    #[test]
    fn test_soft_off_powers_off_and_nothing_else_does() {
        let (mut d, off, reset, _) = device();
        // SLP_TYP=5 without SLP_EN, other sleep types, the status register: nothing.
        for (offset, value) in [
            (SLEEP_CONTROL, S5_SLEEP_TYPE << 2),
            (SLEEP_CONTROL, (3 << 2) | SLP_EN),
            (SLEEP_STATUS, 0xff),
            (RESET, 0x0e),
            (EVENTS, 0xff),
        ] {
            d.write(u64::from(offset), &[value]);
        }
        // A wide access is not the byte register.
        d.write(
            u64::from(SLEEP_CONTROL),
            &[(S5_SLEEP_TYPE << 2) | SLP_EN, 0],
        );
        assert_eq!((off.get(), reset.get()), (0, 0));
        d.write(u64::from(SLEEP_CONTROL), &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert_eq!((off.get(), reset.get()), (1, 0));
    }

    #[test]
    fn test_reset_value_resets() {
        let (mut d, off, reset, _) = device();
        d.write(u64::from(RESET), &[RESET_VALUE]);
        assert_eq!((off.get(), reset.get()), (0, 1));
    }

    #[test]
    fn test_power_button_raises_the_interrupt_and_reading_clears_the_event() {
        let (mut d, _, _, irq) = device();
        let mut byte = [0xaa];
        d.read(u64::from(EVENTS), &mut byte);
        assert_eq!(byte, [0]);
        d.press_power_button().unwrap();
        assert_eq!(irq.get(), 1);
        d.read(u64::from(EVENTS), &mut byte);
        assert_eq!(byte, [POWER_BUTTON]);
        d.read(u64::from(EVENTS), &mut byte);
        assert_eq!(byte, [0], "the event is cleared once read");
        let mut status = [0xaa];
        d.read(u64::from(SLEEP_STATUS), &mut status);
        assert_eq!(status, [0]);
    }
}
