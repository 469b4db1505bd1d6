//! Tests of the ACPI tables: every table's checksum and length, the pointers between them, the
//! MADT's entries, and the DSDT decoded back to ASL by ACPICA's `iasl` and compared.

use super::*;

const POWER: PowerRegisters = PowerRegisters {
    sleep_control: 0x600,
    sleep_status: 0x601,
    reset: (0x602, 0x0f),
    s5_sleep_type: 5,
    event: 0x603,
    power_button_event: 1,
    event_irq: 23,
};

fn machine(vcpus: u8, virtio: usize) -> Machine {
    let mut devices = vec![Device {
        name: *b"COM1",
        hid: Hid::Eisa("PNP0501"),
        uid: 0,
        resources: vec![
            Resource::Io {
                base: 0x3f8,
                len: 8,
            },
            Resource::Irq(4),
        ],
    }];
    for i in 0..virtio {
        let name = format!("V{i:03}");
        devices.push(Device {
            name: name.as_bytes().try_into().unwrap(),
            hid: Hid::Name("LNRO0005"),
            uid: i as u32,
            resources: vec![
                Resource::Mmio {
                    base: 0xd000_0000 + 0x1000 * i as u32,
                    len: 0x1000,
                },
                Resource::Irq(5 + i as u32),
            ],
        });
    }
    Machine {
        vcpus,
        devices,
        power: POWER,
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// The table at `addr`.
fn at(tables: &[(u64, Vec<u8>)], addr: u64) -> &[u8] {
    &tables
        .iter()
        .find(|(a, _)| *a == addr)
        .unwrap_or_else(|| panic!("no table at {addr:#x}"))
        .1
}

#[test]
fn test_every_table_sums_to_zero_and_has_its_length() {
    let tables = build(&machine(4, 18)).unwrap();
    let (rsdp_at, rsdp) = &tables[0];
    assert_eq!(*rsdp_at, layout::ACPI_START);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum (first 20 bytes)");
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    for (addr, table) in &tables[1..] {
        let sig = String::from_utf8_lossy(&table[..4]);
        assert_eq!(u32_at(table, 4) as usize, table.len(), "{sig} length");
        assert_eq!(sum(table), 0, "{sig} checksum");
        assert_eq!(addr % 8, 0, "{sig} at {addr:#x} is not aligned");
    }
    let last = tables.last().unwrap();
    assert!(last.0 + last.1.len() as u64 <= layout::ACPI_END);
    // No two tables overlap.
    let mut spans: Vec<(u64, u64)> = tables
        .iter()
        .map(|(a, t)| (*a, *a + t.len() as u64))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "{:x?} overlaps {:x?}", w[0], w[1]);
    }
}

