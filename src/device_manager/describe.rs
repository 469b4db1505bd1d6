//! The machine as the guest learns of it, made from what was attached: the kernel command
//! line's `virtio_mmio.device=` entries and the MP table, which fennec's microVM kernel reads,
//! and the ACPI tables' input ([`acpi::Machine`]), which distribution kernels read.

use fennec_boot::layout;
use fennec_boot::x86_64::acpi;
use fennec_devices::legacy::acpi as acpi_regs;
use fennec_devices::virtio::mmio;

use super::manager::DeviceManager;
use super::virtio::Location;

impl DeviceManager {
    /// The kernel command line's `virtio_mmio.device=` entries, one per virtio-mmio transport
    /// in slot order: how a guest without firmware tables learns of them (it probes them in
    /// this order).
    pub fn cmdline_entries(&self) -> Vec<String> {
        self.virtio
            .slots
            .iter()
            .map(|slot| match slot.location {
                Location::Mmio { base, irq } => format!(
                    "virtio_mmio.device={}K@{base:#x}:{irq}",
                    mmio::MMIO_LEN / 1024
                ),
            })
            .collect()
    }

    /// Every IOAPIC pin a device uses, with the device's name: the i8042, the serial port, the
    /// ACPI events and each virtio device by ID.
    pub fn irq_pins(&self) -> Vec<(u32, String)> {
        let mut pins = vec![
            (layout::KEYBOARD_IRQ, "i8042".to_string()),
            (layout::SERIAL_IRQ, "serial".to_string()),
        ];
        if self.legacy.acpi.is_some() {
            pins.push((layout::GED_IRQ, "ACPI events".to_string()));
        }
        for slot in &self.virtio.slots {
            match slot.location {
                Location::Mmio { irq, .. } => pins.push((irq, format!("virtio {}", slot.id))),
            }
        }
        pins
    }

    /// The machine as the ACPI tables describe it to a guest with `vcpus` vCPUs: the serial
    /// port, the i8042, the pvpanic register, every virtio-mmio transport in slot order
    /// (`LNRO0005`, the ID Linux's virtio-mmio driver matches), and fennec's power registers.
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
            acpi::Device {
                name: *b"PEVT",
                hid: acpi::Hid::Name("QEMU0001"),
                uid: 0,
                resources: vec![acpi::Resource::Io {
                    base: port(layout::PVPANIC_PORT),
                    len: layout::PVPANIC_PORT_SIZE as u8,
                }],
            },
        ];
        for (i, slot) in self.virtio.slots.iter().enumerate() {
            let Location::Mmio { base, irq } = slot.location;
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
                        base: base as u32,
                        len: mmio::MMIO_LEN as u32,
                    },
                    acpi::Resource::Irq(irq),
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
}
