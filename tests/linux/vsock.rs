//! vsock between a Linux guest and host programs, through Firecracker's Unix-socket protocol:
//! eight streams at once each way with 16 MiB checked by SHA-256, refusals on both sides,
//! either end's close seen by the other; then the harness's commands over vsock, and a
//! snapshot's clone taking new connections on a new socket path.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::linux::{Guest, Session};
use crate::{linux_test, p, CMDLINE};

/// Bytes each stream carries each way.
const STREAM_BYTES: usize = 16 << 20;
/// Streams at once.
const STREAMS: usize = 8;
/// How long the guest may take to move them (the nested test host emulates every instruction
/// of the guest and of fennec's host).
const TRANSFER_LIMIT: Duration = Duration::from_secs(600);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects to guest port `port` through `uds`: the stream after `OK <port>\n`, or the reason
/// it was refused.
fn connect_guest(uds: &Path, port: u32) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(uds).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match connect_guest(uds, port) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() > deadline => panic!("guest port {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Sends `STREAM_BYTES` of stream `i`'s bytes on `s` and reads what comes back to its end;
/// the SHA-256 of both.
fn send_and_read_back(s: UnixStream, i: usize) -> (String, String) {
    let mut reader = s.try_clone().unwrap();
    let back = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match reader.read(&mut buf).unwrap() {
                0 => return hex(&hash.finalize()),
                n => hash.update(&buf[..n]),
            }
        }
    });
    let mut s = s;
    let mut hash = Sha256::new();
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ (i as u64 + 1);
    let mut buf = vec![0u8; 64 << 10];
    for _ in 0..STREAM_BYTES / buf.len() {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        s.write_all(&buf).unwrap();
        hash.update(&buf);
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    (hex(&hash.finalize()), back.join().unwrap())
}

/// Accepts `n` connections on `listener`, echoes each back to its end, and returns the
/// SHA-256 of what each brought.
fn echo_host(listener: UnixListener, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let streams: Vec<_> = (0..n)
            .map(|_| {
                let (mut s, _) = listener.accept().unwrap();
                std::thread::spawn(move || {
                    let mut hash = Sha256::new();
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        match s.read(&mut buf).unwrap() {
                            0 => break,
                            k => {
                                hash.update(&buf[..k]);
                                s.write_all(&buf[..k]).unwrap();
                            }
                        }
                    }
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    hex(&hash.finalize())
                })
            })
            .collect();
        streams.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// Runs `command` in the guest and waits up to `limit` for it: the lines it printed.
fn run_long(vm: &mut Session, command: &str, limit: Duration) -> String {
    let from = vm.console().len();
    vm.send_line(&format!(
        "{command} > /tmp/out 2>&1; echo DONE-$((40+2)) rc=$?"
    ));
    let status = vm.expect_within(from, "DONE-42 rc=", limit);
    let out = vm.run("cat /tmp/out");
    format!("{out}\n{}", &status[status.len().saturating_sub(20)..])
}

linux_test!(
    linux_vsock_streams_both_ways_refuses_and_sees_each_close,
    |g: &Guest| {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let vsock = format!("cid=3,uds={}", uds.display());
        let mut vm = Session::start(&[
            "--kernel",
            p(&g.vmlinux),
            "--initrd",
            p(&g.initramfs),
            "--cmdline",
            CMDLINE,
            "--vcpus",
            "2",
            "--memory",
            "256",
            "--vsock",
            &vsock,
        ]);
        vm.expect("FENNEC-GUEST-READY");
        vm.run("fennec-agent echo 5000 & fennec-agent echo 5001 & echo $! > /tmp/echo2.pid");

        // Host to guest: eight streams at once into the guest's echo and back.
        let host_to_guest: Vec<_> = (0..STREAMS)
            .map(|i| {
                let uds = uds.clone();
                std::thread::spawn(move || {
                    let s = connect_guest_when_up(&uds, 5000);
                    send_and_read_back(s, i)
                })
            })
            .collect();
        for (i, t) in host_to_guest.into_iter().enumerate() {
            let (sent, got) = t.join().unwrap();
            assert_eq!(sent, got, "host-to-guest stream {i}");
        }

        // Guest to host: eight streams at once into the host's echo at <uds>_6000.
        let echo = echo_host(
            UnixListener::bind(format!("{}_6000", uds.display())).unwrap(),
            STREAMS,
        );
        let out = run_long(
            &mut vm,
            &format!("fennec-agent send 2 6000 {STREAMS} {STREAM_BYTES}"),
            TRANSFER_LIMIT,
        );
        assert!(out.ends_with("rc=0"), "{out}");
        let mut host_got = echo.join().unwrap();
        let mut guest_sent = Vec::new();
        for line in out.lines().filter(|l| l.starts_with("conn ")) {
            let w: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                (w[2], w[4], w[6]),
                ("sent", "got", &*STREAM_BYTES.to_string()),
                "{line}"
            );
            assert_eq!(w[3], w[5], "what came back to the guest: {line}");
            guest_sent.push(w[3].to_string());
        }
        assert_eq!(guest_sent.len(), STREAMS, "{out}");
        guest_sent.sort();
        host_got.sort();
        assert_eq!(
            guest_sent, host_got,
            "what the host received is what the guest sent"
        );

        // A host reader that does not read: the guest's writes stop at its credit, and fennec
        // holds no more than that (its resident memory stays while the guest tries to push
        // 64 MiB); once the reader reads, every byte arrives.
        let stalled = UnixListener::bind(format!("{}_6002", uds.display())).unwrap();
        vm.send_line(&format!(
            "fennec-agent send 2 6002 1 {} > /tmp/stall 2>&1 &",
            4 * STREAM_BYTES
        ));
        let (mut held, _) = stalled.accept().unwrap();
        let rss = || {
            let task = std::path::PathBuf::from(format!("/proc/{}", vm.pid()));
            let kb = crate::common::procfs::status_field(&task, "VmRSS").unwrap();
            kb.trim_end_matches(" kB").trim().parse::<u64>().unwrap()
        };
        std::thread::sleep(Duration::from_secs(5));
        let before = rss();
        std::thread::sleep(Duration::from_secs(10));
        let after = rss();
        assert!(
            after < before + 16 * 1024,
            "fennec grew from {before} to {after} kB"
        );
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        while total < 4 * STREAM_BYTES {
            let n = held.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended after {total} bytes");
            hash.update(&buf[..n]);
            total += n;
        }
        drop(held);
        let got = hex(&hash.finalize());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        while !line.contains(" sent ") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            line = vm.run("cat /tmp/stall");
        }
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
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen = String::new();
        while !seen.contains("eof after 3 bytes") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            seen = vm.run("cat /tmp/eof");
        }
        assert!(seen.contains("eof after 3 bytes"), "{seen}");

        // The guest's end goes away: the host reader sees its end.
        let mut s = connect_guest_when_up(&uds, 5001);
        s.write_all(b"ping").unwrap();
        let mut four = [0u8; 4];
        s.read_exact(&mut four).unwrap();
        vm.run("kill $(cat /tmp/echo2.pid)");
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
