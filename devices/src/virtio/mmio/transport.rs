//! The transport's registers: what the driver reads and writes, and what each access does.

use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::virtio::{
    features, interrupt, status, ActiveQueues, Queue, QueueT, VirtioDevice, VirtioInterrupt,
};

use super::interrupt::MmioInterrupt;
use crate::bus::BusDevice;
use crate::lock;

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

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    pub(super) device: Arc<Mutex<dyn VirtioDevice>>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<MmioInterrupt>,
    pub(super) device_features_sel: u32,
    pub(super) driver_features_sel: u32,
    pub(super) acked_features: u64,
    pub(super) queue_sel: u32,
    pub(super) queues: Vec<Queue>,
    pub(super) status: u8,
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
        self.acceptable(self.acked_features)
    }

    /// Whether a driver may accept `acked`: only offered features, VERSION_1 among them, and
    /// nothing the device's own rules refuse.
    pub(super) fn acceptable(&self, acked: u64) -> bool {
        self.acceptable_from(acked, |d| d.features())
    }

    /// [`Self::acceptable`] for a restored driver: against what the device still serves.
    pub(super) fn restorable(&self, acked: u64) -> bool {
        self.acceptable_from(acked, |d| d.restorable_features())
    }

    fn acceptable_from(&self, acked: u64, offered: impl Fn(&dyn VirtioDevice) -> u64) -> bool {
        let device = lock(&self.device);
        let offered = offered(&*device);
        if let Err(why) = device.check_features(acked) {
            log::debug!("virtio-mmio: {why}");
            return false;
        }
        acked & !offered == 0 && acked & features::VERSION_1 != 0
    }

    pub(super) fn activate(&mut self) -> Result<(), String> {
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
