//! The i8042 keyboard controller, as far as a VM needs it: the CPU reset a guest asks for, and a
//! keyboard that can press Ctrl-Alt-Del, which is how the host asks a guest to shut down.
//!
//! Linux resets through the controller with `reboot=k` (command 0xfe, or clearing the reset
//! line of the output port); the VMM sees the reset trigger fire. [`I8042::ctrl_alt_del`] queues
//! the key presses in scan code set 2 and raises IRQ 1. The controller starts with translation
//! off, so Linux's i8042 driver uses the keyboard in direct mode and its atkbd driver reads set 2
//! codes. The keyboard itself answers every command byte with an ACK (and a reset with the
//! self-test pass code), which is all a guest booted with `i8042.dumbkbd` asks of it.
//!
//! There is no auxiliary (mouse) port, and the controller says so at once: its interface test
//! reports the AUX clock line stuck, and a loopback through it never comes back as AUX data.
//! Linux probes the port unless booted with `i8042.noaux`; a controller that leaves the probe to
//! time out (ignoring the AUX-disable bit, say) costs a guest a third of a second.

use std::collections::VecDeque;

use vm_superio::Trigger;

use crate::bus::{byte_register, BusDevice};

/// Data port offset (0x60).
const DATA: u8 = 0;
/// Status (read) and command (write) port offset (0x64).
const STATUS: u8 = 4;

// Status register bits.
const SR_OUTPUT_FULL: u8 = 1 << 0;
const SR_SYSTEM_FLAG: u8 = 1 << 2;
const SR_LAST_WAS_COMMAND: u8 = 1 << 3;
const SR_KEYBOARD_UNLOCKED: u8 = 1 << 4;
/// The output byte came from the AUX port; never set, there is none.
/// A snapshot's output buffer: at most what the controller holds.
fn output<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    crate::bounded::vec(d, OUTPUT_CAPACITY)
}

#[cfg(test)]
const SR_AUX_DATA: u8 = 1 << 5;

// Controller configuration byte ("command byte") bits.
const CCB_KEYBOARD_IRQ: u8 = 1 << 0;
const CCB_SYSTEM_FLAG: u8 = 1 << 2;
const CCB_KEYBOARD_DISABLED: u8 = 1 << 4;
const CCB_AUX_DISABLED: u8 = 1 << 5;

// Controller commands (written to 0x64).
const CMD_READ_CCB: u8 = 0x20;
const CMD_WRITE_CCB: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KEYBOARD: u8 = 0xab;
const CMD_DISABLE_KEYBOARD: u8 = 0xad;
const CMD_ENABLE_KEYBOARD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_AUX_LOOPBACK: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

// Output port bit 0 is the CPU reset line (active low).
const OUTPUT_PORT_RESET_LINE: u8 = 1 << 0;
const OUTPUT_PORT_DEFAULT: u8 = 0x03;

// Controller and keyboard replies.
const SELF_TEST_PASSED: u8 = 0x55;
const PORT_TEST_PASSED: u8 = 0x00;
/// The interface test's answer for the absent AUX port: its clock line is stuck high.
const AUX_TEST_CLOCK_STUCK: u8 = 0x02;
const KEYBOARD_ACK: u8 = 0xfa;
const KEYBOARD_BAT_PASSED: u8 = 0xaa;
const KEYBOARD_CMD_RESET: u8 = 0xff;
const KEYBOARD_CMD_GET_ID: u8 = 0xf2;
const KEYBOARD_ID: [u8; 2] = [0xab, 0x83];

/// Ctrl, Alt and Delete pressed, in scan code set 2.
const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];

/// Bytes the controller holds for the guest; a real one holds one, a guest that does not read
/// loses what comes after these.
const OUTPUT_CAPACITY: usize = 16;

/// The i8042's state in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// The controller configuration byte.
    pub config: u8,
    /// The output port.
    pub output_port: u8,
    /// The last port-0x64 write was a command.
    pub last_was_command: bool,
    /// Where the next data byte goes (0 keyboard, 1 configuration byte, 2 output port, 3 AUX
    /// loopback, 4 AUX device).
    pub data_target: u8,
    /// Bytes waiting for the guest.
    #[serde(deserialize_with = "output")]
    pub output: Vec<u8>,
}

