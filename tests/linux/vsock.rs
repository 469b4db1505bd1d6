//! vsock between a Linux guest and host programs, through Firecracker's Unix-socket protocol:
//! eight streams at once each way, 16 MiB each way in all, checked by SHA-256; a host reader
//! that does not read stops the guest at its credit; refusals on both sides; either end's close
//! seen by the other. Then the harness's commands over vsock, and a snapshot's clone taking new
//! connections on a new socket path.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::linux::{Guest, Session};
use crate::{linux_test, p, CMDLINE};

/// Streams at once, each way.
const STREAMS: usize = 8;
/// Bytes each stream carries: 16 MiB each way in all.
const STREAM_BYTES: usize = 2 << 20;
/// Bytes the guest tries to push to a host reader that does not read.
const STALLED_BYTES: usize = 4 << 20;
/// How long the guest may take to move them (the nested test host emulates every instruction
/// of the guest and of fennec's host).
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects to guest port `port` through `uds`: the stream after `OK <port>\n`, or the reason
/// it was refused.
fn connect_guest(uds: &Path, port: u32) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(uds).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TRANSFER_LIMIT)).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => return Err("closed before OK".into()),
            Err(e) => return Err(format!("{e} before OK")),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let port: u32 = line
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("answered {line:?}"))?;
    assert!(port >= 1 << 30, "the host side's port {port}");
    Ok(s)
}

