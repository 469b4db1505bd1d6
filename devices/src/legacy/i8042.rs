//! The i8042 keyboard controller, as far as a guest needs it: the CPU reset command.
//!
//! Linux resets through it with `reboot=k`; the VMM sees the reset eventfd fire.

use vm_superio::I8042Device;

use crate::bus::{byte_register, BusDevice};
use crate::EventFdTrigger;

/// The i8042 at ports 0x60 (data) and 0x64 (status/command).
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// An i8042 that signals `reset` when the guest asks for a CPU reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        I8042 {
            inner: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(reg) = byte_register(offset, data.len()) {
            data[0] = self.inner.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(reg) = byte_register(offset, data.len()) {
            if let Err(e) = self.inner.write(reg, data[0]) {
                log::error!("Failed to signal the guest's reset request: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn device() -> (I8042, EventFd) {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        (
            I8042::new(EventFdTrigger::new(evt.try_clone().unwrap())),
            evt,
        )
    }

    #[test]
    fn test_i8042_reset_command_signals_reset() {
        let (mut dev, evt) = device();
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn test_i8042_other_writes_do_not_reset() {
        let (mut dev, evt) = device();
        dev.write(0, &[0xfe]);
        dev.write(4, &[0xfe, 0xfe]);
        dev.write(4, &[0xaa]);
        assert!(evt.read().is_err());
    }

    #[test]
    fn test_i8042_status_reads_ready() {
        let (mut dev, _evt) = device();
        let mut data = [0xff; 2];
        dev.read(4, &mut data);
        assert_eq!(data, [0, 0]);
    }
}
