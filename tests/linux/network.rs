//! Networking without a hand-made TAP, with the Linux guest: on a bridge (`--net bridge=br0`,
//! a TAP fennec makes and removes), and on user-mode networking (`--net user`, passt), where
//! an unprivileged fennec's guest gets its address by DHCP, sends 16 MiB out through passt and
//! serves a forwarded port.
//! Each test keeps every address inside a network namespace of its own.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::linux::{Guest, Session};
use crate::common::netns::NetNs;
use crate::{guest_args, guest_pings_host, linux_test, sha256_hex, NET_BYTES};

/// The uid the user-mode test runs fennec (and so passt) as: `nobody`.
const UNPRIVILEGED: u32 = 65534;

/// A DHCP client script for busybox's udhcpc: the lease's address, MTU and default route.
const DHCP_SCRIPT: &str = r#"#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
[ -n "$router" ] && ip route add default via "${router%% *}"
exit 0
"#;

fn args<'a>(g: &'a Guest, net: &'a str) -> Vec<&'a str> {
    guest_args(g, &["--net", net])
}

/// Runs udhcpc on eth0 in the guest (the lease's MTU applied or not); returns
/// `ip -4 -o addr show eth0`.
pub fn guest_dhcp(vm: &mut Session, lease_mtu: bool) -> String {
    let script = if lease_mtu {
        DHCP_SCRIPT.to_string()
    } else {
        DHCP_SCRIPT.replace("[ -n \"$mtu\" ]", "false")
    };
    vm.run(&format!(
        "cat > /tmp/dhcp.sh <<'EOF'\n{script}EOF\nchmod +x /tmp/dhcp.sh; \
         ip addr flush dev eth0; ip link set eth0 up; \
         udhcpc -i eth0 -n -q -t 10 -s /tmp/dhcp.sh >/dev/null 2>&1; echo dhcp=$?; \
         ip -4 -o addr show eth0"
    ))
}

/// A listener in `ns` at `addr` whose first connection's bytes (until it closes) come back
/// from the thread, with no pause of 60 s allowed.
pub fn receive_one(ns: &NetNs, addr: &str) -> std::thread::JoinHandle<Vec<u8>> {
    let listener = ns.run_in(|| std::net::TcpListener::bind(addr).unwrap());
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("the guest did not connect within 60 s: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got)
            .expect("the guest's bytes, no pause of 60 s");
        got
    })
}

linux_test!(
    linux_network_bridge_made_pinged_and_gone_with_the_vm,
    |g: &Guest| {
        let ns = NetNs::new("bridge");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", "10.0.1.1/24", "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        let mut vm = Session::start_in(&ns, &args(g, "bridge=br0"));
        vm.expect("FENNEC-GUEST-READY");
        let taps = ns.links_named("fennec");
        assert_eq!(taps.len(), 1, "{taps:?}");
        assert!(ns.link_details(&taps[0]).contains("master br0"));
        guest_pings_host(&mut vm, "10.0.1.2/24", "10.0.1.1");
        vm.send_line("reboot -f");
        vm.assert_exit(0);
        assert_eq!(
            ns.links_named("fennec"),
            Vec::<String>::new(),
            "the TAP went with the VM"
        );

        // SIGKILL, then a new start: nothing of the first is left, the second gets its own.
        let mut vm = Session::start_in(&ns, &args(g, "bridge=br0"));
        vm.expect("FENNEC-GUEST-READY");
        vm.kill();
        assert_eq!(
            ns.links_named("fennec"),
            Vec::<String>::new(),
            "SIGKILL left a TAP"
        );
        let mut vm = Session::start_in(&ns, &args(g, "bridge=br0"));
        vm.expect("FENNEC-GUEST-READY");
        assert_eq!(ns.links_named("fennec").len(), 1);
        vm.send_line("reboot -f");
        vm.assert_exit(0);
    }
);

linux_test!(
    linux_network_user_mode_unprivileged_dhcp_16_mib_out_and_hostfwd,
    |g: &Guest| {
        let ns = NetNs::new("usernet");
        ns.add_uplink("10.77.0.1/24", "10.77.0.254");
        let mut vm = Session::start_unprivileged_in(
            &ns,
            UNPRIVILEGED,
            &args(g, "user,hostfwd=tcp::18022-:5001"),
        );
        vm.expect("FENNEC-GUEST-READY");
        let procs = ns.processes_named("passt");
        assert_eq!(procs.len(), 1, "one passt: {procs:?}");
        assert_eq!(procs[0].1, UNPRIVILEGED, "passt runs as fennec's user");
        let fennec_uid = ns.processes_named("fennec").first().map(|&(_, uid)| uid);
        assert_eq!(fennec_uid, Some(UNPRIVILEGED));

        // DHCP: passt hands the guest the uplink's address, prefix and gateway, and its MTU.
        let addr = guest_dhcp(&mut vm, true);
        assert!(
            addr.contains("dhcp=0") && addr.contains("10.77.0.1/24"),
            "{addr}"
        );
        assert_eq!(vm.run("cat /sys/class/net/eth0/mtu"), "65520");

        // The guest connects out: 16 MiB through passt to a server on the host's loopback (passt
        // maps the gateway's address there).
        let sum =
            vm.run("dd if=/dev/urandom of=/tmp/out bs=1M count=16 2>/dev/null; sha256sum /tmp/out");
        let back = receive_one(&ns, "127.0.0.1:5003");
        let from = vm.console().len();
        vm.send_line("nc 10.77.0.254 5003 < /tmp/out; echo NC-TX-$((40+2)) $?");
        let back = back
            .join()
            .unwrap_or_else(|_| panic!("the guest's 16 MiB\n{}", vm.context()));
        assert_eq!(back.len(), NET_BYTES, "{}", vm.context());
        assert!(sum.contains(&sha256_hex(&back)), "guest to host: {sum}");
        vm.expect_from(from, "NC-TX-42 0");

        // A forwarded port reaches a server in the guest. (16 KiB: Debian 12's passt stalls
        // bulk data towards the guest once the guest's window runs low; README, Known
        // problems.)
        let from = vm.console().len();
        vm.send_line("(nc -l -p 5001 < /dev/null > /tmp/in; echo NC-RX-$((40+2))) &");
        let listening = vm.run(
            "i=0; until netstat -ltn 2>/dev/null | grep -q ':5001 '; do i=$((i+1)); \
             [ $i -gt 100 ] && break; sleep 0.1; done; netstat -ltn 2>/dev/null | grep -c ':5001 '",
        );
        assert_eq!(
            listening.lines().last(),
            Some("1"),
            "the guest's nc listens: {listening}"
        );
        let hello = crate::common::pattern(16 << 10, 0x0dd);
        let sent = ns.run_in(|| {
            let addr: std::net::SocketAddr = "127.0.0.1:18022".parse().unwrap();
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_write_timeout(Some(Duration::from_secs(60)))?;
            stream.write_all(&hello)?;
            stream.shutdown(std::net::Shutdown::Write)
        });
        sent.unwrap_or_else(|e| panic!("the forwarded port: {e}\n{}", vm.context()));
        vm.expect_from(from, "NC-RX-42");
        let got = vm.run("sha256sum /tmp/in");
        assert!(
            got.contains(&sha256_hex(&hello)),
            "through the forwarded port: {got}"
        );
        vm.send_line("reboot -f");
        vm.assert_exit(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns.processes_named("passt").is_empty() {
            assert!(Instant::now() < deadline, "passt outlived the VM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
);
