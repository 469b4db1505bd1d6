//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2): the register block a driver uses to
//! negotiate features, set up queues and drive the device status, with the device's
//! configuration space at offset 0x100.
//!
//! Every register access is a guest action and so untrusted: wrong widths and unaligned offsets
//! read as 0 and are ignored, writes out of their phase (features after FEATURES_OK, queue
//! addresses after DRIVER_OK) are ignored, and a device that cannot start is marked
//! DEVICE_NEEDS_RESET rather than left half-running. Writing 0 to Status resets the device for
//! real: its queues, its interrupt status and everything negotiated are forgotten.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{
    features, interrupt, status, ActiveQueues, InterruptKind, Queue, QueueT, VirtioDevice,
    VirtioInterrupt,
};

#[path = "mmio_state.rs"]
mod state;
use crate::bus::BusDevice;
use crate::{lock, EventFdTrigger, Trigger};
pub use state::{MmioState, SavedQueue};

/// "virt", little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (virtio 1.x) register layout.
pub const VERSION: u32 = 2;
/// fennec's vendor ID: "FNEC".
pub const VENDOR_ID: u32 = 0x4345_4e46;
/// Size of a transport's register block plus configuration space.
pub const MMIO_LEN: u64 = 0x1000;

/// Register offsets.
pub mod reg {
    /// Magic value.
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Transport version.
    pub const VERSION: u64 = 0x004;
    /// Virtio device type.
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor ID.
    pub const VENDOR_ID: u64 = 0x00c;
    /// 32 feature bits selected by DEVICE_FEATURES_SEL.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Which 32 feature bits DEVICE_FEATURES shows.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// 32 feature bits the driver accepts.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Which 32 feature bits DRIVER_FEATURES sets.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Which queue the QUEUE_* registers address.
    pub const QUEUE_SEL: u64 = 0x030;
    /// The selected queue's maximum size.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// The selected queue's size.
    pub const QUEUE_NUM: u64 = 0x038;
    /// The selected queue is ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notification: the value is the queue index.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Why the interrupt was raised.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Acknowledges interrupt status bits.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low 32 bits.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Available ring address, high 32 bits.
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used ring address, low 32 bits.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Used ring address, high 32 bits.
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Changes whenever the configuration space changes.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// The MMIO transport's interrupt: one line, and the InterruptStatus register that tells the
/// driver why it was raised (used buffers in some queue, a configuration change). Shared by the
/// device (which raises it) and the transport (which lets the driver read and acknowledge it).
#[derive(Debug)]
pub struct MmioInterrupt {
    status: AtomicU32,
    trigger: EventFdTrigger,
}

impl MmioInterrupt {
    /// An interrupt raised through `trigger` (an irqfd's eventfd).
    pub fn new(trigger: EventFdTrigger) -> Self {
        MmioInterrupt {
            status: AtomicU32::new(0),
            trigger,
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.trigger.trigger() {
            log::warn!("Failed to raise a virtio interrupt: {e}");
        }
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

impl VirtioInterrupt for MmioInterrupt {
    /// Every queue shares the one line: the driver learns from InterruptStatus whether it was
    /// used buffers or the configuration.
    fn trigger(&self, kind: InterruptKind) {
        self.signal(match kind {
            InterruptKind::Queue(_) => interrupt::USED_BUFFER,
            InterruptKind::Config => interrupt::CONFIG_CHANGE,
        });
    }
}

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<MmioInterrupt>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    status: u8,
}

impl MmioTransport {
    /// Puts `device` behind a transport; `interrupt` is its interrupt line.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        interrupt: Arc<MmioInterrupt>,
    ) -> Self {
        let queues = lock(&device)
            .queue_max_sizes()
            .iter()
            // Queue::new only fails for a size that is 0 or not a power of two, which would be
            // a bug in the device, not something a guest can cause.
            .map(|&max| Queue::new(max).expect("device queue sizes are powers of two"))
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            queues,
            status: 0,
        }
    }