/// What the next byte written to the data port is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataTarget {
    Keyboard,
    ConfigByte,
    OutputPort,
    /// A byte to echo as if the AUX port had sent it: there is no port, so it comes back as
    /// the keyboard's, which tells Linux the loopback failed.
    AuxLoopback,
    /// A byte for the AUX device: there is none, it is dropped.
    AuxDevice,
}

/// The i8042 at ports 0x60 (data) and 0x64 (status/command).
pub struct I8042<T: Trigger> {
    reset: T,
    keyboard_irq: T,
    config: u8,
    output_port: u8,
    last_was_command: bool,
    data_target: DataTarget,
    output: VecDeque<u8>,
}

impl<T: Trigger> I8042<T> {
    /// A controller that fires `reset` when the guest resets the CPU through it, and
    /// `keyboard_irq` (IRQ 1) when the keyboard has bytes for the guest.
    pub fn new(reset: T, keyboard_irq: T) -> Self {
        I8042 {
            reset,
            keyboard_irq,
            config: CCB_KEYBOARD_IRQ | CCB_SYSTEM_FLAG | CCB_AUX_DISABLED,
            output_port: OUTPUT_PORT_DEFAULT,
            last_was_command: false,
            data_target: DataTarget::Keyboard,
            output: VecDeque::with_capacity(OUTPUT_CAPACITY),
        }
    }

    /// The controller's registers and output buffer, for a snapshot.
    pub fn save(&self) -> I8042State {
        I8042State {
            config: self.config,
            output_port: self.output_port,
            last_was_command: self.last_was_command,
            data_target: self.data_target as u8,
            output: self.output.iter().copied().collect(),
        }
    }

    /// Puts the registers and output buffer of a snapshot back.
    pub fn restore(&mut self, state: &I8042State) {
        self.config = state.config;
        self.output_port = state.output_port;
        self.last_was_command = state.last_was_command;
        self.data_target = match state.data_target {
            1 => DataTarget::ConfigByte,
            2 => DataTarget::OutputPort,
            3 => DataTarget::AuxLoopback,
            4 => DataTarget::AuxDevice,
            _ => DataTarget::Keyboard,
        };
        self.output = state.output.iter().copied().take(OUTPUT_CAPACITY).collect();
    }

    /// Presses Ctrl-Alt-Del on the keyboard. Fails only if the interrupt cannot be raised; with
    /// the output buffer full (a guest that never reads it) the keys are dropped.
    pub fn ctrl_alt_del(&mut self) -> Result<(), T::E> {
        if self.output.len() + CTRL_ALT_DEL.len() > OUTPUT_CAPACITY {
            log::warn!("The guest is not reading its keyboard; Ctrl-Alt-Del dropped");
            return Ok(());
        }
        self.output.extend(CTRL_ALT_DEL);
        self.keyboard_interrupt()
    }

    fn status(&self) -> u8 {
        let mut status = SR_KEYBOARD_UNLOCKED;
        if !self.output.is_empty() {
            status |= SR_OUTPUT_FULL;
        }
        if self.config & CCB_SYSTEM_FLAG != 0 {
            status |= SR_SYSTEM_FLAG;
        }
        if self.last_was_command {
            status |= SR_LAST_WAS_COMMAND;
        }
        status
    }

    fn keyboard_interrupt(&self) -> Result<(), T::E> {
        if self.config & CCB_KEYBOARD_IRQ != 0 && self.config & CCB_KEYBOARD_DISABLED == 0 {
            self.keyboard_irq.trigger()?;
        }
        Ok(())
    }

    /// Queues a reply for the guest; a full buffer drops it (the guest stopped reading).
    fn reply(&mut self, bytes: &[u8]) {
        for b in bytes {
            if self.output.len() < OUTPUT_CAPACITY {
                self.output.push_back(*b);
            }
        }
    }

    fn read_data(&mut self) -> Result<u8, T::E> {
        let byte = self.output.pop_front().unwrap_or(0);
        if !self.output.is_empty() {
            self.keyboard_interrupt()?;
        }
        Ok(byte)
    }

