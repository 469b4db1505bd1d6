//! Attaching virtio devices: every device of every type goes through [`Virtio::attach`], which
//! puts it behind a transport, binds each queue's notifications to an ioeventfd and its
//! interrupt to an irqfd (so a request never passes through a vCPU thread), gives it to the
//! event loop, and records it by ID in a [`VirtioSlot`]: where the guest finds it, its
//! counters, its transport for snapshots. What differs between devices is their configuration
//! file's ([`VirtioDeviceConfig`]); what differs between transports is here.

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};

use event_manager::MutEventSubscriber;
use vm_memory::GuestMemoryMmap;

use fennec_boot::layout;
use fennec_devices::bus::Bus;
use fennec_devices::virtio::mmio::{self, MmioInterrupt, MmioTransport};
use fennec_devices::virtio::transport::Transport;
use fennec_devices::virtio::{Counters, VirtioDevice};
use fennec_devices::EventFdTrigger;

use super::error::DeviceError;
use super::legacy::eventfd;
use crate::config::{DeviceEnv, DeviceVisitor, VirtioDeviceConfig, VmConfig};
use crate::mmds::Mmds;
use crate::vstate::gsi::InterruptSource;
use crate::vstate::vm::KvmVm;

/// An event-loop subscriber, shared with the bus.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Where the guest finds a virtio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A virtio-mmio register block at `base`, interrupting on IOAPIC pin `irq`.
    Mmio {
        /// The block's guest address.
        base: u64,
        /// Its IOAPIC pin.
        irq: u32,
    },
}

/// A virtio device attached to the VM.
#[derive(Clone)]
pub struct VirtioSlot {
    /// Its ID (a drive's or network interface's).
    pub id: String,
    /// What kind of device it is, as its configuration names it ("drive").
    pub kind: &'static str,
    /// Its virtio device type (2 for block, 1 for network).
    pub device_type: u32,
    /// Where the guest finds it.
    pub location: Location,
    /// The device.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// The same device with its type, for what the VMM does to one kind (a drive's new image).
    typed: Arc<dyn Any + Send + Sync>,
    /// Its counters.
    pub counters: Arc<dyn Counters>,
    /// Its transport, for snapshots.
    pub transport: Arc<Mutex<dyn Transport + Send>>,
}

impl VirtioSlot {
    /// The device, if it is a `D`.
    pub fn device_as<D: Send + 'static>(&self) -> Option<Arc<Mutex<D>>> {
        self.typed.clone().downcast::<Mutex<D>>().ok()
    }

    /// The typed device without keeping it alive, for whoever outlives the VM.
    pub fn device_weak(&self) -> Weak<dyn Any + Send + Sync> {
        Arc::downgrade(&self.typed)
    }
}

impl std::fmt::Debug for VirtioSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioSlot")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The VM's virtio devices, in slot order.
#[derive(Default)]
pub struct Virtio {
    /// Every device, in the order attached.
    pub slots: Vec<VirtioSlot>,
    /// Their event-loop subscribers.
    pub subscribers: Vec<Subscriber>,
}