    /// The device status the driver set (and the transport accepted).
    pub fn status(&self) -> u8 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers take writes only between FEATURES_OK and DRIVER_OK.
    fn queue_setup_phase(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => lock(&self.device).device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = lock(&self.device).features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status.into(),
            reg::CONFIG_GENERATION => lock(&self.device).config_generation(),
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH => self.write_queue_register(offset, value),
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let negotiating = self.status & (status::DRIVER | status::FEATURES_OK) == status::DRIVER;
        if !negotiating {
            log::debug!("virtio-mmio: driver features written outside negotiation; ignored");
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | value,
            1 => self.acked_features = (self.acked_features & 0xffff_ffff) | (value << 32),
            _ => {}
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.queue_setup_phase() {
            log::debug!("virtio-mmio: queue register {offset:#x} written outside queue setup");
            return;
        }
        let Some(q) = self.selected_queue() else {
            log::debug!("virtio-mmio: queue register {offset:#x} written for a missing queue");
            return;
        };
        let set_low = |addr: u64| (addr & !0xffff_ffff) | u64::from(value);
        let set_high = |addr: u64| (addr & 0xffff_ffff) | (u64::from(value) << 32);
        let result = match offset {
            reg::QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => q.try_set_size(size),
                Err(_) => Err(virtio_queue::Error::InvalidSize),
            },
            reg::QUEUE_READY => {
                q.set_ready(value == 1);
                Ok(())
            }
            reg::QUEUE_DESC_LOW => {
                q.try_set_desc_table_address(GuestAddress(set_low(q.desc_table())))
            }
            reg::QUEUE_DESC_HIGH => {
                q.try_set_desc_table_address(GuestAddress(set_high(q.desc_table())))
            }
            reg::QUEUE_AVAIL_LOW => {
                q.try_set_avail_ring_address(GuestAddress(set_low(q.avail_ring())))
            }
            reg::QUEUE_AVAIL_HIGH => {
                q.try_set_avail_ring_address(GuestAddress(set_high(q.avail_ring())))
            }
            reg::QUEUE_USED_LOW => {
                q.try_set_used_ring_address(GuestAddress(set_low(q.used_ring())))
            }
            reg::QUEUE_USED_HIGH => {
                q.try_set_used_ring_address(GuestAddress(set_high(q.used_ring())))
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::debug!("virtio-mmio: queue register {offset:#x} = {value:#x} refused: {e}");
        }
    }

    /// A notification that did not go through an ioeventfd: pass it on to the device's eventfd.
    fn notify(&mut self, queue: u32) {
        if self.status & status::DRIVER_OK == 0 {
            return;
        }
        let device = lock(&self.device);
        match device.queue_events().get(queue as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    log::warn!("virtio-mmio: failed to pass on a queue notification: {e}");
                }
            }
            None => log::debug!("virtio-mmio: notification for missing queue {queue}"),
        }
    }

    fn write_status(&mut self, value: u32) {
        let Ok(new) = u8::try_from(value) else {
            log::debug!("virtio-mmio: status {value:#x} out of range; ignored");
            return;
        };
        if new == 0 {
            self.reset();
            return;
        }
        if new & self.status != self.status {
            log::debug!(
                "virtio-mmio: status {new:#x} clears bits of {:#x} without a reset; ignored",
                self.status
            );
            return;
        }
        let added = new & !self.status;
        let mut accepted = new;
        if added & status::FEATURES_OK != 0 && !self.features_acceptable() {
            log::debug!(
                "virtio-mmio: driver features {:#x} refused (device offers {:#x})",
                self.acked_features,
                lock(&self.device).features()
            );
            accepted &= !status::FEATURES_OK;
        }
        if added & status::DRIVER_OK != 0 {
            if accepted & status::FEATURES_OK == 0 {
                log::debug!("virtio-mmio: DRIVER_OK without FEATURES_OK; ignored");
                accepted &= !status::DRIVER_OK;
            } else if let Err(e) = self.activate() {
                crate::warn_guest!("virtio-mmio: {e}; the device needs a reset");
                accepted |= status::DEVICE_NEEDS_RESET;
                self.status = accepted;
                self.interrupt.signal(interrupt::CONFIG_CHANGE);
                return;
            }
        }
        self.status = accepted;
    }

