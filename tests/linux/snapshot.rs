//! Snapshots of a Linux guest: boot once, leave a mark in its tmpfs, snapshot it, and restore
//! three clones at once, each in its own network namespace and with its own copy of the data
//! disk: two on a TAP of their own, one on user-mode networking (passt), where the offloads the
//! guest negotiated on the TAP are done by fennec. Each sees the mark, runs its own commands,
//! reaches its host, and writes its own disk; the original's disk is unchanged.

use std::path::{Path, PathBuf};

use crate::common::linux::{Guest, Session};
use crate::common::netns::NetNs;
use crate::{api, guest_args, guest_pings_host, linux_test, p};

const MAC: &str = "02:fc:aa:bb:cc:01";
/// The guest MAC clone 3 is given at restore (fennec's `guest_mac` override).
const CLONE3_MAC: &str = "02:fc:00:00:00:33";

/// Clone `i`'s network override: its TAP, for clone 2 user mode instead, and for clone 3 a
/// new MAC address.
fn overrides(i: usize, tap: &str) -> serde_json::Value {
    match i {
        2 => serde_json::json!({"iface_id": "net0", "user": {}}),
        3 => serde_json::json!({"iface_id": "net0", "host_dev_name": tap, "guest_mac": CLONE3_MAC}),
        _ => serde_json::json!({"iface_id": "net0", "host_dev_name": tap}),
    }
}

