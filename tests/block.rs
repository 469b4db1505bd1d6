//! virtio-blk on `/dev/kvm`, driven by the tiny PVH kernel's polled virtio-mmio driver
//! (`resources/tiny/virtio.c`): reads, writes, flushes, GET_ID, WRITE_ZEROES, a device reset,
//! and every hostile request, after each of which the device must still serve sector 0. The
//! images are then checked on the host byte for byte.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

const SECTOR: usize = 512;
const WRITE_PATTERN: &[u8] = b"fennec-tiny-write:";

/// The tiny kernel's `TINY blk<N> ...` lines, keyed by "<N> <first word>" (and for the hostile
/// cases "<N> bad=<case>").
fn blk_lines(console: &str) -> HashMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("TINY blk"))
        .filter_map(|l| {
            let (dev, rest) = l.split_once(' ')?;
            let key = rest.split([' ', '=']).next()?;
            let key = if key == "bad" {
                rest.split(' ').next()?.to_string()
            } else {
                key.to_string()
            };
            Some((format!("{dev} {key}"), rest.to_string()))
        })
        .collect()
}

fn written_sector() -> Vec<u8> {
    (0..SECTOR)
        .map(|k| WRITE_PATTERN[k % WRITE_PATTERN.len()])
        .collect()
}

/// The hostile cases and what the device must answer: (case, status, used length).
const HOSTILE: &[(&str, &str, &str)] = &[
    ("hdr_oob", "1", "1"),
    ("data_oob", "1", "1"),
    ("wrong_dir", "1", "1"),
    ("short_status", "none", "0"),
    ("past_end", "1", "1"),
    ("absurd_len", "1", "1"),
    ("unaligned", "1", "1"),
    ("loop", "none", "0"),
    ("bad_next", "none", "0"),
    ("unknown_type", "2", "1"),
    ("writable_hdr", "1", "1"),
];

#[test]
fn test_tiny_driver_reads_writes_and_survives_hostile_requests() {
    require_kvm();
    let rw = pattern(128 * SECTOR, 7);
    let ro = pattern(64 * SECTOR, 9);
    let (_d1, rw_path) = temp_file("rw.img", &rw);
    let (_d2, ro_path) = temp_file("ro.img", &ro);
    let kernel = tiny("pvh.elf");
    let run = fennec(&[
        "-v",
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 tiny.mode=blk",
        "--disk",
        &format!("path={},id=tiny-root", rw_path.display()),
        "--disk",
        &format!("path={},ro,id=tiny-ro", ro_path.display()),
    ]);
    let ctx = run.context();
    assert_eq!(run.code, Some(0), "{ctx}");
    let lines = blk_lines(&run.stdout);
    let get = |key: &str| {
        lines
            .get(key)
            .unwrap_or_else(|| panic!("no `TINY blk{key}` line\n{ctx}"))
            .as_str()
    };

    // Identity and geometry, for both drives.
    assert_eq!(
        get("0 id"),
        "id=tiny-root sectors=128 ro=0 irq=1 getid status=0 used=21"
    );
    assert_eq!(
        get("1 id"),
        "id=tiny-ro sectors=64 ro=1 irq=1 getid status=0 used=21"
    );

    // The guest read exactly the image's bytes.
    let fnv = |b: &[u8]| format!("{:#018x}", fnv1a(b));
    assert_eq!(
        get("0 read"),
        format!("read fnv={} status=0 used=2049", fnv(&rw[..4 * SECTOR]))
    );
    assert_eq!(
        get("1 read"),
        format!("read fnv={} status=0 used=2049", fnv(&ro[..4 * SECTOR]))
    );

    // Writes land on the writable drive and are refused on the read-only one.
    assert_eq!(get("0 write"), "write status=0 used=1");
    assert_eq!(get("0 flush"), "flush status=0 used=1");
    assert_eq!(
        get("0 readback"),
        format!("readback fnv={} status=0 used=513", fnv(&written_sector()))
    );
    assert_eq!(get("1 write"), "write status=1 used=1");
    assert_eq!(
        get("1 readback"),
        format!(
            "readback fnv={} status=0 used=513",
            fnv(&ro[SECTOR..2 * SECTOR])
        )
    );
    assert_eq!(get("0 zeroes"), "zeroes status=0 used=1");
    assert!(
        !lines.contains_key("1 zeroes"),
        "a read-only drive offered WRITE_ZEROES\n{ctx}"
    );

    // Every hostile request is answered or dropped, and the device keeps serving.
    for dev in ["0", "1"] {
        for (case, status, used) in HOSTILE {
            assert_eq!(
                get(&format!("{dev} bad={case}")),
                format!("bad={case} status={status} used={used} then=ok"),
                "drive {dev}\n{ctx}"
            );
        }
    }

    // A reset really resets: a fresh bring-up reads sector 0 again.
    assert_eq!(
        get("0 reset"),
        format!("reset fnv={} status=0 used=513", fnv(&rw[..SECTOR]))
    );

    // On the host: sector 1 written, sector 2 zeroed, everything else untouched.
    let after = std::fs::read(&rw_path).unwrap();
    let mut expected = rw.clone();
    expected[SECTOR..2 * SECTOR].copy_from_slice(&written_sector());
    expected[2 * SECTOR..3 * SECTOR].fill(0);
    assert!(
        after == expected,
        "the writable image differs from what the guest wrote"
    );
    assert!(
        std::fs::read(&ro_path).unwrap() == ro,
        "the read-only image changed"
    );

    // The metrics say the same.
    assert!(
        run.stderr.contains("Drive \"tiny-ro\": read_count=14 read_bytes=8704 flush_count=2 get_id_count=1 unsupported_requests=1 invalid_requests=8 dropped_chains=3"),
        "{ctx}"
    );
}

