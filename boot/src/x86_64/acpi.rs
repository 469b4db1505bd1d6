//! ACPI tables: how a kernel built for ordinary PCs (a distribution's) learns the machine.
//!
//! A distribution kernel has no MP-table parser and no command-line virtio devices; it reads
//! ACPI. fennec describes a hardware-reduced ACPI machine (no PM1 blocks, no SCI, no FACS):
//!
//! - **RSDP** at [`layout::ACPI_START`] (in the BIOS area a kernel scans, and handed over by
//!   the boot protocol too), pointing at the **XSDT**, which lists the FADT and the MADT.
//! - **FADT**: hardware-reduced, with the sleep control and status registers (`poweroff`) and
//!   the reset register (`reboot`) in port I/O, and the PC legacy a guest may look for (i8042
//!   present, no VGA, no CMOS clock, no MSI).
//! - **MADT**: a local APIC per vCPU, the IOAPIC, ISA IRQ 0 routed to GSI 2 (as KVM's PIT
//!   delivers it), and LINT1 as NMI.
//! - **DSDT**: `\_S5` (the sleep type that means soft-off), and under `\_SB` every device given
//!   in [`Machine::devices`] with its resources, a power button (`PNP0C0C`) and a generic event
//!   device (`ACPI0013`) whose event method reads the event register and notifies the button.
//!
//! The tables are built with rust-vmm's `acpi_tables`; this module decides what they say.

use acpi_tables::aml::{
    self, Device as AmlDevice, EISAName, Field, FieldAccessType, FieldEntry, FieldLockRule,
    FieldUpdateRule, Interrupt, Memory32Fixed, Method, Name, Notify, OpRegion, OpRegionSpace,
    Package, Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{Immutable, IntoBytes};

use crate::layout;

const OEM_ID: [u8; 6] = *b"FENNEC";
const OEM_TABLE_ID: [u8; 8] = *b"FENNECVM";
const OEM_REVISION: u32 = 1;

/// IAPC_BOOT_ARCH flags (ACPI 6.5, table 5.11): an 8042 is present, VGA is not, MSI is not
/// supported (there is no PCI), and there is no CMOS real-time clock.
const IAPC_8042: u16 = 1 << 1;
const IAPC_NO_VGA: u16 = 1 << 2;
const IAPC_NO_MSI: u16 = 1 << 3;
const IAPC_NO_CMOS_RTC: u16 = 1 << 5;

/// Errors while writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit the area set aside for them.
    #[error("The ACPI tables take {0} bytes, more than the {max} set aside for them", max = layout::ACPI_END - layout::ACPI_START)]
    TooLarge(u64),
    /// Writing into guest memory failed.
    #[error("Failed to write the ACPI tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// What a device's hardware ID is: a compressed EISA ID (`PNP0501`) or a string
/// (`LNRO0005`, `ACPI0013`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hid {
    /// Seven characters, three letters and four hex digits.
    Eisa(&'static str),
    /// Any other ID, as a string.
    Name(&'static str),
}

/// One resource a device decodes or raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `len` I/O ports from `base`.
    Io {
        /// The first port.
        base: u16,
        /// How many.
        len: u8,
    },
    /// A 32-bit MMIO window.
    Mmio {
        /// The first address.
        base: u32,
        /// Its length.
        len: u32,
    },
    /// An edge-triggered, active-high interrupt on this GSI (an IOAPIC pin).
    Irq(u32),
}

/// A device in the DSDT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its four-character ACPI name under `\_SB` (`COM1`, `V000`).
    pub name: [u8; 4],
    /// Its hardware ID.
    pub hid: Hid,
    /// Tells devices with the same ID apart.
    pub uid: u32,
    /// What it decodes and raises.
    pub resources: Vec<Resource>,
}

