//! The devices of one VM: the legacy devices every VM has, and its virtio devices.

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use vm_memory::GuestMemoryMmap;

use fennec_devices::legacy::serial::SerialSnapshot;
use fennec_devices::virtio::VirtioDevice;

use super::error::DeviceError;
use super::legacy::Legacy;
use super::virtio::{Location, Virtio, VirtioSlot};
use crate::config::VmConfig;
use crate::console::Console;
use crate::mmds::Mmds;
use crate::vstate::vm::KvmVm;

/// The devices of one VM.
pub struct DeviceManager {
    /// The legacy devices and the buses.
    pub legacy: Legacy,
    /// The virtio devices.
    pub virtio: Virtio,
}

impl DeviceManager {
    /// Creates the legacy devices of `vm` around `console` (with ACPI, the ACPI power
    /// registers and the pvpanic register too), then `config`'s virtio devices in consecutive
    /// slots from slot 0 (see [`Virtio::attach_all`]). A restored VM's serial port starts with
    /// `serial_state`.
    pub fn new(
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        console: Console,
        config: &VmConfig,
        (mmds, serial_state): (&Mmds, Option<&SerialSnapshot>),
    ) -> Result<Self, DeviceError> {
        let mut legacy = Legacy::attach(vm, console, config.machine_config.acpi, serial_state)?;
        let mut virtio = Virtio::default();
        virtio.attach_all((vm, mem, &mut legacy.mmio), config, mmds)?;
        Ok(DeviceManager { legacy, virtio })
    }

    /// Attaches `device` as virtio device `id` in the next slot (a device of the caller's own,
    /// beside those of the configuration); returns it and where the guest finds it.
    pub fn attach_virtio<D>(
        &mut self,
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        id: &str,
        device: D,
    ) -> Result<(Arc<Mutex<D>>, Location), DeviceError>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        let device = self
            .virtio
            .attach((vm, mem, &mut self.legacy.mmio), id, "device", device)?;
        let location = self
            .virtio
            .slots
            .last()
            .map(|s| s.location)
            .ok_or_else(|| DeviceError::NoSlot(id.to_string()))?;
        Ok((device, location))
    }

    /// The virtio device with ID `id`.
    pub fn virtio(&self, id: &str) -> Option<&VirtioSlot> {
        self.virtio.slot(id)
    }
}