    fn features_acceptable(&self) -> bool {
        let device = lock(&self.device);
        let offered = device.features();
        if let Err(why) = device.check_features(self.acked_features) {
            log::debug!("virtio-mmio: {why}");
            return false;
        }
        self.acked_features & !offered == 0 && self.acked_features & features::VERSION_1 != 0
    }

    fn activate(&mut self) -> Result<(), String> {
        let event_idx = self.acked_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, q) in self.queues.iter_mut().enumerate() {
            q.set_event_idx(event_idx);
            if !q.ready() {
                return Err(format!("queue {index} is not ready"));
            }
            if !q.is_valid(&self.mem) {
                return Err(format!("queue {index} lies outside guest memory"));
            }
            queues.push(Queue::try_from(q.state()).map_err(|e| format!("queue {index}: {e}"))?);
        }
        lock(&self.device)
            .activate(ActiveQueues {
                mem: self.mem.clone(),
                queues,
                acked_features: self.acked_features,
                interrupt: self.interrupt.clone() as Arc<dyn VirtioInterrupt>,
            })
            .map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        self.interrupt.clear();
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.status = 0;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            lock(&self.device).read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!(
                "virtio-mmio: {}-byte read at {offset:#x}; reads 0",
                data.len()
            );
            data.fill(0);
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            lock(&self.device).write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "virtio-mmio: {}-byte write at {offset:#x}; ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            log::debug!("virtio-mmio: unaligned write at {offset:#x}; ignored");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::memory;
    use crate::virtio::ActivateError;
    use crate::EventFdTrigger;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// A device that records what the transport did to it.
    struct Dummy {
        events: Vec<EventFd>,
        config: [u8; 8],
        generation: u32,
        active: Option<ActiveQueues>,
        resets: u32,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            features::VERSION_1 | features::RING_EVENT_IDX | 1
        }
        /// Feature 0 needs RING_EVENT_IDX, say.
        fn check_features(&self, acked: u64) -> Result<(), String> {
            if acked & 1 != 0 && acked & features::RING_EVENT_IDX == 0 {
                return Err("feature 0 needs RING_EVENT_IDX".into());
            }
            Ok(())
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.events
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&self.config, offset, data);
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn config_generation(&self) -> u32 {
            self.generation
        }
        fn activate(&mut self, active: ActiveQueues) -> Result<(), ActivateError> {
            self.active = Some(active);
            Ok(())
        }
        fn reset(&mut self) {
            self.active = None;
            self.resets += 1;
        }
    }

    struct Setup {
        transport: MmioTransport,
        device: Arc<Mutex<Dummy>>,
        irq: EventFd,
    }