/// fennec's hardware-reduced power registers, all in port I/O, one byte each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerRegisters {
    /// The sleep control register: the guest writes `SLP_TYP << 2 | SLP_EN` to sleep.
    pub sleep_control: u16,
    /// The sleep status register.
    pub sleep_status: u16,
    /// The reset register and the value that resets the machine.
    pub reset: (u16, u8),
    /// The `SLP_TYP` of soft-off (S5), as `\_S5` tells the guest.
    pub s5_sleep_type: u8,
    /// The generic event device's event register: reading it returns the pending events and
    /// clears them.
    pub event: u16,
    /// The event bit of the power button.
    pub power_button_event: u8,
    /// The generic event device's interrupt (edge-triggered, active high).
    pub event_irq: u32,
}

/// What the tables describe.
#[derive(Clone, Debug)]
pub struct Machine {
    /// vCPUs; vCPU `i` has APIC ID `i`.
    pub vcpus: u8,
    /// The devices under `\_SB`, in order.
    pub devices: Vec<Device>,
    /// The power registers.
    pub power: PowerRegisters,
}

/// An interrupt source override (MADT type 2): ISA IRQ `source` arrives on GSI `gsi`.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    kind: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: u32,
    flags: u16,
}

acpi_tables::aml_as_bytes!(InterruptSourceOverride);

/// A local APIC NMI source (MADT type 4): LINT `lint` of processor `uid` (0xff: all) is NMI.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    kind: u8,
    length: u8,
    uid: u8,
    flags: u16,
    lint: u8,
}

acpi_tables::aml_as_bytes!(LocalApicNmi);

fn bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    aml.to_aml_bytes(&mut out);
    out
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

/// The FADT: hardware-reduced, with the sleep and reset registers.
fn fadt(power: &PowerRegisters, dsdt: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature buttons: the power button is a device, notified through the GED.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.iapc_boot_arch = (IAPC_8042 | IAPC_NO_VGA | IAPC_NO_MSI | IAPC_NO_CMOS_RTC).into();
    f.reset_reg = io_register(power.reset.0);
    f.reset_value = power.reset.1;
    f.sleep_control_reg = io_register(power.sleep_control);
    f.sleep_status_reg = io_register(power.sleep_status);
    f.hypervisor_vendor_identity = u64::from_le_bytes(*b"FENNEC\0\0").into();
    bytes(&f.finalize())
}

/// The MADT: the local APICs, the IOAPIC, IRQ 0 on GSI 2, LINT1 as NMI.
fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(layout::APIC_START as u32),
    );
    for id in 0..vcpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    // The IOAPIC's ID comes after the vCPUs' APIC IDs, as in the MP table.
    m.add_structure(IoApic::new(vcpus, layout::IOAPIC_START as u32, 0));
    m.add_structure(InterruptSourceOverride {
        kind: 2,
        length: 10,
        bus: 0,
        source: 0,
        gsi: 2,
        // Conforms to the bus: edge-triggered, active high.
        flags: 0,
    });
    m.add_structure(LocalApicNmi {
        kind: 4,
        length: 6,
        uid: 0xff,
        flags: 0,
        lint: 1,
    });
    bytes(&m)
}

