//! The device manager on `/dev/kvm`: any virtio device attaches through the one
//! `attach_virtio`, gets the next slot on the MMIO bus and in the guest's description, and is
//! found by its ID.

mod common;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use common::require_kvm;
use fennec::config::VmConfig;
use fennec::device_manager::{DeviceError, DeviceManager, Location};
use fennec::mmds::Mmds;
use fennec::vstate::{kvm::KvmContext, memory, vm::KvmVm};
use fennec::Console;
use fennec_devices::virtio::mmio::reg;
use fennec_devices::virtio::{features, ActivateError, ActiveQueues, VirtioDevice};

/// A virtio device that exists only for this test: one queue, no configuration.
struct Probe {
    events: Vec<EventFd>,
}

impl Probe {
    fn new() -> Self {
        Probe {
            events: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
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
}

impl MutEventSubscriber for Probe {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}
    fn init(&mut self, _ops: &mut EventOps) {}
}

#[test]
fn test_a_test_only_virtio_device_attaches_and_is_found_by_id() {
    require_kvm();
    let kvm = KvmContext::open().unwrap();
    let mem = memory::create_guest_memory(64 << 20).unwrap();
    let vm = KvmVm::new(&kvm, &mem).unwrap();
    let console = Console {
        output: Box::new(std::io::sink()),
        input: None,
    };
    let mut devices = DeviceManager::new(
        &vm,
        &mem,
        console,
        &VmConfig::default(),
        (&Mmds::default(), None),
    )
    .unwrap();

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
