//! The 16550 serial console on vm-superio, and the event-loop subscriber that feeds it input.
//!
//! Output goes straight to a writer (the CLI's stdout). Input is read from a pollable fd only
//! while the guest's receive FIFO has room: when it is full, the input fd is unregistered, and the
//! serial's "input buffer empty" event (an eventfd) registers it again, so a guest that stops
//! reading its console never makes the event loop spin.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::{byte_register, BusDevice};
use crate::EventFdTrigger;

/// Serial counters, shared with whoever reports metrics.
#[derive(Debug, Default, serde::Serialize)]
pub struct SerialMetrics {
    /// Bytes the guest wrote to the console.
    pub bytes_out: AtomicU64,
    /// Bytes the guest could not write (the writer failed).
    pub bytes_lost: AtomicU64,
    /// Bytes handed to the guest as input.
    pub bytes_in: AtomicU64,
}

/// Serial events: counts, and the eventfd that says the guest drained its input FIFO.
pub struct ConsoleEvents {
    metrics: Arc<SerialMetrics>,
    buffer_ready: EventFd,
}

impl SerialEvents for ConsoleEvents {
    fn buffer_read(&self) {}

    fn out_byte(&self) {
        self.metrics.bytes_out.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.metrics.bytes_lost.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {
        if let Err(e) = self.buffer_ready.write(1) {
            log::debug!("Failed to signal serial input room: {e}");
        }
    }
}

/// A boxed console writer.
pub type ConsoleOut = Box<dyn Write + Send>;

/// The 16550's registers and receive FIFO in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    #[serde(deserialize_with = "fifo")]
    pub in_buffer: Vec<u8>,
}

/// A snapshot's receive FIFO: at most what the 16550's holds.
fn fifo<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    // The 16550's receive FIFO, as vm-superio keeps it.
    crate::bounded::vec(d, 64)
}

/// The serial port on the PIO bus.
pub struct SerialDevice {
    inner: Serial<EventFdTrigger, ConsoleEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A serial port that raises its interrupt on `irq` and writes the guest's output to `out`.
    /// Returns the device and the eventfd that fires when its input FIFO has room again.
    pub fn new(
        irq: EventFdTrigger,
        out: ConsoleOut,
        metrics: Arc<SerialMetrics>,
    ) -> io::Result<(Self, EventFd)> {
        let buffer_ready = EventFd::new(EFD_NONBLOCK)?;
        let events = ConsoleEvents {
            metrics,
            buffer_ready: buffer_ready.try_clone()?,
        };
        Ok((
            SerialDevice {
                inner: Serial::with_events(irq, events, out),
            },
            buffer_ready,
        ))
    }