/// [`connect_guest`], again while the guest program is still starting to listen (its port
/// refuses), for up to 30 s.
fn connect_guest_when_up(uds: &Path, port: u32) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect_guest(uds, port) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("guest port {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Sends `bytes` of stream `i`'s pseudo-random bytes on `s`, ends its sending side and waits
/// for the other side's end: the SHA-256 of what it sent.
fn send_stream(mut s: UnixStream, i: usize, bytes: usize) -> String {
    let mut hash = Sha256::new();
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ (i as u64 + 1);
    let mut buf = vec![0u8; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        for chunk in buf[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        s.write_all(&buf[..n]).unwrap();
        hash.update(&buf[..n]);
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    hex(&hash.finalize())
}

/// Reads `s` to its end: the SHA-256 and the length of what came.
fn read_stream(s: &mut UnixStream) -> (String, usize) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    loop {
        match s.read(&mut buf).unwrap() {
            0 => return (hex(&hash.finalize()), total),
            n => {
                hash.update(&buf[..n]);
                total += n;
            }
        }
    }
}

/// Runs `command` in the guest and waits up to `limit` for it: what it printed.
fn run_long(vm: &mut Session, command: &str, limit: Duration) -> String {
    let from = vm.console().len();
    vm.send_line(&format!("{command} > /tmp/out 2>&1; echo DONE-$((40+2))"));
    vm.expect_within(from, "DONE-42", limit);
    vm.run("cat /tmp/out")
}

/// Waits up to `limit` for `file` in the guest to have `lines` lines; its text.
fn wait_lines(vm: &mut Session, file: &str, lines: usize, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = vm.run(&format!("cat {file}"));
        if text.lines().count() >= lines || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The vsock device's counter `name`, through the control socket.
fn vsock_counter(api: &Path, name: &str) -> u64 {
    let m = crate::common::ctl(api, &["request", "GET", "/metrics"]);
    m["devices"]["vsock"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no vsock counter {name} in {m}"))
}

/// Bytes waiting to be read on `s`.
fn unread(s: &UnixStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for it.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n as usize
}

linux_test!(
    linux_vsock_streams_both_ways_refuses_and_sees_each_close,
    |g: &Guest| {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let api = dir.path().join("api.sock");
        let vsock = format!("cid=3,uds={}", uds.display());
        let mut vm = crate::start(
            &g.vmlinux,
            g,
            CMDLINE,
            &[
                "--vcpus",
                "2",
                "--memory",
                "256",
                "--api-socket",
                p(&api),
                "--vsock",
                &vsock,
            ],
        );
        vm.expect("FENNEC-GUEST-READY");
        vm.run(&format!(
            "fennec-agent hash 5000 {STREAMS} > /tmp/h2g 2>&1 & \
             fennec-agent echo 5001 & echo $! > /tmp/echo.pid"
        ));

        // Host to guest: eight streams at once into the guest, which hashes what comes.
        let started = Instant::now();
        let senders: Vec<_> = (0..STREAMS)
            .map(|i| {
                let uds = uds.clone();
                std::thread::spawn(move || {
                    send_stream(connect_guest_when_up(&uds, 5000), i, STREAM_BYTES)
                })
            })
            .collect();
        let mut sent: Vec<String> = senders.into_iter().map(|t| t.join().unwrap()).collect();
        let took = started.elapsed();
        let got = wait_lines(&mut vm, "/tmp/h2g", STREAMS, Duration::from_secs(60));
        let mut guest_got: Vec<String> = got
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(
                    (w[0], w.get(2).copied()),
                    ("conn", Some(&*STREAM_BYTES.to_string())),
                    "{got}"
                );
                w[1].to_string()
            })
            .collect();
        sent.sort();
        guest_got.sort();
        assert_eq!(sent, guest_got, "what the guest got is what the host sent");
        eprintln!(
            "host to guest: {} MiB in {took:?}",
            (STREAMS * STREAM_BYTES) >> 20
        );

        // Guest to host: eight streams at once to <uds>_6000, which hashes what comes.
        let listener = UnixListener::bind(format!("{}_6000", uds.display())).unwrap();
        let host = std::thread::spawn(move || {
            let readers: Vec<_> = (0..STREAMS)
                .map(|_| {
                    let (mut s, _) = listener.accept().unwrap();
                    std::thread::spawn(move || read_stream(&mut s))
                })
                .collect();
            readers
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        let started = Instant::now();
        let out = run_long(
            &mut vm,
            &format!("fennec-agent send 2 6000 {STREAMS} {STREAM_BYTES}"),
            TRANSFER_LIMIT,
        );
        let took = started.elapsed();
        let mut host_got: Vec<String> = host
            .join()
            .unwrap()
            .into_iter()
            .map(|(sha, len)| {
                assert_eq!(len, STREAM_BYTES);
                sha
            })
            .collect();
        let mut guest_sent: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("conn "))
            .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string())
            .collect();
        host_got.sort();
        guest_sent.sort();
        assert_eq!(
            guest_sent, host_got,
            "what the host got is what the guest sent:\n{out}"
        );
        eprintln!(
            "guest to host: {} MiB in {took:?}",
            (STREAMS * STREAM_BYTES) >> 20
        );

        // A host reader that does not read: the guest stops at its credit, and fennec holds no
        // more than that credit (64 KiB) beyond what the host socket holds; once the reader
        // reads, every byte arrives.
        let stalled = UnixListener::bind(format!("{}_6002", uds.display())).unwrap();
        let before = vsock_counter(&api, "tx_bytes");
        vm.send_line(&format!(
            "fennec-agent send 2 6002 1 {STALLED_BYTES} > /tmp/stall 2>&1 &"
        ));
        let (mut held, _) = stalled.accept().unwrap();
        let rss = || {
            let task = std::path::PathBuf::from(format!("/proc/{}", vm.pid()));
            let kb = crate::common::procfs::status_field(&task, "VmRSS").unwrap();
            kb.trim_end_matches(" kB").trim().parse::<u64>().unwrap()
        };
        std::thread::sleep(Duration::from_secs(10));
        let (pushed, rss_then) = (vsock_counter(&api, "tx_bytes"), rss());
        std::thread::sleep(Duration::from_secs(5));
        let (pushed_later, rss_later) = (vsock_counter(&api, "tx_bytes"), rss());
        let waiting = unread(&held);
        assert_eq!(pushed, pushed_later, "the guest stopped sending");
        let held_by_fennec = ((pushed - before) as usize).saturating_sub(waiting);
        assert!(
            held_by_fennec <= fennec_devices::virtio::vsock::TX_BUF_SIZE as usize,
            "fennec holds {held_by_fennec} bytes of a stalled stream ({waiting} wait in the socket)"
        );
        assert!(
            rss_later <= rss_then + 1024,
            "fennec grew from {rss_then} to {rss_later} kB"
        );
        let (got, len) = read_stream(&mut held);
        assert_eq!(len, STALLED_BYTES);
        drop(held);
        let line = wait_lines(&mut vm, "/tmp/stall", 1, Duration::from_secs(60));
        assert!(
            line.contains(&format!("sent {got} ")),
            "{line} (the host got {got})"
        );

        // Nobody listens: refused on both sides.
        assert_eq!(connect_guest(&uds, 7777).unwrap_err(), "closed before OK");
        let refused = vm.run("fennec-agent connect 2 7778; echo rc=$?");
        assert!(
            refused.contains("refused") && refused.ends_with("rc=1"),
            "{refused}"
        );

        // The host closes: the guest reader sees its end.
        let bye = UnixListener::bind(format!("{}_6001", uds.display())).unwrap();
        vm.send_line("fennec-agent wait-eof 2 6001 > /tmp/eof 2>&1 &");
        let (mut s, _) = bye.accept().unwrap();
        s.write_all(b"bye").unwrap();
        drop(s);
        let seen = wait_lines(&mut vm, "/tmp/eof", 2, Duration::from_secs(60));
        assert!(seen.contains("eof after 3 bytes"), "{seen}");

        // The guest's end goes away: the host reader sees its end.
        let mut s = connect_guest_when_up(&uds, 5001);
        s.write_all(b"ping").unwrap();
        let mut four = [0u8; 4];
        s.read_exact(&mut four).unwrap();
        vm.run("kill $(cat /tmp/echo.pid)");
        let mut rest = Vec::new();
        let end = s.read_to_end(&mut rest);
        assert!(
            matches!(end, Ok(0)) || end.is_err(),
            "the host sees the guest's socket go: {end:?} {rest:?}"
        );
        vm.send_line("reboot -f");
        vm.assert_exit(0);
    }
);

// The harness's commands go through the guest's agent when the VM has vsock; a snapshot's
// clone listens on the socket path it is given, and its guest was told of the reset.
linux_test!(
    linux_vsock_harness_runs_commands_and_a_restored_clone_takes_new_connections,
    |g: &Guest| {
        use fennec::harness::{CommandOutput, TestVm};
        let dir = tempfile::tempdir().unwrap();
        let builder = fennec::VmBuilder::new(&g.vmlinux)
            .initrd(&g.initramfs)
            .cmdline(CMDLINE)
            .vsock(3, dir.path().join("v.sock"));
        let mut vm = TestVm::boot(builder, crate::common::linux::GUEST_TIMEOUT).unwrap();
        vm.expect("FENNEC-GUEST-READY").unwrap();
        assert_eq!(
            vm.run("echo out; echo err >&2; echo booted-once > /tmp/mark; exit 3")
                .unwrap(),
            CommandOutput {
                output: "out\nerr".into(),
                status: 3
            }
        );
        assert!(
            !vm.console().contains("FENNEC-BEGIN"),
            "the command went over vsock, not the console"
        );
        let snap = tempfile::tempdir().unwrap();
        vm.checkpoint(snap.path()).unwrap();
        let clone = fennec::VmBuilder::restore(snap.path())
            .unwrap()
            .vsock_uds(dir.path().join("clone.sock"));
        let mut clone = TestVm::boot(clone, crate::common::linux::GUEST_TIMEOUT).unwrap();
        let seen = clone.run("cat /tmp/mark").unwrap();
        assert_eq!(seen.output, "booted-once");
        let metrics = clone.vm().metrics();
        let resets = &metrics.devices["vsock"].counters["transport_resets"];
        assert_eq!(
            resets.as_u64(),
            Some(1),
            "{:?}",
            metrics.devices["vsock"].counters
        );
        // The original goes on taking connections on its own socket.
        assert_eq!(vm.run("echo still-here").unwrap().output, "still-here");
        for mut v in [clone, vm] {
            v.send_line("reboot -f").unwrap();
            assert!(v.wait().unwrap().is_clean(), "{}", v.tail());
        }
    }
);
