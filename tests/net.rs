//! virtio-net on `/dev/kvm` with a real TAP, driven by the tiny PVH kernel's polled virtio-net
//! driver (`resources/tiny/net.c`). Each test makes its own network namespace with the TAP in
//! it, runs fennec there, and talks to the guest through a raw packet socket on the TAP.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::{thread_cpu_ticks, NetNs, PacketSocket};
use common::tiny_net::*;
use common::*;

#[test]
fn test_tiny_driver_sends_receives_and_survives_hostile_chains() {
    require_kvm();
    let ns = NetNs::new("tinynet");
    ns.add_tap("tap0", None);
    let sock = PacketSocket::open(&ns, "tap0", ETHERTYPE);
    let net_arg = format!("tap=tap0,mac={}", fennec::MacAddr(GUEST_MAC));
    let (mut child, mut console, stderr) = start_tiny_net(&ns, &net_arg);

    let hello = console.expect("TINY net mac=");
    assert!(
        hello.starts_with("TINY net mac=02:fc:00:00:00:01 link=1"),
        "{hello}"
    );
    assert_eq!(console.expect("TINY net tx"), "TINY net tx used=0");
    for case in ["writable", "oob", "too_long", "short", "loop", "bad_next"] {
        let line = console.expect("TINY net bad=");
        assert_eq!(line, format!("TINY net bad={case} used=0"));
    }
    console.expect("TINY net idle");
    // Frame 0, then one good frame after each hostile chain, in order and nothing else.
    for n in 0..=6 {
        let frame = sock
            .recv(FRAME_WAIT)
            .unwrap_or_else(|| panic!("guest frame {n} never reached the TAP"));
        assert_eq!(guest_payload(&frame), format!("fennec tiny tx {n}"));
    }

    // A second VMM cannot take the same TAP.
    let second = ns
        .command(env!("CARGO_BIN_EXE_fennec").as_ref())
        .args(tiny_net_args(&net_arg))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let second_err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{second_err}");
    assert!(
        second_err.contains("is in use by another process"),
        "{second_err}"
    );

    // The guest has posted no receive buffer: frames wait, and the event loop stays idle.
    for n in 0..50 {
        sock.send(&host_frame(&format!("fennec host {n}")));
    }
    sock.send(&host_frame("fennec host end"));
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));
    let before = thread_cpu_ticks(pid, "fennec-vmm");
    std::thread::sleep(Duration::from_secs(1));
    let used = thread_cpu_ticks(pid, "fennec-vmm") - before;
    assert!(
        used <= 20,
        "the event loop used {used} ticks of 100 in a second with a readable TAP and no receive buffers"
    );

    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    let rx = console.expect("TINY net rx ");
    let f = fields(&rx);
    assert_eq!(
        (f["frames"], f["first"], f["inorder"], f["nbufs"]),
        ("50", "0", "1", "1"),
        "every frame sent while the guest had no buffers arrives, in order: {rx}"
    );

    console.expect("TINY net badrx posted");
    sock.send(&host_frame("fennec host after"));
    let badrx = console.expect("TINY net badrx used=");
    assert_eq!(
        badrx, "TINY net badrx used=0:0,1:0,2:0,3:72 got=fennec host after",
        "unusable receive buffers come back empty and the next one gets the frame"
    );
    assert_eq!(
        console.expect("TINY net reset tx"),
        "TINY net reset tx used=0"
    );
    console.expect("TINY net done");
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let frame = sock
        .recv(FRAME_WAIT)
        .expect("the frame sent after the reset");
    assert_eq!(guest_payload(&frame), "fennec tiny tx 7");

    let m = net_metrics(&stderr, "net0");
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!(get("tx_packets"), 8, "{m:?}");
    assert_eq!(get("tx_dropped"), 6, "{m:?}");
    assert_eq!(
        get("rx_packets"),
        52,
        "50 numbered, the end marker, and one more: {m:?}"
    );
    assert_eq!(get("rx_dropped"), 0, "{m:?}");
    assert_eq!(get("rx_errors") + get("tx_errors"), 0, "{m:?}");
    // Five malformed transmit chains and three unusable receive buffers; the corrupted ring
    // counts too when the loop serves its notification before the guest's reset lands.
    assert!((8..=9).contains(&get("bad_chains")), "{m:?}");
    assert!(get("rx_buffer_waits") >= 1, "{m:?}");
}