    /// [`SerialDevice::new`] with the registers and receive FIFO of a snapshot.
    pub fn restored(
        irq: EventFdTrigger,
        out: ConsoleOut,
        metrics: Arc<SerialMetrics>,
        state: &SerialSnapshot,
    ) -> io::Result<(Self, EventFd)> {
        let buffer_ready = EventFd::new(EFD_NONBLOCK)?;
        let events = ConsoleEvents {
            metrics,
            buffer_ready: buffer_ready.try_clone()?,
        };
        let serial_state = vm_superio::serial::SerialState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        let inner = Serial::from_state(&serial_state, irq, events, out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        Ok((SerialDevice { inner }, buffer_ready))
    }

    /// The registers and receive FIFO, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        let s = self.inner.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// The registers a driver's interrupt handling depends on, in one line, read without side
    /// effects (a guest read of IIR clears it): interrupt enable, interrupt identification,
    /// line status, line and modem control, and the bytes waiting in the receive FIFO.
    pub fn describe(&self) -> String {
        let s = self.inner.state();
        format!(
            "serial: IER={:#04x} IIR={:#04x} LSR={:#04x} LCR={:#04x} MCR={:#04x} input-fifo={}",
            s.interrupt_enable,
            s.interrupt_identification,
            s.line_status,
            s.line_control,
            s.modem_control,
            s.in_buffer.len()
        )
    }

    /// Room left in the receive FIFO.
    pub fn fifo_capacity(&self) -> usize {
        self.inner.fifo_capacity()
    }

    /// Queues input for the guest and raises the receive interrupt if the guest enabled it.
    pub fn enqueue(&mut self, bytes: &[u8]) -> usize {
        match self.inner.enqueue_raw_bytes(bytes) {
            Ok(n) => {
                self.inner
                    .events()
                    .metrics
                    .bytes_in
                    .fetch_add(n as u64, Ordering::Relaxed);
                n
            }
            Err(e) => {
                log::debug!("Serial input dropped: {e:?}");
                0
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(reg) = byte_register(offset, data.len()) {
            data[0] = self.inner.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(reg) = byte_register(offset, data.len()) else {
            return;
        };
        let before = self.inner.state();
        if let Err(e) = self.inner.write(reg, data[0]) {
            log::debug!("Serial write at offset {offset} failed: {e:?}");
        }
        if reg == IER && before.line_control & LCR_DLAB == 0 && reasserts(&before, data[0]) {
            if let Err(e) = self.inner.interrupt_evt().trigger() {
                log::debug!("Failed to raise the serial interrupt: {e}");
            }
        }
    }
}

const IER: u8 = 1;
const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_THRE: u8 = 0x02;
const LCR_DLAB: u8 = 0x80;

/// Whether an IER write of `ier` must raise the interrupt again although vm-superio does not.
///
/// A 16550's interrupt output is the OR of the conditions that are both pending and enabled,
/// so enabling a condition that is already pending raises a new edge. vm-superio raises one
/// only when it sets the condition's IIR bit, and skips it when the bit is still set from an
/// earlier interrupt the driver has not yet read. Linux's 8250 console masks IER while it
/// prints and restores it afterwards, and its transmit path enables THRE only when it needs
/// the next "transmitter empty" interrupt: with the edge skipped, a pending interrupt whose
/// first edge went astray would never be raised again, and transmission would stop for good.
fn reasserts(before: &vm_superio::serial::SerialState, ier: u8) -> bool {
    let enabled = ier & !before.interrupt_enable;
    let pending = before.interrupt_identification;
    (enabled & IER_THRE != 0 && pending & IIR_THRE != 0)
        || (enabled & IER_RDA != 0 && pending & IIR_RDA != 0)
}

/// A readable console input: the CLI's stdin, a pipe, a socket.
pub trait ConsoleIn: Read + AsRawFd + Send {}
impl<T: Read + AsRawFd + Send> ConsoleIn for T {}

const EVENT_INPUT: u32 = 0;
const EVENT_BUFFER_READY: u32 = 1;

/// Event-loop subscriber moving console input into the serial port.
pub struct SerialInput {
    serial: Arc<Mutex<SerialDevice>>,
    input: Box<dyn ConsoleIn>,
    buffer_ready: EventFd,
    input_registered: bool,
    input_closed: bool,
}

impl SerialInput {
    /// Feeds `input` into `serial`; `buffer_ready` is the eventfd [`SerialDevice::new`] returned.
    pub fn new(
        serial: Arc<Mutex<SerialDevice>>,
        input: Box<dyn ConsoleIn>,
        buffer_ready: EventFd,
    ) -> Self {
        SerialInput {
            serial,
            input,
            buffer_ready,
            input_registered: false,
            input_closed: false,
        }
    }

    fn input_fd(&self) -> RawFd {
        self.input.as_raw_fd()
    }

    fn register_input(&mut self, ops: &mut EventOps) {
        if self.input_registered || self.input_closed {
            return;
        }
        let event = Events::with_data_raw(self.input_fd(), EVENT_INPUT, EventSet::IN);
        match ops.add(event) {
            Ok(()) => self.input_registered = true,
            Err(e) => {
                // Regular files and /dev/null cannot be polled: the guest just gets no input.
                log::debug!("Console input cannot be polled, guest input disabled: {e:?}");
                self.input_closed = true;
            }
        }
    }

    fn unregister_input(&mut self, ops: &mut EventOps) {
        if !self.input_registered {
            return;
        }
        let event = Events::with_data_raw(self.input_fd(), EVENT_INPUT, EventSet::IN);
        if let Err(e) = ops.remove(event) {
            log::debug!("Failed to unregister console input: {e:?}");
        }
        self.input_registered = false;
    }

    fn handle_input(&mut self, ops: &mut EventOps) {
        let room = crate::lock(&self.serial).fifo_capacity();
        if room == 0 {
            // Full FIFO: wait for the guest to drain it (EVENT_BUFFER_READY).
            self.unregister_input(ops);
            return;
        }
        let mut buf = [0u8; 64];
        let want = room.min(buf.len());
        match self.input.read(&mut buf[..want]) {
            Ok(0) => {
                log::debug!("Console input reached end of file");
                self.unregister_input(ops);
                self.input_closed = true;
            }
            Ok(n) => {
                crate::lock(&self.serial).enqueue(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                log::warn!("Console input failed, guest input disabled: {e}");
                self.unregister_input(ops);
                self.input_closed = true;
            }
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            EVENT_INPUT => {
                if events
                    .event_set()
                    .intersects(EventSet::HANG_UP | EventSet::ERROR)
                    && !events.event_set().contains(EventSet::IN)
                {
                    self.unregister_input(ops);
                    self.input_closed = true;
                } else {
                    self.handle_input(ops);
                }
            }
            EVENT_BUFFER_READY => {
                // Drain the counter; the FIFO has room again.
                let _ = self.buffer_ready.read();
                self.register_input(ops);
            }
            other => log::debug!("Unexpected serial input event {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let ready = Events::with_data(&self.buffer_ready, EVENT_BUFFER_READY, EventSet::IN);
        if let Err(e) = ops.add(ready) {
            log::error!("Failed to register serial input-room eventfd: {e:?}");
        }
        self.register_input(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn serial() -> (SerialDevice, Sink, EventFd, Arc<SerialMetrics>) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let sink = Sink::default();
        let metrics = Arc::new(SerialMetrics::default());
        let (dev, _ready) = SerialDevice::new(
            EventFdTrigger::new(irq.try_clone().unwrap()),
            Box::new(sink.clone()),
            metrics.clone(),
        )
        .unwrap();
        (dev, sink, irq, metrics)
    }

    #[test]
    fn test_serial_ier_enable_reraises_a_pending_thre_interrupt() {
        let (mut dev, _sink, irq, _metrics) = serial();
        dev.write(1, &[0x02]); // IER: THRE on; the transmitter is empty, so it fires
        assert_eq!(irq.read().unwrap(), 1);
        // The driver masks IER (as Linux's console does while it prints) without reading IIR,
        // so the THRE interrupt stays pending; enabling it again is a new edge.
        dev.write(1, &[0x00]);
        dev.write(0, b"x");
        dev.write(1, &[0x02]);
        assert_eq!(irq.read().unwrap(), 1);
        assert!(dev.describe().contains("IIR=0x02"), "{}", dev.describe());
    }

    #[test]
    fn test_serial_ier_rewrite_without_enabling_raises_nothing() {
        let (mut dev, _sink, irq, _metrics) = serial();
        dev.write(1, &[0x02]);
        assert_eq!(irq.read().unwrap(), 1);
        dev.write(1, &[0x03]); // THRE stays enabled: no new edge for it
        assert!(irq.read().is_err());
    }

    #[test]
    fn test_serial_ier_write_with_dlab_set_is_the_divisor() {
        let (mut dev, _sink, irq, _metrics) = serial();
        dev.write(1, &[0x02]);
        assert_eq!(irq.read().unwrap(), 1);
        dev.write(1, &[0x00]);
        dev.write(3, &[0x80]); // LCR: DLAB on, offset 1 is the divisor's high byte
        dev.write(1, &[0x02]);
        assert!(irq.read().is_err());
    }

    #[test]
    fn test_serial_describe_reads_iir_without_clearing_it() {
        let (mut dev, _sink, _irq, _metrics) = serial();
        dev.write(1, &[0x02]); // IER: THR empty interrupt on, which raises it at once
        let first = dev.describe();
        assert!(first.contains("IER=0x02 IIR=0x02"), "{first}");
        assert_eq!(dev.describe(), first);
    }

    #[test]
    fn test_serial_thr_write_reaches_output_and_counts() {
        let (mut dev, sink, _irq, metrics) = serial();
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert_eq!(metrics.bytes_out.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn test_serial_enqueued_input_readable_from_rbr() {
        let (mut dev, _sink, _irq, metrics) = serial();
        assert_eq!(dev.enqueue(b"ab"), 2);
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        dev.read(0, &mut rbr);
        assert_eq!(rbr[0], b'a');
        assert_eq!(metrics.bytes_in.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn test_serial_input_interrupt_raised_when_enabled() {
        let (mut dev, _sink, irq, _metrics) = serial();
        dev.write(1, &[0x01]); // IER: received data available
        dev.enqueue(b"x");
        assert!(irq.read().unwrap() >= 1);
    }

    #[test]
    fn test_serial_wide_access_ignored_reads_zero() {
        let (mut dev, sink, _irq, _metrics) = serial();
        dev.write(0, b"ab");
        let mut data = [0xffu8; 2];
        dev.read(5, &mut data);
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(data, [0, 0]);
    }

    #[test]
    fn test_serial_full_fifo_accepts_no_more() {
        let (mut dev, _sink, _irq, _metrics) = serial();
        let cap = dev.fifo_capacity();
        assert_eq!(dev.enqueue(&vec![b'z'; cap]), cap);
        assert_eq!(dev.fifo_capacity(), 0);
        assert_eq!(dev.enqueue(b"more"), 0);
    }
}