#[test]
fn test_writable_image_is_locked_against_a_second_vm() {
    require_kvm();
    let (_dir, img) = temp_file("locked.img", &pattern(16 * SECTOR, 3));
    let disk = format!("path={}", img.display());
    let kernel = tiny("pvh.elf");
    let mut first = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["run", "--kernel", kernel.to_str().unwrap()])
        .args(["--cmdline", "console=ttyS0 tiny.mode=echo", "--disk", &disk])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("TINY ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the first VM ended early"
        );
    }

    let second = fennec(&["run", "--kernel", kernel.to_str().unwrap(), "--disk", &disk]);
    let reader = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--disk",
        &format!("{disk},ro"),
    ]);

    first.stdin.take().unwrap().write_all(b"q").unwrap();
    let status = wait_with_timeout(&mut first, TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    for run in [second, reader] {
        assert_eq!(run.code, Some(1), "{}", run.context());
        assert_eq!(
            run.stderr.trim(),
            format!(
                "fennec: Drive \"disk0\": Disk image {} is in use by another VM (it is locked)",
                img.display()
            )
        );
    }
}

#[test]
fn test_missing_image_is_one_line_error() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--disk",
        "path=/nonexistent/disk.img,id=data",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert_eq!(
        run.stderr.trim(),
        "fennec: Drive \"data\": Cannot open disk image /nonexistent/disk.img: No such file or directory (os error 2)"
    );
}

#[test]
fn test_bad_disk_argument_is_usage_error() {
    let run = fennec(&["run", "--kernel", "/k", "--disk", "path=/a,cache=none"]);
    assert_eq!(run.code, Some(2), "{}", run.context());
    assert!(
        run.stderr.contains("unknown option \"cache=none\""),
        "{}",
        run.context()
    );
}

#[test]
fn test_two_root_disks_rejected() {
    let run = fennec(&[
        "run",
        "--kernel",
        "/k",
        "--disk",
        "path=/a,root",
        "--disk",
        "path=/b,root",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(
        run.stderr
            .contains("Drives \"disk0\" and \"disk1\" are both marked root"),
        "{}",
        run.context()
    );
}

/// A drive's rate limiter (Firecracker's `rate_limiter`, ops bucket of one request per 100 ms)
/// spaces the tiny driver's whole test sequence out, and the sequence comes out the same.
#[test]
fn test_rate_limited_drive_serves_at_its_rate_and_loses_nothing() {
    use fennec::config::{BlockConfig, RateLimiterConfig, TokenBucketConfig};
    use fennec::harness::TestVm;
    use std::time::{Duration, Instant};

    require_kvm();
    let rw = pattern(128 * SECTOR, 7);
    let (_d, path) = temp_file("rw.img", &rw);
    let limiter = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: None,
            refill_time: 100,
        }),
    };
    let drive = BlockConfig {
        rate_limiter: Some(limiter),
        ..BlockConfig::path("tiny-root", &path)
    };
    let builder = fennec::VmBuilder::new(tiny("pvh.elf"))
        .cmdline("console=ttyS0 tiny.mode=blk")
        .drive(drive);
    let started = Instant::now();
    let mut vm = TestVm::boot(builder, Duration::from_secs(60)).unwrap();
    vm.expect("TINY blk done").unwrap();
    let elapsed = started.elapsed();
    let console = vm.console();
    let lines = blk_lines(&console);
    assert_eq!(
        lines.get("0 read").map(String::as_str),
        Some(
            format!(
                "read fnv={:#018x} status=0 used=2049",
                fnv1a(&rw[..4 * SECTOR])
            )
            .as_str()
        ),
        "{console}"
    );
    assert_eq!(
        lines.get("0 write").map(String::as_str),
        Some("write status=0 used=1")
    );
    let metrics = vm.vm().metrics();
    let drive = &metrics.devices["tiny-root"].counters;
    let count = |k: &str| drive[k].as_u64().unwrap();
    let served = count("read_count")
        + count("write_count")
        + count("flush_count")
        + count("get_id_count")
        + count("write_zeroes_count");
    assert!(count("rate_limited") > 0, "{drive}");
    // One request per 100 ms: the served ones cannot have taken less (the first is free).
    let least = Duration::from_millis(100 * (served - 1));
    assert!(
        elapsed >= least,
        "{served} requests in {elapsed:?}, under the {least:?} the limit allows"
    );
}
