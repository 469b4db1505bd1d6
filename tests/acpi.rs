//! ACPI on `/dev/kvm`, read by the tiny kernel the way a distribution kernel reads it: the RSDP
//! found in the BIOS area, every table's checksum, the CPUs and IOAPIC of the MADT, the
//! virtio-mmio devices of the DSDT, and the FADT's sleep and reset registers doing what they
//! say. (A real distribution kernel and its systemd are the Linux tests' `linux_debian_*`.)

mod common;

use common::*;

/// The tiny kernel's `TINY acpi ...` lines, each without the prefix.
fn acpi_lines(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("TINY acpi "))
        .map(str::to_string)
        .collect()
}

/// Boots pvh.elf in `tiny.mode=acpi` with `extra` on its command line and `args` for fennec.
fn boot(extra: &str, args: &[&str]) -> Run {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let cmdline = format!("tiny.mode=acpi {extra}");
    let mut all = vec![
        "run",
        "-v",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        &cmdline,
    ];
    all.extend_from_slice(args);
    fennec(&all)
}

#[test]
fn acpi_tables_describe_the_machine_and_soft_off_powers_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<String> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("d{i}.img"));
            std::fs::write(&p, vec![0u8; 4096]).unwrap();
            format!("path={}", p.display())
        })
        .collect();
    let mut args = vec!["--vcpus", "3"];
    for d in &disks {
        args.extend(["--disk", d.as_str()]);
    }
    let run = boot("tiny.acpi=off", &args);
    let ctx = run.context();
    assert_eq!(
        acpi_lines(&run),
        [
            "rsdp=0x00000000000e0000 tables=FACP,APIC,DSDT",
            "cpus=3 ioapic=0x00000000fec00000 irq0=2",
            "reduced=1 s5=5 sleep=0x0000000000000600 reset=0x0000000000000602:0x000000000000000f",
            "devices=3",
            "pvpanic=0x0000000000000505 events=1",
        ],
        "{ctx}"
    );
    assert_eq!(run.code, Some(0), "{ctx}");
    assert!(run.stderr.contains("the guest powered off"), "{ctx}");
    // The MP table is there too, for kernels without ACPI.
    assert_eq!(run.report().mptable, "ok", "{ctx}");
}

#[test]
fn acpi_reset_register_resets() {
    let run = boot("tiny.acpi=reset", &[]);
    let ctx = run.context();
    assert!(
        !acpi_lines(&run).iter().any(|l| l.starts_with("bad")),
        "{ctx}"
    );
    assert_eq!(run.code, Some(0), "{ctx}");
    assert!(run.stderr.contains("the guest reset"), "{ctx}");
}

#[test]
fn acpi_reset_status_tells_a_reset_from_a_power_off() {
    // The caller asks for a status of its own for a reset; a power-off keeps 0. Without -v,
    // the last line on stderr still says which it was.
    let kernel = tiny("pvh.elf");
    let run = |mode: &str| {
        fennec(&[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            &format!("tiny.mode=acpi {mode}"),
            "--reset-status",
            "7",
        ])
    };
    let reset = run("tiny.acpi=reset");
    assert_eq!(reset.code, Some(7), "{}", reset.context());
    assert!(
        reset.stderr.trim_end().ends_with(
            "fennec: the guest reset (a reboot, a triple fault, or a kernel panic under panic=N)"
        ),
        "{}",
        reset.context()
    );
    let off = run("tiny.acpi=off");
    assert_eq!(off.code, Some(0), "{}", off.context());
    assert!(
        off.stderr
            .trim_end()
            .ends_with("fennec: the guest powered off"),
        "{}",
        off.context()
    );
}

#[test]
fn acpi_pvpanic_ends_the_vm_as_panicked() {
    // The guest finds the pvpanic register through the DSDT (QEMU0001, one I/O port) and writes
    // PANICKED, as Linux's pvpanic-mmio driver does from its panic notifier.
    let run = boot("tiny.acpi=panic", &[]);
    let ctx = run.context();
    assert!(
        acpi_lines(&run).contains(&"pvpanic=0x0000000000000505 events=1".to_string()),
        "{ctx}"
    );
    assert_eq!(run.code, Some(4), "{ctx}");
    assert!(
        run.stderr
            .trim_end()
            .ends_with("fennec: the guest's kernel panicked"),
        "{ctx}"
    );
}

#[test]
fn acpi_no_acpi_leaves_the_tables_out_and_keeps_the_mp_table() {
    let run = boot("tiny.acpi=off", &["--no-acpi", "--vcpus", "2"]);
    let ctx = run.context();
    assert_eq!(acpi_lines(&run), ["bad no RSDP"], "{ctx}");
    let report = run.report();
    assert_eq!((report.cpus, report.mptable.as_str()), (2, "ok"), "{ctx}");
    // Nothing decodes the ACPI ports: the guest ends by triple fault, as before, and fennec
    // says so.
    assert_eq!(run.code, Some(0), "{ctx}");
    assert!(!run.stderr.contains("powered off"), "{ctx}");
    assert!(run.stderr.contains("vCPU 0 triple-faulted"), "{ctx}");
}