impl Virtio {
    /// Attaches `config`'s virtio devices, kind by kind as [`VmConfig::visit_devices`] lists
    /// them: the drives (in guest order), the network interfaces (with the metadata service
    /// answering from `mmds` on those `mmds-config` names), the entropy device.
    pub fn attach_all(
        &mut self,
        (vm, mem, mmio): (&KvmVm, &GuestMemoryMmap, &mut Bus),
        config: &VmConfig,
        mmds: &Mmds,
    ) -> Result<(), DeviceError> {
        struct Attach<'a> {
            virtio: &'a mut Virtio,
            machine: (&'a KvmVm, &'a GuestMemoryMmap, &'a mut Bus),
            mmds: &'a Mmds,
            mmds_config: Option<&'a crate::mmds::MmdsConfig>,
            result: Result<(), DeviceError>,
        }
        impl DeviceVisitor for Attach<'_> {
            fn visit<C: VirtioDeviceConfig>(&mut self, index: usize, device: &C) {
                if self.result.is_err() {
                    return;
                }
                let env = DeviceEnv {
                    mmds: self.mmds,
                    mmds_config: self.mmds_config,
                    index,
                };
                let (vm, mem, mmio) = (self.machine.0, self.machine.1, &mut *self.machine.2);
                self.result = self
                    .virtio
                    .attach_config((vm, mem, mmio), device, &env)
                    .map(drop);
            }
        }
        if let Some(c) = &config.mmds_config {
            mmds.set_version(c.version);
        }
        let mut attach = Attach {
            virtio: self,
            machine: (vm, mem, mmio),
            mmds,
            mmds_config: config.mmds_config.as_ref(),
            result: Ok(()),
        };
        config.visit_devices(&mut attach);
        attach.result
    }

    /// Attaches the device `cfg` describes: builds it, then [`Virtio::attach`].
    pub fn attach_config<C: VirtioDeviceConfig>(
        &mut self,
        (vm, mem, mmio): (&KvmVm, &GuestMemoryMmap, &mut Bus),
        cfg: &C,
        env: &DeviceEnv<'_>,
    ) -> Result<Arc<Mutex<C::Device>>, DeviceError> {
        let device = cfg.build(env)?;
        let described = cfg.describe(&device, env);
        let device = self.attach((vm, mem, mmio), cfg.id(), C::KIND, device)?;
        if let Some(slot) = self.slots.last() {
            let Location::Mmio { base, irq } = slot.location;
            log::info!(
                "{} {:?}: {described}, virtio-mmio at {base:#x} IRQ {irq}",
                capitalized(C::KIND),
                cfg.id()
            );
        }
        Ok(device)
    }

    /// Attaches `device` as virtio device `id` of kind `kind`: behind a virtio-mmio transport
    /// in the next free slot, each queue's notifications bound to an ioeventfd at the
    /// transport's QueueNotify register, its interrupt to an irqfd on the slot's IOAPIC line,
    /// and on the event loop. Every virtio device goes through here.
    pub fn attach<D>(
        &mut self,
        (vm, mem, mmio): (&KvmVm, &GuestMemoryMmap, &mut Bus),
        id: &str,
        kind: &'static str,
        device: D,
    ) -> Result<Arc<Mutex<D>>, DeviceError>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        if self.slots.len() >= layout::MAX_VIRTIO_DEVICES {
            return Err(DeviceError::NoSlot(id.to_string()));
        }
        if self.slot(id).is_some() {
            return Err(DeviceError::DuplicateId(id.to_string()));
        }
        let (base, irq) = layout::virtio_slot(self.slots.len());
        for (queue, evt) in device.queue_events().iter().enumerate() {
            vm.register_ioevent(evt, base + mmio::reg::QUEUE_NOTIFY, queue as u32)
                .map_err(DeviceError::Kvm)?;
        }
        let irq_evt = eventfd("a virtio interrupt")?;
        vm.connect_irqfd(&irq_evt, InterruptSource::Line(irq))
            .map_err(DeviceError::Kvm)?;
        let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq_evt)));
        let device_type = device.device_type();
        let counters = device.counters();
        let device = Arc::new(Mutex::new(device));
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device.clone(),
            mem.clone(),
            interrupt,
        )));
        mmio.insert(transport.clone(), base, mmio::MMIO_LEN)
            .map_err(DeviceError::Bus)?;
        self.subscribers.push(device.clone());
        self.slots.push(VirtioSlot {
            id: id.to_string(),
            kind,
            device_type,
            location: Location::Mmio { base, irq },
            device: device.clone(),
            typed: device.clone(),
            counters,
            transport,
        });
        Ok(device)
    }

    /// The virtio device with ID `id`.
    pub fn slot(&self, id: &str) -> Option<&VirtioSlot> {
        self.slots.iter().find(|v| v.id == id)
    }
}

/// "Drive" for "drive".
fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
