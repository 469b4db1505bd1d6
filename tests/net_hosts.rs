//! Network interfaces whose host side fennec makes: `bridge=BR` (a TAP of its own on an
//! existing bridge, gone with the VM however fennec ends) and `user` (passt), driven by the
//! tiny PVH kernel's network sequence on `/dev/kvm`, each in a network namespace of its own.
//! The Linux guest's DHCP, transfers and forwarded ports over both are in `tests/linux/`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::{NetNs, PacketSocket};
use common::tiny_net::*;
use common::*;

/// The interfaces in `ns` whose name fennec gives its TAPs.
fn fennec_taps(ns: &NetNs) -> Vec<String> {
    ns.links_named("fennec")
}

/// `fennec run` of the tiny kernel with `--net NET` in `ns` to its end (with `PATH` set to
/// `path` if given): its output.
fn run_tiny(ns: &NetNs, net: &str, path: Option<&str>) -> std::process::Output {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_fennec").as_ref());
    cmd.args([
        "run",
        "--kernel",
        tiny("pvh.elf").to_str().unwrap(),
        "--net",
        net,
    ]);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn bridge_ns(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "mtu", "1400", "up"]);
    ns
}

#[test]
fn test_bridge_interface_is_made_attached_and_gone_with_the_vm() {
    require_kvm();
    let ns = bridge_ns("bridge");
    let sock = PacketSocket::open(&ns, "br0", ETHERTYPE);
    let net_arg = format!("bridge=br0,mac={}", fennec::MacAddr(GUEST_MAC));
    let (mut child, mut console, stderr) = start_tiny_net(&ns, &net_arg);
    let hello = console.expect("TINY net mac=");
    assert!(
        hello.starts_with("TINY net mac=02:fc:00:00:00:01 link=1"),
        "{hello}"
    );
    console.expect("TINY net idle");

    // fennec's TAP is a port of br0, up, with the bridge's MTU.
    let taps = fennec_taps(&ns);
    assert_eq!(taps.len(), 1, "one TAP made: {taps:?}");
    let details = ns.link_details(&taps[0]);
    assert!(details.contains("master br0"), "{details}");
    assert!(details.contains("mtu 1400"), "{details}");
    assert!(
        details.contains(",UP,") || details.contains("<UP,") || details.contains(",UP>"),
        "{details}"
    );

    // The guest's frames reach the bridge, and the bridge's reach the guest.
    for n in 0..=6 {
        let frame = sock
            .recv(FRAME_WAIT)
            .unwrap_or_else(|| panic!("guest frame {n} never reached the bridge"));
        assert_eq!(guest_payload(&frame), format!("fennec tiny tx {n}"));
    }
    for n in 0..50 {
        sock.send(&host_frame(&format!("fennec host {n}")));
    }
    sock.send(&host_frame("fennec host end"));
    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    let rx = console.expect("TINY net rx ");
    let f = fields(&rx);
    assert_eq!(
        (f["frames"], f["first"], f["inorder"]),
        ("50", "0", "1"),
        "{rx}"
    );
    console.expect("TINY net badrx posted");
    sock.send(&host_frame("fennec host after"));
    console.expect("TINY net done");
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("fennec exits");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("on bridge br0"), "{stderr}");
    assert_eq!(
        fennec_taps(&ns),
        Vec::<String>::new(),
        "the TAP went with the VM"
    );

    // Killed outright, fennec leaves no TAP either, and the next start gets one.
    for round in 0..2 {
        let (mut child, mut console, stderr) = start_tiny_net(&ns, "bridge=br0");
        console.expect("TINY net idle");
        assert_eq!(fennec_taps(&ns).len(), 1, "round {round}");
        child.kill().unwrap();
        let _ = wait_with_timeout(&mut child, TIMEOUT).expect("a killed fennec ends");
        drop(stderr);
        assert_eq!(
            fennec_taps(&ns),
            Vec::<String>::new(),
            "round {round}: SIGKILL left a TAP"
        );
    }
}