#[test]
fn test_net_missing_tap_and_bad_arguments_fail_clearly() {
    require_kvm();
    let pvh = tiny("pvh.elf");
    let run = fennec(&[
        "run",
        "--kernel",
        pvh.to_str().unwrap(),
        "--net",
        "tap=fennec-nosuch0",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(
        run.stderr
            .contains("TAP interface \"fennec-nosuch0\" does not exist")
            && run.stderr.contains("ip tuntap add fennec-nosuch0 mode tap"),
        "{}",
        run.context()
    );
    for bad in ["tap=", "tap=t0,mac=01:00:00:00:00:01", "tap=t0,speed=10"] {
        let run = fennec(&["run", "--kernel", pvh.to_str().unwrap(), "--net", bad]);
        assert_ne!(run.code, Some(0), "{bad}: {}", run.context());
        assert!(
            run.stderr.contains("--net") || run.stderr.contains("MAC"),
            "{bad}: {}",
            run.context()
        );
    }
}

#[test]
fn test_net_tap_removed_under_running_guest_stops_watching_it() {
    require_kvm();
    let ns = NetNs::new("tapgone");
    ns.add_tap("tap0", None);
    let (mut child, mut console, stderr) = start_tiny_net(&ns, "tap=tap0");
    // At "idle" the device is active with no frame waiting, so the loop watches the TAP.
    console.expect("TINY net idle");
    ns.ip(&["link", "del", "tap0"]);
    std::thread::sleep(Duration::from_millis(200));
    let pid = child.id();
    let before = thread_cpu_ticks(pid, "fennec-vmm");
    std::thread::sleep(Duration::from_secs(1));
    let used = thread_cpu_ticks(pid, "fennec-vmm") - before;
    // SAFETY: `pid` is our own child, still running (we have not waited for it).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("fennec stops on SIGTERM");
    let stderr = stderr.join().unwrap();
    assert!(
        used <= 20,
        "the event loop used {used} ticks of 100 in a second on a removed TAP\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the guest's link is down"), "{stderr}");
}

#[test]
fn test_paused_vm_leaves_frames_on_the_tap_until_resumed() {
    require_kvm();
    let ns = NetNs::new("pausenet");
    ns.add_tap("tap0", None);
    let sock = PacketSocket::open(&ns, "tap0", ETHERTYPE);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_fennec").as_ref())
        .args(tiny_net_args(&format!(
            "tap=tap0,mac={}",
            fennec::MacAddr(GUEST_MAC)
        )))
        .arg("--api-socket")
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fennec");
    let mut console = Console::new(&mut child);
    console.expect("TINY net idle");
    for n in 0..=6 {
        sock.recv(FRAME_WAIT)
            .unwrap_or_else(|| panic!("guest frame {n} never reached the TAP"));
    }
    // The guest posts its receive buffers, then the VM is paused with them empty.
    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ctl(&socket, &["pause"]);
    for n in 0..50 {
        sock.send(&host_frame(&format!("fennec host {n}")));
    }
    sock.send(&host_frame("fennec host end"));
    std::thread::sleep(Duration::from_millis(700));
    let metrics = ctl(&socket, &["metrics"]);
    assert_eq!(
        metrics["devices"]["net0"]["counters"]["rx_packets"], 0,
        "a paused VM's device took frames from its TAP: {metrics}"
    );
    // Resumed, the device delivers every frame, in order.
    ctl(&socket, &["resume"]);
    let rx = console.expect("TINY net rx ");
    let f = fields(&rx);
    assert_eq!((f["frames"], f["inorder"]), ("50", "1"), "{rx}");
    let metrics = ctl(&socket, &["metrics"]);
    assert!(metrics["devices"]["net0"]["counters"]["rx_packets"].as_u64() >= Some(51));
    ctl(&socket, &["stop"]);
    let status = wait_with_timeout(&mut child, TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// Rate limiters on both directions (Firecracker's `rx_rate_limiter` and `tx_rate_limiter`,
/// 100 frames a second each) pace the tiny driver's bulk traffic, and no frame is lost.
#[test]
fn test_rate_limited_interface_paces_both_directions_and_loses_nothing() {
    require_kvm();
    const FRAMES: usize = 40;
    let ns = NetNs::new("netlimit");
    ns.add_tap("tap0", None);
    let sock = PacketSocket::open(&ns, "tap0", ETHERTYPE);
    let dir = tempfile::tempdir().unwrap();
    let limit = serde_json::json!({"ops": {"size": 10, "refill_time": 100}});
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": tiny("pvh.elf"),
            "boot_args": format!("console=ttyS0 tiny.mode=netbench netbench.frames={FRAMES}"),
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "network-interfaces": [{
            "iface_id": "net0", "host_dev_name": "tap0",
            "guest_mac": fennec::MacAddr(GUEST_MAC).to_string(),
            "rx_rate_limiter": limit, "tx_rate_limiter": limit,
        }],
    });
    let path = dir.path().join("vm.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_fennec").as_ref())
        .args(["-v", "run", "--config-file", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fennec");
    let mut console = Console::new(&mut child);
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());

    console.expect("TINY bench tx start");
    let sent_from = Instant::now();
    console.expect("TINY bench tx done");
    let tx_time = sent_from.elapsed();
    console.expect("TINY bench rx ready");
    let mut got = 0;
    while sock.recv(Duration::from_millis(500)).is_some() {
        got += 1;
    }
    assert_eq!(got, FRAMES, "every frame the guest sent reached the TAP");
    let received_from = Instant::now();
    for _ in 0..FRAMES {
        sock.send(&host_frame("fennec paced"));
    }
    console.expect("TINY bench rx done");
    let rx_time = received_from.elapsed();
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");

    let m = net_metrics(&stderr, "net0");
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!((get("tx_packets"), get("rx_packets")), (40, 40), "{m:?}");
    assert!(
        get("tx_rate_limited") > 0 && get("rx_rate_limited") > 0,
        "{m:?}"
    );
    // 10 frames at once, then 10 every 100 ms: 30 more frames take 300 ms at least.
    let least = Duration::from_millis(300);
    assert!(tx_time >= least, "{FRAMES} frames sent in {tx_time:?}");
    assert!(rx_time >= least, "{FRAMES} frames received in {rx_time:?}");
}
