//! Wires devices to the buses and to KVM interrupts: the serial console at 0x3f8 on IRQ 4, the
//! i8042 at 0x60/0x64 on IRQ 1, and virtio devices behind virtio-mmio transports in 4 KiB slots
//! from 0xd000_0000 with IRQs from 5. Every virtio device, of any type, is attached by one
//! function, [`DeviceManager::attach_virtio`], which assigns its slot, binds each queue's
//! notifications to an ioeventfd and its interrupt to an irqfd (so a request never passes
//! through a vCPU thread), gives it to the event loop, and records it by ID; the guest's
//! description (the command line's `virtio_mmio.device=` entries) is made from those records.
//! Addresses and IRQs come from [`fennec_boot::layout`].

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use event_manager::MutEventSubscriber;
use vm_memory::GuestMemoryMmap;

use fennec_boot::layout;
use fennec_boot::x86_64::acpi;
use fennec_devices::bus::{Bus, BusError};
use fennec_devices::legacy::acpi::{self as acpi_regs, AcpiPower};
use fennec_devices::legacy::boot_timer::{BootTime, BootTimer};
use fennec_devices::legacy::i8042::I8042;
use fennec_devices::legacy::pvpanic::PvPanic;
use fennec_devices::legacy::serial::{
    ConsoleIn, ConsoleOut, SerialDevice, SerialInput, SerialMetrics, SerialSnapshot,
};
use fennec_devices::rate_limiter::RateLimiter;
use fennec_devices::virtio::block::{Block, BlockMetrics, BlockSpec, DiskError, DiskFile};
use fennec_devices::virtio::mmio::MmioInterrupt;
use fennec_devices::virtio::mmio::{self, MmioTransport};
use fennec_devices::virtio::net::{FrameService, MacAddr, Net, NetMetrics, NetSpec, Tap, TapError};
use fennec_devices::virtio::rng::{Rng, RngMetrics};
use fennec_devices::virtio::VirtioDevice;
use fennec_devices::EventFdTrigger;

use crate::config::{BlockConfig, EntropyConfig, NetConfig, VmConfig};
use crate::mmds::{Mmds, MmdsStack};
use crate::snapshot::DevicesState;
use crate::vstate::vm::{KvmVm, VmError};

