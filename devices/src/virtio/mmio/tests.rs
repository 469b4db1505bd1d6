//! Unit tests of the virtio-mmio transport: hostile register accesses and the bring-up.

use std::sync::{Arc, Mutex};

use super::*;
use crate::bus::BusDevice;
use crate::virtio::test_utils::memory;
use crate::virtio::ActivateError;
use crate::virtio::{
    features, interrupt, status, ActiveQueues, InterruptKind, QueueT, VirtioDevice, VirtioInterrupt,
};
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
    fn queue_states(&self) -> Option<Vec<crate::virtio::QueueState>> {
        crate::virtio::active_queue_states(self.active.as_ref())
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

/// A saved transport whose driver acknowledged features it could never have got accepted (one
/// not offered, one without its dependency) is refused on restore, as the bring-up refuses
/// them; what a driver did get accepted restores and activates the device.
#[test]
fn test_mmio_restore_checks_the_saved_features_as_the_bring_up_does() {
    let mut live = setup();
    bring_up(
        &mut live.transport,
        features::VERSION_1 | features::RING_EVENT_IDX | 1,
    );
    let saved = live.transport.save_mmio().unwrap();
    let mut fresh = setup();
    fresh.transport.restore_mmio(&saved).unwrap();
    assert!(fresh.device.lock().unwrap().active.is_some());
    for acked in [
        features::VERSION_1 | features::RING_EVENT_IDX | (1 << 7),
        features::VERSION_1 | 1,
        features::RING_EVENT_IDX,
    ] {
        let mut crafted = saved.clone();
        crafted.acked_features = acked;
        let mut fresh = setup();
        let err = fresh.transport.restore_mmio(&crafted).unwrap_err();
        assert!(
            matches!(err, crate::virtio::transport::TransportStateError::Features(f) if f == acked),
            "{acked:#x}: {err}"
        );
        assert!(fresh.device.lock().unwrap().active.is_none(), "{acked:#x}");
    }
}