/// One device's AML.
fn device_aml(d: &Device) -> Vec<u8> {
    let hid: Box<dyn Aml> = match d.hid {
        Hid::Eisa(id) => Box::new(EISAName::new(id)),
        Hid::Name(id) => Box::new(id),
    };
    let resources: Vec<Box<dyn Aml>> = d
        .resources
        .iter()
        .map(|r| -> Box<dyn Aml> {
            match *r {
                Resource::Io { base, len } => Box::new(IO::new(base, base, 1, len)),
                Resource::Mmio { base, len } => Box::new(Memory32Fixed::new(true, base, len)),
                Resource::Irq(gsi) => Box::new(Interrupt::new(true, true, false, false, gsi)),
            }
        })
        .collect();
    let crs = ResourceTemplate::new(resources.iter().map(|r| r.as_ref()).collect());
    let name = std::str::from_utf8(&d.name).unwrap_or("____");
    bytes(&AmlDevice::new(
        Path::new(name),
        vec![
            &Name::new("_HID".into(), hid.as_ref()),
            &Name::new("_UID".into(), &d.uid),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

/// The power button and the generic event device that presses it.
fn power_aml(power: &PowerRegisters) -> Vec<u8> {
    let mut out = bytes(&AmlDevice::new(
        "PWRB".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C0C")),
            &Name::new("_UID".into(), &aml::ZERO),
        ],
    ));
    let irq = Interrupt::new(true, true, false, false, power.event_irq);
    let crs = ResourceTemplate::new(vec![&irq]);
    let event_port = u32::from(power.event);
    let button = aml::And::new(&aml::ZERO, &aml::Local(0), &power.power_button_event);
    out.extend(bytes(&AmlDevice::new(
        "GED_".into(),
        vec![
            &Name::new("_HID".into(), &"ACPI0013"),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &crs),
            &OpRegion::new("GDST".into(), OpRegionSpace::SystemIO, &event_port, &1u8),
            &Field::new(
                "GDST".into(),
                FieldAccessType::Byte,
                FieldLockRule::NoLock,
                FieldUpdateRule::WriteAsZeroes,
                vec![FieldEntry::Named(*b"GDAT", 8)],
            ),
            &Method::new(
                "_EVT".into(),
                1,
                true,
                vec![
                    &aml::Store::new(&aml::Local(0), &Path::new("GDAT")),
                    &aml::If::new(
                        &button,
                        vec![&Notify::new(&Path::new("\\_SB_.PWRB"), &0x80u8)],
                    ),
                ],
            ),
        ],
    )));
    out
}

/// The DSDT: `\_S5`, then the devices, the power button and the GED under `\_SB`.
fn dsdt(machine: &Machine) -> Vec<u8> {
    let s5 = machine.power.s5_sleep_type;
    let mut body = bytes(&Name::new(
        "_S5_".into(),
        &Package::new(vec![&s5, &s5, &aml::ZERO, &aml::ZERO]),
    ));
    let mut devices = Vec::new();
    for d in &machine.devices {
        devices.extend(device_aml(d));
    }
    devices.extend(power_aml(&machine.power));
    body.extend(Scope::raw("\\_SB_".into(), devices));
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

/// The tables and where each goes: `(address, bytes)`, the RSDP first.
pub fn build(machine: &Machine) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let align = |a: u64| (a + 15) & !15;
    let rsdp_at = layout::ACPI_START;
    let xsdt_at = rsdp_at + align(Rsdp::len() as u64);
    // The XSDT lists two tables.
    let fadt_at = align(xsdt_at + 36 + 2 * 8);
    let madt_at = align(fadt_at + acpi_tables::fadt::FADT::len() as u64);
    let madt = madt(machine.vcpus);
    let dsdt_at = align(madt_at + madt.len() as u64);
    let dsdt = dsdt(machine);
    let end = dsdt_at + dsdt.len() as u64;
    if end > layout::ACPI_END {
        return Err(AcpiError::TooLarge(end - layout::ACPI_START));
    }
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_at);
    xsdt.add_entry(madt_at);
    Ok(vec![
        (rsdp_at, bytes(&Rsdp::new(OEM_ID, xsdt_at))),
        (xsdt_at, bytes(&xsdt)),
        (fadt_at, fadt(&machine.power, dsdt_at)),
        (madt_at, madt),
        (dsdt_at, dsdt),
    ])
}

/// Writes the tables into guest memory; returns the RSDP's address, for the boot protocol.
pub fn write(mem: &GuestMemoryMmap, machine: &Machine) -> Result<u64, AcpiError> {
    let tables = build(machine)?;
    for (addr, table) in &tables {
        mem.write_slice(table, GuestAddress(*addr))
            .map_err(AcpiError::Write)?;
    }
    Ok(tables[0].0)
}

#[cfg(test)]
mod tests;