/// Errors setting up devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Creating an eventfd failed.
    #[error("Failed to create an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    /// Two devices claim the same range.
    #[error("Failed to place a device on the bus")]
    Bus(#[source] BusError),
    /// Connecting an interrupt or a queue notification failed.
    #[error("Failed to connect a device to KVM")]
    Kvm(#[source] VmError),
    /// Every virtio slot is taken.
    #[error("No virtio slot left for {0:?}: a VM has room for {max}", max = layout::MAX_VIRTIO_DEVICES)]
    NoSlot(String),
    /// Two virtio devices share an ID.
    #[error("Two virtio devices have the ID {0:?}")]
    DuplicateId(String),
    /// A drive's image could not be used.
    #[error("Drive {id:?}")]
    Disk {
        /// The drive.
        id: String,
        /// Why.
        #[source]
        source: DiskError,
    },
    /// A drive names a template and was given no clone of it.
    #[error("Drive {0:?} names a template but was not given an image: provision it first (fennec::storage::provision)")]
    Unprovisioned(String),
    /// A network interface's TAP could not be used.
    #[error("Network interface {id:?}")]
    Tap {
        /// The interface.
        id: String,
        /// Why.
        #[source]
        source: TapError,
    },
}

/// An event-loop subscriber, shared with the bus.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A drive as the guest sees it.
#[derive(Clone)]
pub struct DriveInfo {
    /// Its ID.
    pub id: String,
    /// The guest's name for it (`vda`, `vdb`, ...), if the guest probes in command-line order.
    pub guest_name: String,
    /// MMIO base of its transport.
    pub mmio_base: u64,
    /// Its IRQ.
    pub irq: u32,
    /// Capacity in 512-byte sectors, when the VM started.
    pub sectors: u64,
    /// Whether the guest can only read it.
    pub read_only: bool,
    /// Its counters.
    pub metrics: Arc<BlockMetrics>,
    /// The device, for what the VMM does to a drive beyond the guest's requests (swapping its
    /// image, flushing it for a snapshot), while the VM runs: the image closes with the VM.
    pub(crate) device: Weak<Mutex<Block>>,
}

impl std::fmt::Debug for DriveInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveInfo")
            .field("id", &self.id)
            .field("guest_name", &self.guest_name)
            .field("mmio_base", &self.mmio_base)
            .field("irq", &self.irq)
            .field("sectors", &self.sectors)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// A virtio device attached to the VM: where the guest finds it, and the device.
#[derive(Clone)]
pub struct VirtioSlot {
    /// Its ID (a drive's or network interface's).
    pub id: String,
    /// Its virtio device type (2 for block, 1 for network).
    pub device_type: u32,
    /// MMIO base of its transport.
    pub mmio_base: u64,
    /// Its IRQ.
    pub irq: u32,
    /// The device.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// Its transport, for snapshots.
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// A network interface as the guest sees it.
#[derive(Clone)]
pub struct NetInfo {
    /// Its ID.
    pub id: String,
    /// The TAP on the host.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// MMIO base of its transport.
    pub mmio_base: u64,
    /// Its IRQ.
    pub irq: u32,
    /// Its counters.
    pub metrics: Arc<NetMetrics>,
    /// The device, for what the VMM changes while the VM runs (rate limits).
    pub(crate) device: Weak<Mutex<Net>>,
}

impl std::fmt::Debug for NetInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetInfo")
            .field("id", &self.id)
            .field("tap", &self.tap)
            .field("mac", &self.mac)
            .field("mmio_base", &self.mmio_base)
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

/// The guest's console: where its serial output goes and where its input comes from.
pub struct Console {
    /// Receives every byte the guest writes to its serial port.
    pub output: ConsoleOut,
    /// Bytes to type into the guest's serial port; `None` for no input.
    pub input: Option<Box<dyn ConsoleIn>>,
}

/// The devices of one VM.
pub struct DeviceManager {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// Fires when the guest resets through the i8042 or the ACPI reset register.
    pub reset_evt: EventFd,
    /// Fires when the guest powers off through ACPI.
    pub power_off_evt: EventFd,
    /// Fires when the guest's kernel says it panicked (pvpanic, with ACPI).
    pub panic_evt: EventFd,
    /// The ACPI power registers, where the host presses the power button; `None` when the VM
    /// has no ACPI.
    pub acpi: Option<Arc<Mutex<AcpiPower<EventFdTrigger>>>>,
    /// The keyboard controller, where the host presses Ctrl-Alt-Del.
    pub i8042: Arc<Mutex<I8042<EventFdTrigger>>>,
    /// The serial port.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// Feeds console input to the serial port, for the event loop; `None` without input.
    pub serial_input: Option<SerialInput>,
    /// Serial counters.
    pub serial_metrics: Arc<SerialMetrics>,
    /// The guest's boot time, once its boot timer write arrives.
    pub boot_time: Arc<BootTime>,
    /// Devices the event loop serves.
    pub subscribers: Vec<Subscriber>,
    /// The virtio-blk drives, in slot order.
    pub drives: Vec<DriveInfo>,
    /// The virtio-net interfaces, in slot order.
    pub nets: Vec<NetInfo>,
    /// The entropy device's counters, when the VM has one.
    pub entropy: Option<Arc<RngMetrics>>,
    /// The virtio devices, in slot order.
    virtio: Vec<VirtioSlot>,
}

fn eventfd(what: &'static str) -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(what, e))
}

/// Opens and locks drive `id`'s image at `path`.
pub fn open_disk(id: &str, path: &Path, read_only: bool) -> Result<DiskFile, DeviceError> {
    let disk = DiskFile::open(path, read_only).map_err(|source| DeviceError::Disk {
        id: id.to_string(),
        source,
    })?;
    if disk.size() % 512 != 0 {
        log::warn!(
            "Drive {id:?}: {} is {} bytes, not a whole number of 512-byte sectors; \
             the guest sees only the whole sectors",
            path.display(),
            disk.size()
        );
    }
    Ok(disk)
}

impl DeviceManager {
    /// Creates the legacy devices of `vm` around `console` (with ACPI, the ACPI power
    /// registers too), then `config`'s virtio devices in consecutive slots from slot 0: a
    /// virtio-blk device per drive (in guest order), a virtio-net device per interface (with
    /// the metadata service answering from `mmds` on those `mmds-config` names), and the
    /// entropy device.
    pub fn new(
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        console: Console,
        config: &VmConfig,
        (mmds, serial_state): (&Mmds, Option<&SerialSnapshot>),
    ) -> Result<Self, DeviceError> {
        let acpi = config.machine_config.acpi;
        let mut pio = Bus::new();

        let serial_irq = eventfd("the serial interrupt")?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(DeviceError::Kvm)?;
        let serial_metrics = Arc::new(SerialMetrics::default());
        // A restored VM's serial port starts with the registers and FIFO it was saved with.
        let irq = EventFdTrigger::new(serial_irq);
        let (serial, buffer_ready) = match serial_state {
            None => SerialDevice::new(irq, console.output, serial_metrics.clone()),
            Some(state) => {
                SerialDevice::restored(irq, console.output, serial_metrics.clone(), state)
            }
        }
        .map_err(|e| DeviceError::EventFd("serial input", e))?;
        let serial = Arc::new(Mutex::new(serial));
        pio.insert(
            serial.clone(),
            layout::SERIAL_PORT,
            layout::SERIAL_PORT_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        let serial_input = console
            .input
            .map(|input| SerialInput::new(serial.clone(), input, buffer_ready));

        let reset_evt = eventfd("guest reset")?;
        let reset_trigger = reset_evt
            .try_clone()
            .map_err(|e| DeviceError::EventFd("guest reset", e))?;
        let keyboard_irq = eventfd("the keyboard interrupt")?;
        vm.register_irqfd(&keyboard_irq, layout::KEYBOARD_IRQ)
            .map_err(DeviceError::Kvm)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(
            EventFdTrigger::new(reset_trigger),
            EventFdTrigger::new(keyboard_irq),
        )));
        pio.insert(i8042.clone(), layout::I8042_PORT, layout::I8042_PORT_SIZE)
            .map_err(DeviceError::Bus)?;

        let power_off_evt = eventfd("guest power-off")?;
        let panic_evt = eventfd("guest panic")?;
        let acpi = if acpi {
            Some(Self::attach_acpi(
                vm,
                &mut pio,
                (&reset_evt, &power_off_evt),
                &panic_evt,
            )?)
        } else {
            None
        };

        let boot_time = Arc::new(BootTime::default());
        let mut mmio = Bus::new();
        mmio.insert(
            Arc::new(Mutex::new(BootTimer::new(
                crate::process_start(),
                boot_time.clone(),
            ))),
            layout::BOOT_TIMER_START,
            layout::BOOT_TIMER_SIZE,
        )
        .map_err(DeviceError::Bus)?;

        let mut manager = DeviceManager {
            pio,
            mmio,
            boot_time,
            reset_evt,
            power_off_evt,
            panic_evt,
            acpi,
            i8042,
            serial,
            serial_input,
            serial_metrics,
            subscribers: Vec::new(),
            drives: Vec::new(),
            nets: Vec::new(),
            entropy: None,
            virtio: Vec::new(),
        };
        for drive in config.drives_in_guest_order() {
            manager.add_drive(vm, mem, drive)?;
        }
        if let Some(c) = &config.mmds_config {
            mmds.set_version(c.version);
        }
        for net in &config.net {
            // The metadata service on the links its configuration names.
            let service = config
                .mmds_config
                .as_ref()
                .filter(|c| c.network_interfaces.contains(&net.id))
                .map(|c| MmdsStack::new(mmds.clone(), c.address()));
            manager.add_net(vm, mem, net, service)?;
        }
        if let Some(entropy) = &config.entropy {
            manager.add_entropy(vm, mem, entropy)?;
        }
        Ok(manager)
    }

    /// The ACPI power registers on the port I/O bus: power-off and reset signal the VMM's
    /// eventfds, the power button raises the generic event device's interrupt. Beside them the
    /// pvpanic register, which only ACPI describes, signals `panic_evt`.
    fn attach_acpi(
        vm: &KvmVm,
        pio: &mut Bus,
        (reset_evt, power_off_evt): (&EventFd, &EventFd),
        panic_evt: &EventFd,
    ) -> Result<Arc<Mutex<AcpiPower<EventFdTrigger>>>, DeviceError> {
        let clone =
            |evt: &EventFd, what| evt.try_clone().map_err(|e| DeviceError::EventFd(what, e));
        let event_irq = eventfd("the ACPI event interrupt")?;
        vm.register_irqfd(&event_irq, layout::GED_IRQ)
            .map_err(DeviceError::Kvm)?;
        let power = Arc::new(Mutex::new(AcpiPower::new(
            EventFdTrigger::new(clone(power_off_evt, "guest power-off")?),
            EventFdTrigger::new(clone(reset_evt, "guest reset")?),
            EventFdTrigger::new(event_irq),
        )));
        pio.insert(
            power.clone(),
            layout::ACPI_PM_PORT,
            layout::ACPI_PM_PORT_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        let pvpanic = PvPanic::new(EventFdTrigger::new(clone(panic_evt, "guest panic")?));
        pio.insert(
            Arc::new(Mutex::new(pvpanic)),
            layout::PVPANIC_PORT,
            layout::PVPANIC_PORT_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        Ok(power)
    }

    /// The machine as the ACPI tables describe it to a guest with `vcpus` vCPUs: the serial
    /// port, the i8042, the pvpanic register, every virtio-mmio transport in slot order (`LNRO0005`, the ID Linux's
    /// virtio-mmio driver matches), and fennec's power registers.
    pub fn acpi_description(&self, vcpus: u8) -> acpi::Machine {
        let port = |p: u64| p as u16;
        let mut devices = vec![
            acpi::Device {
                name: *b"COM1",
                hid: acpi::Hid::Eisa("PNP0501"),
                uid: 0,
                resources: vec![
                    acpi::Resource::Io {
                        base: port(layout::SERIAL_PORT),
                        len: layout::SERIAL_PORT_SIZE as u8,
                    },
                    acpi::Resource::Irq(layout::SERIAL_IRQ),
                ],
            },
            acpi::Device {
                name: *b"PS2K",
                hid: acpi::Hid::Eisa("PNP0303"),
                uid: 0,
                resources: vec![
                    acpi::Resource::Io {
                        base: port(layout::I8042_PORT),
                        len: 1,
                    },
                    acpi::Resource::Io {
                        base: port(layout::I8042_PORT) + 4,
                        len: 1,
                    },
                    acpi::Resource::Irq(layout::KEYBOARD_IRQ),
                ],
            },
        ];
        devices.push(acpi::Device {
            name: *b"PEVT",
            hid: acpi::Hid::Name("QEMU0001"),
            uid: 0,
            resources: vec![acpi::Resource::Io {
                base: port(layout::PVPANIC_PORT),
                len: layout::PVPANIC_PORT_SIZE as u8,
            }],
        });
        for (i, v) in self.virtio.iter().enumerate() {
            devices.push(acpi::Device {
                // Slots are fewer than 1000: V000 to V017.
                name: *format!("V{i:03}")
                    .as_bytes()
                    .first_chunk()
                    .unwrap_or(b"V___"),
                hid: acpi::Hid::Name("LNRO0005"),
                uid: i as u32,
                resources: vec![
                    acpi::Resource::Mmio {
                        base: v.mmio_base as u32,
                        len: mmio::MMIO_LEN as u32,
                    },
                    acpi::Resource::Irq(v.irq),
                ],
            });
        }
        let register = |offset: u8| port(layout::ACPI_PM_PORT) + u16::from(offset);
        acpi::Machine {
            vcpus,
            devices,
            power: acpi::PowerRegisters {
                sleep_control: register(acpi_regs::SLEEP_CONTROL),
                sleep_status: register(acpi_regs::SLEEP_STATUS),
                reset: (register(acpi_regs::RESET), acpi_regs::RESET_VALUE),
                s5_sleep_type: acpi_regs::S5_SLEEP_TYPE,
                event: register(acpi_regs::EVENTS),
                power_button_event: acpi_regs::POWER_BUTTON,
                event_irq: layout::GED_IRQ,
            },
        }
    }

    /// Attaches to `cfg`'s TAP and puts a virtio-net device for it in the next virtio slot.
    fn add_net(
        &mut self,
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        cfg: &NetConfig,
        mmds: Option<MmdsStack>,
    ) -> Result<(), DeviceError> {
        let tap = Tap::open(&cfg.tap).map_err(|source| DeviceError::Tap {
            id: cfg.id.clone(),
            source,
        })?;
        let mac = cfg.guest_mac();
        let service_note = mmds
            .as_ref()
            .map(|s| format!(", metadata service at {}", s.address()))
            .unwrap_or_default();
        let limiter = |c: &Option<crate::config::RateLimiterConfig>| {
            let (bandwidth, ops) = crate::config::rate_limiter_buckets(c.as_ref());
            RateLimiter::new(bandwidth, ops)
                .map_err(|e| DeviceError::EventFd("a rate limiter's timer", e))
        };
        let net = Net::new(NetSpec {
            backend: Box::new(tap),
            mac,
            rx_rate_limiter: limiter(&cfg.rx_rate_limiter)?,
            tx_rate_limiter: limiter(&cfg.tx_rate_limiter)?,
            service: mmds.map(|s| Box::new(s) as Box<dyn FrameService>),
        })
        .map_err(|e| DeviceError::EventFd("a network device", e))?;
        let metrics = net.metrics();
        let (device, mmio_base, irq) = self.attach_virtio(vm, mem, &cfg.id, net)?;
        log::info!(
            "Network interface {:?}: TAP {}, MAC {mac}, at {mmio_base:#x} IRQ {irq}, guest eth{}{service_note}",
            cfg.id,
            cfg.tap,
            self.nets.len()
        );
        self.nets.push(NetInfo {
            id: cfg.id.clone(),
            tap: cfg.tap.clone(),
            mac,
            mmio_base,
            irq,
            metrics,
            device: Arc::downgrade(&device),
        });
        Ok(())
    }

    /// Puts an entropy device (virtio-rng) in the next virtio slot.
    fn add_entropy(
        &mut self,
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        cfg: &EntropyConfig,
    ) -> Result<(), DeviceError> {
        let (bandwidth, ops) = crate::config::rate_limiter_buckets(cfg.rate_limiter.as_ref());
        let limiter = RateLimiter::new(bandwidth, ops)
            .map_err(|e| DeviceError::EventFd("a rate limiter's timer", e))?;
        let rng = Rng::new(Box::new(crate::random::fill), limiter)
            .map_err(|e| DeviceError::EventFd("an entropy device", e))?;
        self.entropy = Some(rng.metrics());
        let (_, mmio_base, irq) = self.attach_virtio(vm, mem, "rng", rng)?;
        log::info!("Entropy device: at {mmio_base:#x} IRQ {irq}");
        Ok(())
    }

    /// Opens `cfg`'s image and puts a virtio-blk device for it in the next virtio slot.
    fn add_drive(
        &mut self,
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        cfg: &BlockConfig,
    ) -> Result<(), DeviceError> {
        let path = cfg
            .image_path()
            .ok_or_else(|| DeviceError::Unprovisioned(cfg.id.clone()))?;
        let disk = open_disk(&cfg.id, path, cfg.read_only)?;
        let size = disk.size();
        let discard = disk.supports_discard();
        let (bandwidth, ops) = crate::config::rate_limiter_buckets(cfg.rate_limiter.as_ref());
        let rate_limiter = RateLimiter::new(bandwidth, ops)
            .map_err(|e| DeviceError::EventFd("a rate limiter's timer", e))?;
        let block = Block::new(BlockSpec {
            disk: Box::new(disk),
            size,
            read_only: cfg.read_only,
            id: cfg.id.clone(),
            discard,
            rate_limiter,
        })
        .map_err(|e| DeviceError::EventFd("a block device", e))?;
        let sectors = block.capacity();
        let metrics = block.metrics();
        let (device, mmio_base, irq) = self.attach_virtio(vm, mem, &cfg.id, block)?;
        let guest_name = format!("vd{}", (b'a' + self.drives.len() as u8) as char);
        log::info!(
            "Drive {:?}: {} ({sectors} sectors{}) at {mmio_base:#x} IRQ {irq}, /dev/{guest_name}",
            cfg.id,
            path.display(),
            if cfg.read_only { ", read-only" } else { "" }
        );
        self.drives.push(DriveInfo {
            id: cfg.id.clone(),
            guest_name,
            read_only: cfg.read_only,
            mmio_base,
            irq,
            sectors,
            metrics,
            device: Arc::downgrade(&device),
        });
        Ok(())
    }

    /// Attaches `device` as virtio device `id`: puts it behind a virtio-mmio transport in the
    /// next free slot, binds each of its queues' notifications to an ioeventfd at the
    /// transport's QueueNotify register and its interrupt to an irqfd, and gives it to the
    /// event loop. Every virtio device type goes through here. Returns the device, its MMIO
    /// base and its IRQ.
    pub fn attach_virtio<D>(
        &mut self,
        vm: &KvmVm,
        mem: &GuestMemoryMmap,
        id: &str,
        device: D,
    ) -> Result<(Arc<Mutex<D>>, u64, u32), DeviceError>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        if self.virtio.len() >= layout::MAX_VIRTIO_DEVICES {
            return Err(DeviceError::NoSlot(id.to_string()));
        }
        if self.virtio(id).is_some() {
            return Err(DeviceError::DuplicateId(id.to_string()));
        }
        let (base, irq) = layout::virtio_slot(self.virtio.len());
        for (queue, evt) in device.queue_events().iter().enumerate() {
            vm.register_ioevent(evt, base + mmio::reg::QUEUE_NOTIFY, queue as u32)
                .map_err(DeviceError::Kvm)?;
        }
        let irq_evt = eventfd("a virtio interrupt")?;
        vm.register_irqfd(&irq_evt, irq).map_err(DeviceError::Kvm)?;
        let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq_evt)));
        let device_type = device.device_type();
        let device = Arc::new(Mutex::new(device));
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device.clone(),
            mem.clone(),
            interrupt,
        )));
        self.mmio
            .insert(transport.clone(), base, mmio::MMIO_LEN)
            .map_err(DeviceError::Bus)?;
        self.subscribers.push(device.clone());
        self.virtio.push(VirtioSlot {
            id: id.to_string(),
            device_type,
            mmio_base: base,
            irq,
            device: device.clone(),
            transport,
        });
        Ok((device, base, irq))
    }

    /// Every IOAPIC pin a device uses, with the device's name: the i8042, the serial port and
    /// each virtio device by ID.
    pub fn irq_pins(&self) -> Vec<(u32, String)> {
        let mut legacy = vec![
            (layout::KEYBOARD_IRQ, "i8042".to_string()),
            (layout::SERIAL_IRQ, "serial".to_string()),
        ];
        if self.acpi.is_some() {
            legacy.push((layout::GED_IRQ, "ACPI events".to_string()));
        }
        let virtio = self
            .virtio
            .iter()
            .map(|v| (v.irq, format!("virtio {}", v.id)));
        legacy.into_iter().chain(virtio).collect()
    }

    /// What a snapshot of the running VM reads its devices' state through.
    pub fn snapshot_handles(&self) -> DeviceHandles {
        DeviceHandles {
            serial: self.serial.clone(),
            i8042: self.i8042.clone(),
            acpi: self.acpi.clone(),
            transports: self
                .virtio
                .iter()
                .map(|v| (v.id.clone(), v.transport.clone()))
                .collect(),
        }
    }

    /// Puts the devices' state of a snapshot back (the serial port's was given to
    /// [`DeviceManager::new`]): the i8042, the ACPI registers, and each virtio transport,
    /// whose devices the driver had started resume work on their queues.
    pub fn restore(&self, state: &DevicesState) -> Result<(), String> {
        fennec_devices::lock(&self.i8042).restore(&state.i8042);
        if let (Some(acpi), Some(events)) = (&self.acpi, state.acpi_events) {
            fennec_devices::lock(acpi).restore(events);
        }
        if state.virtio.len() != self.virtio.len() {
            return Err(format!(
                "the snapshot has {} virtio devices, the VM {}",
                state.virtio.len(),
                self.virtio.len()
            ));
        }
        for ((id, saved), slot) in state.virtio.iter().zip(&self.virtio) {
            if *id != slot.id {
                return Err(format!(
                    "the snapshot has virtio device {id:?} where the VM has {:?}",
                    slot.id
                ));
            }
            fennec_devices::lock(&slot.transport)
                .restore(saved)
                .map_err(|e| format!("virtio device {id:?}: {e}"))?;
        }
        Ok(())
    }

    /// The virtio device with ID `id`.
    pub fn virtio(&self, id: &str) -> Option<&VirtioSlot> {
        self.virtio.iter().find(|v| v.id == id)
    }

    /// The kernel command line's `virtio_mmio.device=` entries, one per virtio transport in
    /// slot order: how a guest without firmware tables learns of them (it probes them in this
    /// order).
    pub fn cmdline_entries(&self) -> Vec<String> {
        self.virtio
            .iter()
            .map(
                |VirtioSlot {
                     mmio_base: base,
                     irq,
                     ..
                 }| {
                    format!(
                        "virtio_mmio.device={}K@{base:#x}:{irq}",
                        mmio::MMIO_LEN / 1024
                    )
                },
            )
            .collect()
    }
}

/// The devices a snapshot saves, held by the running VM's controller.
pub struct DeviceHandles {
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042<EventFdTrigger>>>,
    acpi: Option<Arc<Mutex<AcpiPower<EventFdTrigger>>>>,
    transports: Vec<(String, Arc<Mutex<MmioTransport>>)>,
}

impl DeviceHandles {
    /// The devices' state; the VM is paused, so nothing changes it meanwhile.
    pub fn save(&self) -> Result<DevicesState, String> {
        let mut virtio = Vec::with_capacity(self.transports.len());
        for (id, transport) in &self.transports {
            let state = fennec_devices::lock(transport)
                .save()
                .map_err(|e| format!("virtio device {id:?}: {e}"))?;
            virtio.push((id.clone(), state));
        }
        Ok(DevicesState {
            serial: fennec_devices::lock(&self.serial).save(),
            i8042: fennec_devices::lock(&self.i8042).save(),
            acpi_events: self.acpi.as_ref().map(|a| fennec_devices::lock(a).save()),
            virtio,
        })
    }
}
