//! The metadata service from inside a Linux guest: the guest reaches it over its virtio-net
//! interface at 169.254.169.254, fennec answers, and the host's side of the TAP sees none of
//! it.

use std::time::Duration;

use crate::common::linux::{Guest, Session};
use crate::common::netns::{NetNs, PacketSocket};
use crate::{guest_pings_host, linux_test, p, CMDLINE};

/// `ETH_P_ALL`: every frame, both ways.
const ETH_P_ALL: u16 = 0x0003;
const MMDS_IP: [u8; 4] = [169, 254, 169, 254];

/// Sends one HTTP request (printf format) to the service with the guest's `nc`; returns the
/// answer, head and body.
fn http(vm: &mut Session, request: &str) -> String {
    vm.run(&format!(
        "printf \"{request}Connection: close\\r\\n\\r\\n\" | nc 169.254.169.254 80; echo"
    ))
}

/// Whether `frame` is ARP or IPv4 that names the service's address anywhere.
fn names_the_service(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        // ARP: sender and target protocol addresses.
        Some([0x08, 0x06]) => [28..32, 38..42]
            .into_iter()
            .any(|r| frame.get(r) == Some(&MMDS_IP[..])),
        // IPv4: source and destination.
        Some([0x08, 0x00]) => [26..30, 30..34]
            .into_iter()
            .any(|r| frame.get(r) == Some(&MMDS_IP[..])),
        _ => false,
    }
}

linux_test!(
    linux_mmds_v2_session_from_the_guest_never_reaches_the_host,
    |g: &Guest| {
        let ns = NetNs::new("mmds");
        ns.add_tap("tap0", Some("10.0.0.1/24"));
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vm.json");
        let vm_json = serde_json::json!({
            "boot-source": {
                "kernel_image_path": g.vmlinux,
                "initrd_path": g.initramfs,
                "boot_args": CMDLINE,
            },
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            "mmds-config": {"version": "V2", "network_interfaces": ["eth0"]},
        });
        std::fs::write(&config, vm_json.to_string()).unwrap();
        let metadata = dir.path().join("metadata.json");
        let doc = r#"{"latest": {"meta-data": {"instance-id": "i-fennec", "zone": {"id": "z1"}}}}"#;
        std::fs::write(&metadata, doc).unwrap();
        // Everything on the host's side of the TAP, both ways, from before the guest starts.
        let capture = PacketSocket::open(&ns, "tap0", ETH_P_ALL);
        let mut vm = Session::start_in(
            &ns,
            &[
                "--config-file",
                p(&config),
                "--metadata",
                p(&metadata),
                "-v",
            ],
        );
        vm.expect("FENNEC-GUEST-READY");
        guest_pings_host(&mut vm, "10.0.0.2/24", "10.0.0.1");
        vm.run("ip route add 169.254.169.254 dev eth0");

        let refused = http(&mut vm, "GET /latest/meta-data/instance-id HTTP/1.1\\r\\n");
        assert!(
            refused.starts_with("HTTP/1.1 401"),
            "no token, no answer: {refused}"
        );
        let token = vm.run(
        "T=$(printf 'PUT /latest/api/token HTTP/1.1\\r\\nX-metadata-token-ttl-seconds: 300\\r\\n\
         Connection: close\\r\\n\\r\\n' | nc 169.254.169.254 80 | tail -n 1); echo \"token=$T\"",
    );
        let token = token.trim_start_matches("token=");
        assert_eq!(token.len(), 64, "a session token: {token:?}");
        let got = http(
            &mut vm,
            "GET /latest/meta-data/instance-id HTTP/1.1\\r\\nX-metadata-token: $T\\r\\n",
        );
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("\ni-fennec"), "{got}");
        let listing = http(
            &mut vm,
            "GET /latest/meta-data/ HTTP/1.1\\r\\nX-metadata-token: $T\\r\\n",
        );
        assert!(listing.ends_with("instance-id\nzone/"), "{listing}");
        let wrong = http(
            &mut vm,
            "GET /latest/meta-data/instance-id HTTP/1.1\\r\\nX-metadata-token: 00$T\\r\\n",
        );
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");

        vm.send_line("reboot -f");
        vm.assert_exit(0);
        let stderr = vm.stderr();
        assert!(
            stderr.contains("metadata service at 169.254.169.254"),
            "{stderr}"
        );

        // The host saw the pings (so the capture works) and nothing of the metadata exchange.
        let (mut icmp, mut leaked) = (0, Vec::new());
        while let Some(frame) = capture.recv(Duration::from_millis(200)) {
            if frame.get(12..14) == Some(&[0x08, 0x00][..]) && frame.get(23) == Some(&1) {
                icmp += 1;
            }
            if names_the_service(&frame) {
                leaked.push(frame);
            }
        }
        assert!(
            icmp >= 6,
            "the capture saw {icmp} ICMP frames of the 3 pings and replies"
        );
        assert!(
            leaked.is_empty(),
            "{} frames about the metadata service reached the TAP: {:02x?}",
            leaked.len(),
            leaked.first()
        );
    }
);