#[test]
fn test_pointers_lead_from_rsdp_to_every_table() {
    let tables = build(&machine(2, 2)).unwrap();
    let xsdt = at(&tables, u64_at(&tables[0].1, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    let listed: Vec<&[u8]> = (36..xsdt.len())
        .step_by(8)
        .map(|off| &at(&tables, u64_at(xsdt, off))[..4])
        .collect();
    assert_eq!(listed, [b"FACP", b"APIC"]);
    let fadt = at(&tables, u64_at(xsdt, 36));
    // X_DSDT at offset 140.
    assert_eq!(&at(&tables, u64_at(fadt, 140))[..4], b"DSDT");
}

#[test]
fn test_fadt_is_hardware_reduced_with_fennec_power_registers() {
    let tables = build(&machine(1, 0)).unwrap();
    let fadt = at(&tables, u64_at(at(&tables, u64_at(&tables[0].1, 24)), 36));
    let flags = u32_at(fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_ne!(flags & (1 << 4), 0, "no fixed power button");
    let iapc = u16::from_le_bytes([fadt[109], fadt[110]]);
    assert_eq!(
        iapc,
        IAPC_8042 | IAPC_NO_VGA | IAPC_NO_MSI | IAPC_NO_CMOS_RTC
    );
    // A generic address: space, width, offset, access size, address.
    let gas = |off: usize| {
        (
            fadt[off],
            fadt[off + 1],
            fadt[off + 3],
            u64_at(fadt, off + 4),
        )
    };
    assert_eq!(gas(116), (1, 8, 1, 0x602), "RESET_REG");
    assert_eq!(fadt[128], 0x0f, "RESET_VALUE");
    assert_eq!(gas(244), (1, 8, 1, 0x600), "SLEEP_CONTROL_REG");
    assert_eq!(gas(256), (1, 8, 1, 0x601), "SLEEP_STATUS_REG");
    assert_eq!(fadt[8], 6, "FADT major revision");
}

#[test]
fn test_madt_has_a_local_apic_per_vcpu_the_ioapic_and_the_timer_override() {
    let tables = build(&machine(3, 0)).unwrap();
    let xsdt = at(&tables, u64_at(&tables[0].1, 24));
    let madt = at(&tables, u64_at(xsdt, 44));
    assert_eq!(u32_at(madt, 36), layout::APIC_START as u32);
    let mut entries = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let (kind, len) = (madt[off], madt[off + 1] as usize);
        assert!(
            len >= 2 && off + len <= madt.len(),
            "entry at {off} runs past the table"
        );
        entries.push((kind, madt[off..off + len].to_vec()));
        off += len;
    }
    let lapics: Vec<(u8, u8, u32)> = entries
        .iter()
        .filter(|(k, _)| *k == 0)
        .map(|(_, e)| (e[2], e[3], u32_at(e, 4)))
        .collect();
    assert_eq!(lapics, [(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
    let ioapic: Vec<&Vec<u8>> = entries
        .iter()
        .filter(|(k, _)| *k == 1)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ioapic.len(), 1);
    assert_eq!(ioapic[0][2], 3, "IOAPIC ID after the vCPUs'");
    assert_eq!(u32_at(ioapic[0], 4), layout::IOAPIC_START as u32);
    assert_eq!(u32_at(ioapic[0], 8), 0, "GSI base");
    let iso: Vec<(u8, u32)> = entries
        .iter()
        .filter(|(k, _)| *k == 2)
        .map(|(_, e)| (e[3], u32_at(e, 4)))
        .collect();
    assert_eq!(iso, [(0, 2)], "ISA IRQ 0 on GSI 2");
    assert!(
        entries
            .iter()
            .any(|(k, e)| *k == 4 && e[2] == 0xff && e[5] == 1),
        "LINT1 NMI"
    );
}

#[test]
fn test_the_largest_machine_fits() {
    build(&machine(layout::MAX_VCPUS, layout::MAX_VIRTIO_DEVICES)).unwrap();
}

/// ASL without comments (`//` and `/* */`) and with runs of white space as one space.
fn normalise(asl: &str) -> String {
    let mut text: String = asl
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    while let Some(start) = text.find("/*") {
        let end = text[start..]
            .find("*/")
            .map_or(text.len(), |e| start + e + 2);
        text.replace_range(start..end, " ");
    }
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" )", ")")
}

/// The DSDT as ACPICA's disassembler reads it.
fn disassemble(dsdt: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("fennec-dsdt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let aml = dir.join("dsdt.aml");
    std::fs::write(&aml, dsdt).unwrap();
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&aml)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run iasl ({e}): apt-get install acpica-tools (resources/prereqs.sh does)"
            )
        });
    let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap_or_else(|e| {
        panic!(
            "iasl -d wrote no dsdt.dsl ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    normalise(&dsl)
}

#[test]
fn test_dsdt_decodes_back_to_each_device() {
    let tables = build(&machine(2, 2)).unwrap();
    let fadt = at(&tables, u64_at(at(&tables, u64_at(&tables[0].1, 24)), 36));
    let asl = disassemble(at(&tables, u64_at(fadt, 140)));
    let expected = [
        r#"Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })"#,
        r#"Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, Zero) Name (_CRS, ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08, ) Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000004, } }) }"#,
        r#"Device (V000) { Name (_HID, "LNRO0005") Name (_UID, Zero) Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000, ) Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000005, } }) }"#,
        r#"Device (V001) { Name (_HID, "LNRO0005") Name (_UID, One) Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xD0001000, 0x00001000, ) Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000006, } }) }"#,
        r#"Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) }"#,
        r#"Device (GED) { Name (_HID, "ACPI0013") Name (_UID, Zero) Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000017, } }) OperationRegion (GDST, SystemIO, 0x0603, One) Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }"#,
        r#"Method (_EVT, 1, Serialized) { Local0 = GDAT If ((Local0 & One)) { Notify (\_SB.PWRB, 0x80) } }"#,
    ];
    for e in expected.map(normalise) {
        assert!(
            asl.contains(&e),
            "the DSDT lacks\n  {e}\nit decodes to\n  {asl}"
        );
    }
}