    fn setup() -> Setup {
        let device = Arc::new(Mutex::new(Dummy {
            events: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            config: [1, 2, 3, 4, 5, 6, 7, 8],
            generation: 0,
            active: None,
            resets: 0,
        }));
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(
            irq.try_clone().unwrap(),
        )));
        let transport = MmioTransport::new(device.clone(), memory(), interrupt);
        Setup {
            transport,
            device,
            irq,
        }
    }

    fn read(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    /// Drives the transport the way Linux's virtio_mmio driver does, up to DRIVER_OK.
    fn bring_up(t: &mut MmioTransport, features: u64) {
        write(t, reg::STATUS, 0);
        write(t, reg::STATUS, u32::from(status::ACKNOWLEDGE));
        write(
            t,
            reg::STATUS,
            u32::from(status::ACKNOWLEDGE | status::DRIVER),
        );
        write(t, reg::DRIVER_FEATURES_SEL, 0);
        write(t, reg::DRIVER_FEATURES, features as u32);
        write(t, reg::DRIVER_FEATURES_SEL, 1);
        write(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        write(t, reg::STATUS, u32::from(s));
        write(t, reg::QUEUE_SEL, 0);
        write(t, reg::QUEUE_NUM, 16);
        write(t, reg::QUEUE_DESC_LOW, 0x1000);
        write(t, reg::QUEUE_AVAIL_LOW, 0x2000);
        write(t, reg::QUEUE_USED_LOW, 0x3000);
        write(t, reg::QUEUE_READY, 1);
        write(t, reg::STATUS, u32::from(s | status::DRIVER_OK));
    }

    #[test]
    fn test_mmio_identity_registers_read_virtio_v2() {
        let mut s = setup();
        assert_eq!(read(&mut s.transport, reg::MAGIC_VALUE), MAGIC_VALUE);
        assert_eq!(read(&mut s.transport, reg::VERSION), 2);
        assert_eq!(read(&mut s.transport, reg::DEVICE_ID), 42);
        assert_eq!(read(&mut s.transport, reg::QUEUE_NUM_MAX), 16);
    }

    #[test]
    fn test_mmio_device_features_paged_by_selector() {
        let mut s = setup();
        write(&mut s.transport, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&mut s.transport, reg::DEVICE_FEATURES), 1);
        write(&mut s.transport, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(read(&mut s.transport, reg::DEVICE_FEATURES), (1 << 29) | 1);
        write(&mut s.transport, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(read(&mut s.transport, reg::DEVICE_FEATURES), 0);
    }

    #[test]
    fn test_mmio_bring_up_activates_device_with_configured_queue() {
        let mut s = setup();
        bring_up(
            &mut s.transport,
            features::VERSION_1 | features::RING_EVENT_IDX,
        );
        assert_eq!(s.transport.status() & status::DRIVER_OK, status::DRIVER_OK);
        let dev = s.device.lock().unwrap();
        let active = dev.active.as_ref().expect("activated");
        assert_eq!(active.queues[0].size(), 16);
        assert_eq!(active.queues[0].desc_table(), 0x1000);
        assert!(active.queues[0].event_idx_enabled());
    }

    #[test]
    fn test_mmio_features_without_version_1_refused() {
        let mut s = setup();
        bring_up(&mut s.transport, 1);
        assert_eq!(s.transport.status() & status::FEATURES_OK, 0);
        assert!(s.device.lock().unwrap().active.is_none());
    }

    /// Offered features the driver accepts without one they depend on: FEATURES_OK refused;
    /// with it, accepted.
    #[test]
    fn test_mmio_feature_without_its_dependency_refused() {
        let mut s = setup();
        bring_up(&mut s.transport, features::VERSION_1 | 1);
        assert_eq!(s.transport.status() & status::FEATURES_OK, 0);
        let mut s = setup();
        bring_up(
            &mut s.transport,
            features::VERSION_1 | features::RING_EVENT_IDX | 1,
        );
        assert_ne!(s.transport.status() & status::FEATURES_OK, 0);
    }

    #[test]
    fn test_mmio_unoffered_feature_refused() {
        let mut s = setup();
        bring_up(&mut s.transport, features::VERSION_1 | (1 << 7));
        assert_eq!(s.transport.status() & status::FEATURES_OK, 0);
    }

    #[test]
    fn test_mmio_queue_outside_memory_needs_reset() {
        let mut s = setup();
        write(&mut s.transport, reg::STATUS, 3);
        write(&mut s.transport, reg::DRIVER_FEATURES_SEL, 1);
        write(&mut s.transport, reg::DRIVER_FEATURES, 1);
        write(&mut s.transport, reg::STATUS, 0xb);
        write(&mut s.transport, reg::QUEUE_DESC_LOW, 0xfff0_0000);
        write(&mut s.transport, reg::QUEUE_READY, 1);
        write(&mut s.transport, reg::STATUS, 0xf);
        assert_eq!(
            s.transport.status() & status::DEVICE_NEEDS_RESET,
            status::DEVICE_NEEDS_RESET
        );
        assert!(s.device.lock().unwrap().active.is_none());
        assert_eq!(
            read(&mut s.transport, reg::INTERRUPT_STATUS),
            interrupt::CONFIG_CHANGE
        );
        assert_eq!(s.irq.read().unwrap(), 1);
    }

    #[test]
    fn test_mmio_queue_registers_ignored_after_driver_ok() {
        let mut s = setup();
        bring_up(&mut s.transport, features::VERSION_1);
        write(&mut s.transport, reg::QUEUE_DESC_LOW, 0x8000);
        assert_eq!(s.transport.queues[0].desc_table(), 0x1000);
    }

    #[test]
    fn test_mmio_reset_forgets_everything() {
        let mut s = setup();
        bring_up(&mut s.transport, features::VERSION_1);
        s.transport.interrupt.signal(interrupt::USED_BUFFER);
        write(&mut s.transport, reg::STATUS, 0);
        assert_eq!(s.transport.status(), 0);
        assert_eq!(read(&mut s.transport, reg::INTERRUPT_STATUS), 0);
        assert!(!s.transport.queues[0].ready());
        assert_eq!(s.transport.acked_features, 0);
        let dev = s.device.lock().unwrap();
        assert!(dev.active.is_none());
        // bring_up starts with a reset too.
        assert_eq!(dev.resets, 2);
    }

    #[test]
    fn test_mmio_wrong_width_and_unaligned_accesses_read_zero() {
        let mut s = setup();
        let mut two = [0xffu8; 2];
        s.transport.read(reg::MAGIC_VALUE, &mut two);
        assert_eq!(two, [0, 0]);
        let mut four = [0xffu8; 4];
        s.transport.read(reg::MAGIC_VALUE + 1, &mut four);
        assert_eq!(four, [0; 4]);
        s.transport.write(reg::STATUS, &[1]);
        assert_eq!(s.transport.status(), 0);
    }

    #[test]
    fn test_mmio_status_cannot_drop_bits_without_reset() {
        let mut s = setup();
        write(&mut s.transport, reg::STATUS, 3);
        write(&mut s.transport, reg::STATUS, 1);
        assert_eq!(s.transport.status(), 3);
    }

    #[test]
    fn test_mmio_config_space_read_through_device() {
        let mut s = setup();
        let mut data = [0u8; 2];
        s.transport.read(reg::CONFIG + 6, &mut data);
        assert_eq!(data, [7, 8]);
    }

    #[test]
    fn test_mmio_notify_without_ioeventfd_reaches_queue_event() {
        let mut s = setup();
        bring_up(&mut s.transport, features::VERSION_1);
        write(&mut s.transport, reg::QUEUE_NOTIFY, 0);
        write(&mut s.transport, reg::QUEUE_NOTIFY, 9);
        assert_eq!(s.device.lock().unwrap().events[0].read().unwrap(), 1);
    }

    #[test]
    fn test_mmio_interrupt_kinds_set_their_status_bit_on_one_line() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = MmioInterrupt::new(EventFdTrigger::new(evt.try_clone().unwrap()));
        irq.trigger(InterruptKind::Queue(1));
        assert_eq!(irq.status(), interrupt::USED_BUFFER);
        irq.trigger(InterruptKind::Config);
        assert_eq!(
            irq.status(),
            interrupt::USED_BUFFER | interrupt::CONFIG_CHANGE
        );
        assert_eq!(evt.read().unwrap(), 2);
        irq.ack(interrupt::USED_BUFFER);
        assert_eq!(irq.status(), interrupt::CONFIG_CHANGE);
    }

    #[test]
    fn test_mmio_config_generation_is_the_devices() {
        let mut s = setup();
        assert_eq!(read(&mut s.transport, reg::CONFIG_GENERATION), 0);
        s.device.lock().unwrap().generation = 3;
        assert_eq!(read(&mut s.transport, reg::CONFIG_GENERATION), 3);
    }

    #[test]
    fn test_mmio_interrupt_ack_clears_bits() {
        let mut s = setup();
        s.transport
            .interrupt
            .signal(interrupt::USED_BUFFER | interrupt::CONFIG_CHANGE);
        write(&mut s.transport, reg::INTERRUPT_ACK, interrupt::USED_BUFFER);
        assert_eq!(
            read(&mut s.transport, reg::INTERRUPT_STATUS),
            interrupt::CONFIG_CHANGE
        );
    }
}