/// The first bytes of sector 0 of `image`, up to a newline.
fn first_line(image: &Path) -> String {
    let bytes = std::fs::read(image).unwrap();
    let end = bytes
        .iter()
        .position(|&b| b == b'\n' || b == 0)
        .unwrap_or(0);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A namespace with TAP `tap` at 10.0.0.1/24, its MAC `MAC`, as every clone's host side:
/// the guest's neighbour cache from before the snapshot still holds.
fn host_side(tag: &str, tap: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.add_tap(tap, None);
    ns.ip(&["link", "set", tap, "down"]);
    ns.ip(&["link", "set", tap, "address", MAC]);
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", tap]);
    ns.ip(&["link", "set", tap, "up"]);
    ns
}

/// The Linux guest on 256 MiB with `tap0` in `ns`, drive `disk` and `extra` flags.
fn start_original(ns: &NetNs, g: &Guest, disk: &str, extra: &[&str]) -> Session {
    let mut args = guest_args(g, &["--net", "tap=tap0", "--disk", disk]);
    args.extend_from_slice(extra);
    Session::start_in(ns, &args)
}

linux_test!(
    linux_snapshot_three_clones_with_their_own_disks_and_taps,
    |g: &Guest| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.img");
        std::fs::write(&data, vec![0u8; 4 << 20]).unwrap();
        let socket = dir.path().join("api.sock");
        let ns = host_side("snap0", "tap0");
        let disk = format!("path={}", data.display());
        let mut vm = start_original(&ns, g, &disk, &["--api-socket", p(&socket)]);
        vm.expect("FENNEC-GUEST-READY");
        guest_pings_host(&mut vm, "10.0.0.2/24", "10.0.0.1");
        vm.run("echo made-before-the-snapshot > /tmp/mark");
        let wrote = vm.run(
            "echo original | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; echo rc=$?",
        );
        assert!(wrote.ends_with("rc=0"), "{wrote}");
        api(
            &socket,
            "PATCH",
            "/vm",
            serde_json::json!({"state": "Paused"}),
        );
        let snap = dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        api(
            &socket,
            "PUT",
            "/snapshot/create",
            serde_json::json!({
                "snapshot_path": snap.join("state"), "mem_file_path": snap.join("memory"),
            }),
        );
        api(
            &socket,
            "PUT",
            "/actions",
            serde_json::json!({"action_type": "Stop"}),
        );
        vm.assert_exit(0);
        assert_eq!(first_line(&data), "original");

        // Three clones at once, each with its own namespace, TAP and disk.
        let clones: Vec<(NetNs, Session, std::path::PathBuf)> = (1..=3)
        .map(|i| {
            let tap = format!("clone{i}");
            let ns = if i == 2 {
                let ns = NetNs::new("snap2");
                ns.add_uplink("10.77.0.1/24", "10.77.0.254");
                ns
            } else {
                host_side(&format!("snap{i}"), &tap)
            };
            let image = dir.path().join(format!("clone{i}.img"));
            std::fs::copy(&data, &image).unwrap();
            let socket = dir.path().join(format!("clone{i}.sock"));
            let vm = Session::start_in(&ns, &["--api-socket", p(&socket)]);
            let deadline = std::time::Instant::now() + crate::common::TIMEOUT;
            while !socket.exists() {
                assert!(std::time::Instant::now() < deadline, "no socket: {}", vm.stderr());
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            api(
                &socket,
                "PUT",
                "/snapshot/load",
                serde_json::json!({
                    "snapshot_path": snap.join("state"),
                    "mem_backend": {"backend_type": "File", "backend_path": snap.join("memory")},
                    "resume_vm": true,
                    "network_overrides": [overrides(i, &tap)],
                    "drive_overrides": [{"drive_id": "disk0", "path_on_host": image}],
                }),
            );
            (ns, vm, image)
        })
        .collect();
        let mut clones = clones;
        for (i, (ns, vm, _image)) in clones.iter_mut().enumerate() {
            let i = i + 1;
            if i == 2 {
                user_mode_clone_sends(ns, vm);
            }
            assert_eq!(
                vm.run("cat /tmp/mark"),
                "made-before-the-snapshot",
                "clone {i}"
            );
            let wrote = vm.run(&format!(
                "echo clone-{i} | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; echo rc=$?"
            ));
            assert!(wrote.ends_with("rc=0"), "clone {i}: {wrote}");
            if i == 2 {
                // Reached its host above (passt forwards no ICMP where ping sockets are off).
                continue;
            }
            let ping = vm.run("ping -c 3 -w 30 10.0.0.1 | grep -c 'bytes from'");
            assert_eq!(
                ping.lines().last(),
                Some("3"),
                "clone {i} reaches its host: {ping}"
            );
        }
        // Clone 3's device reports its new MAC; the guest's driver reads it when it probes
        // the device again (here: unbound and bound). The others keep the guest's.
        let original_mac = fennec::MacAddr::stable("tap0").to_string();
        let rebind = "d=$(basename $(readlink /sys/class/net/eth0/device)); \
                      echo $d > /sys/bus/virtio/drivers/virtio_net/unbind; \
                      echo $d > /sys/bus/virtio/drivers/virtio_net/bind; \
                      cat /sys/class/net/eth0/address";
        assert_eq!(
            clones[2].1.run("cat /sys/class/net/eth0/address"),
            original_mac
        );
        assert_eq!(clones[2].1.run(rebind), CLONE3_MAC);
        assert_eq!(
            clones[0].1.run(rebind),
            original_mac,
            "a TAP override keeps the MAC"
        );
        for (i, (_ns, vm, image)) in clones.iter_mut().enumerate() {
            let i = i + 1;
            vm.send_line("reboot -f");
            vm.assert_exit(0);
            if i == 2 {
                // fennec did the guest's segmentation itself: passt's stream carries none.
                let stderr = vm.stderr();
                let offloaded = stderr
                    .lines()
                    .filter_map(|l| l.split_once("Network interface \"net0\": "))
                    .next_back()
                    .and_then(|(_, m)| m.split(' ').find_map(|w| w.strip_prefix("tx_offloaded=")))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                assert!(offloaded > 0, "no frame offloaded in software:\n{stderr}");
            }
            assert_eq!(
                first_line(image),
                format!("clone-{i}"),
                "clone {i} wrote its own disk"
            );
        }
        assert_eq!(
            first_line(&data),
            "original",
            "the original's disk is unchanged"
        );
    }
);

/// The clone on user mode: a DHCP lease from passt, then 4 MiB to a server on its host, sent
/// with the segmentation offload the guest negotiated on the original's TAP (its MTU stays
/// 1500), so fennec cuts every 64 KiB frame into checksummed segments.
fn user_mode_clone_sends(ns: &NetNs, vm: &mut Session) {
    let addr = crate::network::guest_dhcp(vm, false);
    assert!(
        addr.contains("dhcp=0") && addr.contains("10.77.0.1/24"),
        "{addr}"
    );
    assert_eq!(vm.run("cat /sys/class/net/eth0/mtu"), "1500");
    let back = crate::network::receive_one(ns, "127.0.0.1:5003");
    let sum =
        vm.run("dd if=/dev/urandom of=/tmp/out bs=1M count=4 2>/dev/null; sha256sum /tmp/out");
    let from = vm.console().len();
    vm.send_line("nc 10.77.0.254 5003 < /tmp/out; echo NC-TX-$((40+2)) $?");
    let back = back.join().expect("the clone's 4 MiB");
    assert_eq!(back.len(), 4 << 20);
    assert!(
        sum.contains(&crate::sha256_hex(&back)),
        "the clone's bytes arrive whole: {sum}"
    );
    vm.expect_from(from, "NC-TX-42 0");
}

/// `fennec image --store SPEC ARGS`, which must succeed; its stdout.
fn image(spec: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::common::linux::fennec_bin())
        .args(["image", "--store", spec])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fennec image {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

linux_test!(linux_checkpoint_copies_run_on_zfs_clones, |g: &Guest| {
    // A ZFS store (zfs-fuse in the test host) with a blank 4 MiB template.
    let pool = crate::common::zfs::TestPool::new(256);
    let spec = pool.spec();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    std::fs::write(&base, vec![0u8; 4 << 20]).unwrap();
    image(&spec, &["import", "base", p(&base)]);
    let socket = dir.path().join("api.sock");
    let ns = host_side("ckpt0", "tap0");
    let disk = format!("template=base,store={spec},vm=orig");
    let mut vm = start_original(&ns, g, &disk, &["--api-socket", p(&socket)]);
    vm.expect("FENNEC-GUEST-READY");
    guest_pings_host(&mut vm, "10.0.0.2/24", "10.0.0.1");
    vm.run("echo made-before-the-checkpoint > /tmp/mark");
    let dd = |text: &str| {
        format!("echo {text} | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; echo rc=$?")
    };
    assert!(vm.run(&dd("original")).ends_with("rc=0"));
    let taken = crate::common::ctl(&socket, &["checkpoint", "cp1"]);
    assert_eq!(taken["checkpoint"], "cp1", "{taken}");
    // The original goes on after its checkpoint.
    assert!(vm.run(&dd("after-the-checkpoint")).ends_with("rc=0"));
    api(
        &socket,
        "PUT",
        "/actions",
        serde_json::json!({"action_type": "Stop"}),
    );
    vm.assert_exit(0);

    // Three copies at once, each in a namespace of its own with its own tap0, each on its own
    // ZFS clone of the checkpoint's disk.
    let mut copies: Vec<(NetNs, Session)> = (1..=3)
        .map(|i| {
            let ns = host_side(&format!("ckpt{i}"), "tap0");
            let vm = Session::start_in(
                &ns,
                &[
                    "--from-checkpoint",
                    "cp1",
                    "--vm",
                    &format!("copy{i}"),
                    "--store",
                    &spec,
                ],
            );
            (ns, vm)
        })
        .collect();
    for (i, (_ns, vm)) in copies.iter_mut().enumerate() {
        let i = i + 1;
        assert_eq!(
            vm.run("cat /tmp/mark"),
            "made-before-the-checkpoint",
            "copy {i}"
        );
        assert!(
            vm.run(&dd(&format!("copy-{i}"))).ends_with("rc=0"),
            "copy {i}"
        );
        let ping = vm.run("ping -c 3 -w 30 10.0.0.1 | grep -c 'bytes from'");
        assert_eq!(
            ping.lines().last(),
            Some("3"),
            "copy {i} reaches its host: {ping}"
        );
    }
    for (i, (_ns, vm)) in copies.iter_mut().enumerate() {
        let i = i + 1;
        vm.send_line("reboot -f");
        vm.assert_exit(0);
        let path = PathBuf::from(image(&spec, &["path", &format!("copy{i}/disk0")]));
        assert_eq!(
            first_line(&path),
            format!("copy-{i}"),
            "copy {i} wrote its own disk"
        );
        let origin = crate::common::zfs::must(
            "zfs",
            &[
                "get",
                "-H",
                "-o",
                "value",
                "origin",
                &format!("{}/fennec/vms/copy{i}/disk0", pool.name),
            ],
        );
        assert_eq!(
            origin.trim(),
            format!("{}/fennec/vms/orig/disk0@cp1", pool.name)
        );
    }
    let original = PathBuf::from(image(&spec, &["path", "orig/disk0"]));
    assert_eq!(first_line(&original), "after-the-checkpoint");
});