    fn command(&mut self, cmd: u8) -> Result<(), T::E> {
        self.last_was_command = true;
        self.data_target = DataTarget::Keyboard;
        match cmd {
            CMD_READ_CCB => self.reply(&[self.config]),
            CMD_WRITE_CCB => self.data_target = DataTarget::ConfigByte,
            CMD_SELF_TEST => self.reply(&[SELF_TEST_PASSED]),
            CMD_TEST_KEYBOARD => self.reply(&[PORT_TEST_PASSED]),
            CMD_TEST_AUX => self.reply(&[AUX_TEST_CLOCK_STUCK]),
            CMD_DISABLE_KEYBOARD => self.config |= CCB_KEYBOARD_DISABLED,
            CMD_ENABLE_KEYBOARD => self.config &= !CCB_KEYBOARD_DISABLED,
            CMD_DISABLE_AUX => self.config |= CCB_AUX_DISABLED,
            CMD_ENABLE_AUX => self.config &= !CCB_AUX_DISABLED,
            CMD_READ_OUTPUT_PORT => self.reply(&[self.output_port]),
            CMD_WRITE_OUTPUT_PORT => self.data_target = DataTarget::OutputPort,
            CMD_AUX_LOOPBACK => self.data_target = DataTarget::AuxLoopback,
            CMD_WRITE_AUX => self.data_target = DataTarget::AuxDevice,
            CMD_PULSE_RESET => self.reset.trigger()?,
            other => log::debug!("i8042: ignoring command {other:#x}"),
        }
        Ok(())
    }

    fn write_data(&mut self, byte: u8) -> Result<(), T::E> {
        self.last_was_command = false;
        match std::mem::replace(&mut self.data_target, DataTarget::Keyboard) {
            DataTarget::ConfigByte => self.config = byte,
            DataTarget::OutputPort => {
                self.output_port = byte;
                if byte & OUTPUT_PORT_RESET_LINE == 0 {
                    self.reset.trigger()?;
                }
            }
            DataTarget::AuxLoopback => {
                self.reply(&[byte]);
                self.keyboard_interrupt()?;
            }
            DataTarget::AuxDevice => {}
            DataTarget::Keyboard => {
                match byte {
                    KEYBOARD_CMD_RESET => self.reply(&[KEYBOARD_ACK, KEYBOARD_BAT_PASSED]),
                    KEYBOARD_CMD_GET_ID => {
                        self.reply(&[KEYBOARD_ACK]);
                        self.reply(&KEYBOARD_ID);
                    }
                    _ => self.reply(&[KEYBOARD_ACK]),
                }
                self.keyboard_interrupt()?;
            }
        }
        Ok(())
    }
}