#[test]
fn test_bridge_missing_or_not_a_bridge_fails_clearly_and_leaves_nothing() {
    require_kvm();
    let ns = bridge_ns("nobridge");
    let run = |net: &str| run_tiny(&ns, net, None);
    let out = run("bridge=vmbr9");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Bridge \"vmbr9\" does not exist")
            && err.contains("ip link add vmbr9 type bridge"),
        "{err}"
    );
    let out = run("bridge=lo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"lo\" is not a bridge"), "{err}");
    assert_eq!(
        fennec_taps(&ns),
        Vec::<String>::new(),
        "a failed start left a TAP"
    );
    for bad in [
        "bridge=br0,tap=tap0",
        "user,bridge=br0",
        "hostfwd=tcp::1-:2",
        "bridge=",
    ] {
        let out = run(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{bad}: {err}");
        assert!(
            err.contains("--net") || err.contains("TAP name"),
            "{bad}: {err}"
        );
    }
}

/// A namespace in which passt finds a routable interface: an uplink with a default route.
fn uplink_ns(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.add_uplink("10.77.0.1/24", "10.77.0.254");
    ns
}

fn require_passt() -> std::path::PathBuf {
    fennec::config::find_passt().expect(
        "passt not found on PATH (user-mode networking tests run it): apt-get install passt",
    )
}

/// The PIDs of the passt processes in `ns`.
fn passts_in(ns: &NetNs) -> Vec<u32> {
    ns.processes_named("passt")
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn test_user_mode_starts_passt_and_passt_ends_with_fennec() {
    require_kvm();
    require_passt();
    let ns = uplink_ns("usernet");
    let (mut child, mut console, stderr) = start_tiny_net(&ns, "user,hostfwd=tcp::18022-:22");
    let hello = console.expect("TINY net mac=");
    assert!(hello.contains(" link=1 "), "{hello}");
    // A stream carries no virtio header: no offload is offered (bits 0 CSUM, 11 HOST_TSO4).
    let features =
        u32::from_str_radix(fields(&hello)["features"].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(features & (1 | 1 << 11), 0, "{hello}");
    console.expect("TINY net idle");
    let passts = passts_in(&ns);
    assert_eq!(passts.len(), 1, "one passt for the interface: {passts:?}");
    // The forwarded port is passt's, in the VM's namespace.
    let listening = ns
        .command(Path::new("/bin/sh"))
        .args(["-c", "cat /proc/net/tcp /proc/net/tcp6"])
        .output()
        .unwrap();
    let listening = String::from_utf8_lossy(&listening.stdout).to_string();
    assert!(
        listening.contains(&format!(":{:04X} ", 18022)),
        "port 18022 bound:\n{listening}"
    );

    // Killed outright, fennec takes passt with it (its socket closes).
    child.kill().unwrap();
    let _ = wait_with_timeout(&mut child, TIMEOUT).expect("a killed fennec ends");
    let stderr = stderr.join().unwrap();
    assert!(stderr.contains("user-mode networking"), "{stderr}");
    wait_for("passt to end after fennec was killed", || {
        passts_in(&ns).is_empty()
    });
}

#[test]
fn test_user_mode_passt_ending_mid_run_takes_the_link_down_not_the_vm() {
    require_kvm();
    require_passt();
    let ns = uplink_ns("passtdies");
    let (mut child, mut console, stderr) = start_tiny_net(&ns, "user");
    console.expect("TINY net idle");
    let passts = passts_in(&ns);
    assert_eq!(passts.len(), 1, "{passts:?}");
    // SAFETY: kill(2) on the PID of the passt this test's fennec started (found above).
    unsafe { libc::kill(passts[0] as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the VM runs on without passt"
    );
    // SAFETY: `child` is our own, still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("fennec stops on SIGTERM");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the guest's link is down"), "{stderr}");
}

#[test]
fn test_user_mode_bad_starts_fail_clearly() {
    require_kvm();
    let passt = require_passt();
    let ns = uplink_ns("userbad");
    let run = |net: &str, path: Option<&str>| run_tiny(&ns, net, path);
    // No passt on PATH.
    let empty = tempfile::tempdir().unwrap();
    let out = run("user", Some(empty.path().to_str().unwrap()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("passt not found on PATH") && err.contains("apt-get install passt"),
        "{err}"
    );
    // A forwarded port something else holds: passt's own reason.
    let holder = ns.run_in(|| std::net::TcpListener::bind("0.0.0.0:18080").unwrap());
    let out = run("user,hostfwd=tcp::18080-:80", None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("passt failed to start") && err.contains("18080"),
        "{err}"
    );
    drop(holder);
    assert!(
        passts_in(&ns).is_empty(),
        "a failed start left passt running"
    );
    let _ = passt;
}
