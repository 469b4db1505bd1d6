//! The device manager on `/dev/kvm`: any virtio device attaches through the one
//! `attach_virtio`, gets the next slot on the MMIO bus and in the guest's description, and is
//! found by its ID.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use common::require_kvm;
use fennec::config::VmConfig;
use fennec::device_manager::{DeviceError, DeviceManager, Location};
use fennec::mmds::Mmds;
use fennec::vstate::gsi::{InterruptSource, MsiMessage};
use fennec::vstate::{kvm::KvmContext, memory, vm::KvmVm};
use fennec::Console;
use fennec_devices::virtio::mmio::reg;
use fennec_devices::virtio::{
    features, ActivateError, ActiveQueues, DeviceStateError, VirtioDevice,
};

/// A virtio device that exists only for this test: one queue, no configuration, and a number
/// of its own that snapshots carry.
struct Probe {
    events: Vec<EventFd>,
    credit: Arc<AtomicU64>,
}

impl Probe {
    fn new() -> Self {
        Probe {
            events: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            credit: Arc::default(),
        }
    }
}

const PROBE_TYPE: u32 = 0x7e57;

impl VirtioDevice for Probe {
    fn device_type(&self) -> u32 {
        PROBE_TYPE
    }
    fn features(&self) -> u64 {
        features::VERSION_1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[8]
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, _active: ActiveQueues) -> Result<(), ActivateError> {
        Ok(())
    }
    fn reset(&mut self) {}
    fn save_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "credit": self.credit.load(Ordering::SeqCst) }))
    }
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), DeviceStateError> {
        let credit = state["credit"]
            .as_u64()
            .ok_or_else(|| DeviceStateError::Parse(state.to_string()))?;
        self.credit.store(credit, Ordering::SeqCst);
        Ok(())
    }
}

impl MutEventSubscriber for Probe {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}
    fn init(&mut self, _ops: &mut EventOps) {}
}

#[test]
fn test_a_test_only_virtio_device_attaches_and_is_found_by_id() {
    require_kvm();
    let (vm, mem, mut devices) = machine();
    let (_probe, location) = devices
        .attach_virtio(&vm, &mem, "probe0", Probe::new())
        .unwrap();
    let base = 0xd000_0000;
    assert_eq!(location, Location::Mmio { base, irq: 5 });
    let slot = devices.virtio("probe0").expect("found by its ID");
    assert_eq!((slot.device_type, slot.location), (PROBE_TYPE, location));
    assert!(devices.virtio("probe1").is_none());
    // The guest's description comes from what was attached.
    assert_eq!(
        devices.cmdline_entries(),
        ["virtio_mmio.device=4K@0xd0000000:5"]
    );
    // Its transport answers on the MMIO bus with the device's type.
    let mut id = [0u8; 4];
    assert!(devices.legacy.mmio.read(base + reg::DEVICE_ID, &mut id));
    assert_eq!(u32::from_le_bytes(id), PROBE_TYPE);

    // A second device takes the next slot; an ID can be used once.
    let (_, location1) = devices
        .attach_virtio(&vm, &mem, "probe1", Probe::new())
        .unwrap();
    assert_eq!(
        location1,
        Location::Mmio {
            base: 0xd000_1000,
            irq: 6
        }
    );
    let twice = devices.attach_virtio(&vm, &mem, "probe0", Probe::new());
    assert!(matches!(twice, Err(DeviceError::DuplicateId(id)) if id == "probe0"));
}

/// A machine with no devices but the legacy ones.
fn machine() -> (KvmVm, vm_memory::GuestMemoryMmap, DeviceManager) {
    let kvm = KvmContext::open().unwrap();
    let mem = memory::create_guest_memory(64 << 20).unwrap();
    let vm = KvmVm::new(&kvm, &mem).unwrap();
    let console = Console {
        output: Box::new(std::io::sink()),
        input: None,
    };
    let devices = DeviceManager::new(
        &vm,
        &mem,
        console,
        &VmConfig::default(),
        (&Mmds::default(), None),
    )
    .unwrap();
    (vm, mem, devices)
}

#[test]
fn test_a_devices_own_state_goes_into_the_snapshot_and_comes_back() {
    require_kvm();
    let (vm, mem, mut devices) = machine();
    let probe = Probe::new();
    probe.credit.store(7, Ordering::SeqCst);
    devices.attach_virtio(&vm, &mem, "probe0", probe).unwrap();
    let saved = devices.snapshot_handles().save().unwrap();
    assert_eq!(saved.virtio[0].id, "probe0");
    let own = saved.virtio[0].device.as_ref().map(|raw| raw.get());
    assert_eq!(own, Some(r#"{"credit":7}"#));

    // A new machine with the same devices takes the state back: the device's own first.
    let (vm2, mem2, mut again) = machine();
    let fresh = Probe::new();
    let credit = fresh.credit.clone();
    again.attach_virtio(&vm2, &mem2, "probe0", fresh).unwrap();
    again.restore(&saved).unwrap();
    assert_eq!(credit.load(Ordering::SeqCst), 7);

    // A state this device does not understand is refused, naming the device.
    let mut bad = saved.clone();
    bad.virtio[0].device =
        serde_json::value::RawValue::from_string(r#"{"credit":"lots"}"#.into()).ok();
    let e = again.restore(&bad).unwrap_err();
    assert!(e.to_string().contains("probe0"), "{e}");
    // And one for another device in its slot.
    let mut other = saved;
    other.virtio[0].id = "probe9".into();
    assert!(again.restore(&other).is_err());
}

#[test]
fn test_interrupts_route_by_source_through_kvms_gsi_table() {
    require_kvm();
    let (vm, _mem, _devices) = machine();
    let evt = || EventFd::new(EFD_NONBLOCK).unwrap();
    // A line keeps its IOAPIC pin as its GSI; an MSI gets the next GSI above the pins, and KVM
    // takes the whole table (the lines' default routes with it) each time.
    let line = evt();
    assert_eq!(
        vm.connect_irqfd(&line, InterruptSource::Line(9)).unwrap(),
        9
    );
    let message = MsiMessage {
        address: 0xfee0_0000,
        data: 0x41,
    };
    let (a, b) = (evt(), evt());
    assert_eq!(
        vm.connect_irqfd(&a, InterruptSource::Msi(message)).unwrap(),
        24
    );
    assert_eq!(
        vm.connect_irqfd(&b, InterruptSource::Msi(message)).unwrap(),
        25
    );
    // The guest moves a vector: KVM takes the new table.
    let moved = MsiMessage {
        address: 0xfee0_1000,
        data: 0x42,
    };
    vm.update_msi(24, moved).unwrap();
    // A line is not an MSI route, and a pin past the IOAPIC's is no line.
    assert!(vm.update_msi(9, moved).is_err());
    assert!(vm.connect_irqfd(&evt(), InterruptSource::Line(24)).is_err());
}