impl<T: Trigger + Send> BusDevice for I8042<T>
where
    T::E: std::fmt::Display,
{
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match byte_register(offset, data.len()) {
            Some(DATA) => self.read_data(),
            Some(STATUS) => Ok(self.status()),
            _ => return,
        };
        match value {
            Ok(v) => data[0] = v,
            Err(e) => log::error!("i8042: failed to raise the keyboard interrupt: {e}"),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let result = match byte_register(offset, data.len()) {
            Some(DATA) => self.write_data(data[0]),
            Some(STATUS) => self.command(data[0]),
            _ => return,
        };
        if let Err(e) = result {
            log::error!("i8042: failed to signal the guest's reset or keyboard interrupt: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Count(Arc<AtomicU32>);

    impl Trigger for Count {
        type E = std::io::Error;
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    impl Count {
        fn get(&self) -> u32 {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn device() -> (I8042<Count>, Count, Count) {
        let (reset, irq) = (Count::default(), Count::default());
        (I8042::new(reset.clone(), irq.clone()), reset, irq)
    }

    fn read(dev: &mut I8042<Count>, port: u8) -> u8 {
        match port {
            DATA => dev.read_data().unwrap(),
            _ => dev.status(),
        }
    }

    #[test]
    fn test_i8042_pulse_reset_command_fires_reset() {
        let (mut dev, reset, _) = device();
        dev.command(CMD_PULSE_RESET).unwrap();
        assert_eq!(reset.get(), 1);
    }

    #[test]
    fn test_i8042_output_port_reset_line_low_fires_reset() {
        let (mut dev, reset, _) = device();
        dev.command(CMD_WRITE_OUTPUT_PORT).unwrap();
        dev.write_data(0x02).unwrap();
        assert_eq!(reset.get(), 1);
    }

    #[test]
    fn test_i8042_data_writes_to_keyboard_are_acked_not_resets() {
        let (mut dev, reset, irq) = device();
        dev.write_data(0xfe).unwrap();
        assert_eq!(reset.get(), 0);
        assert_eq!(irq.get(), 1);
        assert_eq!(read(&mut dev, STATUS) & SR_OUTPUT_FULL, SR_OUTPUT_FULL);
        assert_eq!(read(&mut dev, DATA), KEYBOARD_ACK);
        assert_eq!(read(&mut dev, STATUS) & SR_OUTPUT_FULL, 0);
    }

    #[test]
    fn test_i8042_config_byte_round_trips() {
        let (mut dev, _, _) = device();
        dev.command(CMD_WRITE_CCB).unwrap();
        dev.write_data(0x47).unwrap();
        dev.command(CMD_READ_CCB).unwrap();
        assert_eq!(read(&mut dev, DATA), 0x47);
    }

    #[test]
    fn test_i8042_self_test_and_keyboard_identify() {
        let (mut dev, _, _) = device();
        dev.command(CMD_SELF_TEST).unwrap();
        assert_eq!(read(&mut dev, DATA), SELF_TEST_PASSED);
        dev.write_data(KEYBOARD_CMD_GET_ID).unwrap();
        let id: Vec<u8> = (0..3).map(|_| read(&mut dev, DATA)).collect();
        assert_eq!(id, [KEYBOARD_ACK, 0xab, 0x83]);
    }

    #[test]
    fn test_i8042_ctrl_alt_del_queues_set2_codes_and_interrupts_per_byte() {
        let (mut dev, _, irq) = device();
        dev.ctrl_alt_del().unwrap();
        let codes: Vec<u8> = (0..4).map(|_| read(&mut dev, DATA)).collect();
        assert_eq!(codes, CTRL_ALT_DEL);
        // One interrupt for the first byte, one after each read that leaves more.
        assert_eq!(irq.get(), 4);
    }

    #[test]
    fn test_i8042_keyboard_irq_off_raises_nothing() {
        let (mut dev, _, irq) = device();
        dev.command(CMD_WRITE_CCB).unwrap();
        dev.write_data(CCB_SYSTEM_FLAG).unwrap();
        dev.ctrl_alt_del().unwrap();
        assert_eq!(irq.get(), 0);
    }

    #[test]
    fn test_i8042_guest_that_never_reads_cannot_grow_the_buffer() {
        let (mut dev, _, _) = device();
        for _ in 0..100 {
            dev.write_data(0xf4).unwrap();
            dev.ctrl_alt_del().unwrap();
        }
        assert_eq!(dev.output.len(), OUTPUT_CAPACITY);
    }

    /// Linux's `i8042_check_aux` in short: the loopback must fail (its reply not marked as AUX
    /// data) and the interface test must report a fault, or Linux goes on to probe the port;
    /// disabling the port must show in the configuration byte, or Linux polls it 100 times.
    #[test]
    fn test_i8042_reports_no_aux_port_without_a_timeout() {
        let (mut dev, _, _) = device();
        dev.command(CMD_AUX_LOOPBACK).unwrap();
        dev.write_data(0x5a).unwrap();
        assert_ne!(
            read(&mut dev, STATUS) & SR_OUTPUT_FULL,
            0,
            "the loopback answers"
        );
        assert_eq!(read(&mut dev, STATUS) & SR_AUX_DATA, 0, "not as AUX data");
        read(&mut dev, DATA);
        dev.command(CMD_TEST_AUX).unwrap();
        let test = read(&mut dev, DATA);
        assert!(
            ![0x00, 0xfa, 0xff].contains(&test),
            "AUX test passed: {test:#x}"
        );

        dev.command(CMD_DISABLE_AUX).unwrap();
        dev.command(CMD_READ_CCB).unwrap();
        assert_ne!(read(&mut dev, DATA) & CCB_AUX_DISABLED, 0);
        dev.command(CMD_ENABLE_AUX).unwrap();
        dev.command(CMD_READ_CCB).unwrap();
        assert_eq!(read(&mut dev, DATA) & CCB_AUX_DISABLED, 0);

        // A byte for the absent mouse is dropped, not taken as a keyboard command.
        dev.command(CMD_WRITE_AUX).unwrap();
        dev.write_data(KEYBOARD_CMD_RESET).unwrap();
        assert_eq!(read(&mut dev, STATUS) & SR_OUTPUT_FULL, 0);
    }

    #[test]
    fn test_i8042_bus_access_of_wrong_size_is_ignored() {
        let (mut dev, reset, _) = device();
        dev.write(4, &[0xfe, 0xfe]);
        let mut data = [0xff; 2];
        dev.read(4, &mut data);
        assert_eq!(reset.get(), 0);
        assert_eq!(data, [0, 0]);
    }
}
