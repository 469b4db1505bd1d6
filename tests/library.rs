//! The library API boots the tiny kernels with a console the caller owns, and stops a running
//! guest on request.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use fennec::config::{BlockConfig, BootSourceConfig, MachineConfig, VmConfig};
use fennec::{Console, ExitReason, Vm};

use common::*;

/// A console sink the test can read while the guest runs.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, marker: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.text().contains(marker) {
            assert!(
                Instant::now() < deadline,
                "no {marker:?} on the console:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn config(kernel: &str, boot_args: &str) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSourceConfig {
            kernel_image_path: tiny(kernel),
            initrd_path: None,
            boot_args: Some(boot_args.into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 64,
            ..MachineConfig::default()
        },
        drives: Vec::new(),
        net: Vec::new(),
        mmds_config: None,
        entropy: None,
        vsock: None,
    }
}

#[test]
fn test_library_drive_metrics_count_guest_io() {
    require_kvm();
    let (_dir, img) = temp_file("lib.img", &pattern(64 * 512, 5));
    let mut cfg = config("pvh.elf", "console=ttyS0 tiny.mode=blk");
    cfg.drives.push(BlockConfig::path("lib-disk", img));
    let sink = Sink::default();
    let console = Console {
        output: Box::new(sink.clone()),
        input: None,
    };
    let handle = Vm::new(&cfg, console).unwrap().start().unwrap();
    let drive = handle.drives()[0].clone();
    assert_eq!(
        (drive.id.as_str(), drive.guest_name.as_str()),
        ("lib-disk", "vda")
    );
    assert_eq!(drive.sectors, 64);
    assert_eq!(handle.wait().unwrap(), ExitReason::Reset, "{}", sink.text());
    assert!(sink.text().contains("TINY blk done"), "{}", sink.text());
    let m = &drive.metrics;
    assert_eq!(m.write_count.load(Ordering::Relaxed), 1);
    assert_eq!(m.write_bytes.load(Ordering::Relaxed), 512);
    assert_eq!(m.get_id_count.load(Ordering::Relaxed), 1);
    assert!(m.read_count.load(Ordering::Relaxed) >= 13);
    assert_eq!(m.io_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn test_library_boot_reports_reset_and_fills_console() {
    require_kvm();
    let sink = Sink::default();
    let console = Console {
        output: Box::new(sink.clone()),
        input: None,
    };
    let vm = Vm::new(&config("bzImage", "lib"), console).unwrap();
    let handle = vm.start().unwrap();
    let metrics = handle.serial_metrics();
    let reason = handle.wait().unwrap();
    assert_eq!(reason, ExitReason::Reset, "{}", sink.text());
    let report = Report::parse(&sink.text());
    assert_eq!(
        (report.boot.as_str(), report.cpus),
        ("linux64", 2),
        "{}",
        sink.text()
    );
    let counted = metrics.bytes_out.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, sink.0.lock().unwrap().len() as u64);
}

#[test]
fn test_library_stop_ends_a_guest_waiting_for_input() {
    require_kvm();
    let sink = Sink::default();
    let (host, guest_side) = UnixStream::pair().unwrap();
    let console = Console {
        output: Box::new(sink.clone()),
        input: Some(Box::new(guest_side)),
    };
    let handle = Vm::new(&config("pvh.elf", "tiny.mode=echo"), console)
        .unwrap()
        .start()
        .unwrap();
    sink.wait_for("TINY ready\n");
    (&host).write_all(b"ping\n").unwrap();
    sink.wait_for("ping\n");
    handle.stop().unwrap();
    assert_eq!(
        handle.wait().unwrap(),
        ExitReason::Stopped,
        "{}",
        sink.text()
    );
    // The VM's end of the console is closed once every VM thread has exited.
    let mut rest = Vec::new();
    (&host).read_to_end(&mut rest).unwrap();
}

#[test]
fn test_library_two_vms_in_one_process_run_side_by_side() {
    require_kvm();
    let sinks = [Sink::default(), Sink::default()];
    let handles: Vec<_> = sinks
        .iter()
        .zip(["pvh.elf", "elf64.elf"])
        .map(|(sink, kernel)| {
            let console = Console {
                output: Box::new(sink.clone()),
                input: None,
            };
            Vm::new(&config(kernel, kernel), console)
                .unwrap()
                .start()
                .unwrap()
        })
        .collect();
    for (handle, sink) in handles.into_iter().zip(&sinks) {
        assert_eq!(handle.wait().unwrap(), ExitReason::Reset, "{}", sink.text());
    }
    assert_eq!(
        Report::parse(&sinks[0].text()).cmdline,
        "pvh.elf console=ttyS0 reboot=k"
    );
    assert_eq!(
        Report::parse(&sinks[1].text()).cmdline,
        "elf64.elf console=ttyS0 reboot=k"
    );
}

#[test]
fn test_library_snapshot_and_restore_with_the_builder() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let sink = Sink::default();
    let console = Console {
        output: Box::new(sink.clone()),
        input: None,
    };
    let vm =
        fennec::VmBuilder::from_config(config("pvh.elf", "tiny.mode=counter counter.delay=200000"))
            .console(console)
            .start()
            .unwrap();
    sink.wait_for("TINY tick 2\n");
    assert!(
        vm.snapshot(&snap).is_err(),
        "a running VM is not snapshotted"
    );
    vm.pause().unwrap();
    // What the guest printed before the pause reaches the sink through the console's buffer.
    std::thread::sleep(Duration::from_millis(300));
    let saved = vm.snapshot(&snap).unwrap();
    assert_eq!(saved.memory_bytes, 64 << 20);
    let last = sink
        .text()
        .lines()
        .filter(|l| l.starts_with("TINY tick"))
        .count() as u64
        - 1;
    drop(vm);

    let restored_sink = Sink::default();
    let console = Console {
        output: Box::new(restored_sink.clone()),
        input: None,
    };
    let restored = fennec::VmBuilder::restore(&snap)
        .unwrap()
        .console(console)
        .start()
        .unwrap();
    restored_sink.wait_for(&format!("TINY tick {}\n", last + 1));
    assert!(!restored_sink.text().contains("TINY tick 0\n"));
    restored.stop().unwrap();
    assert_eq!(restored.wait().unwrap(), ExitReason::Stopped);
}
