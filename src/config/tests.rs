use std::path::PathBuf;

use fennec_devices::virtio::net::MacAddr;

use super::*;

fn config(boot_args: Option<&str>) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSourceConfig {
            kernel_image_path: "/k".into(),
            initrd_path: None,
            boot_args: boot_args.map(str::to_string),
        }),
        machine_config: MachineConfig::default(),
        drives: Vec::new(),
        net: Vec::new(),
        mmds_config: None,
        entropy: None,
        vsock: None,
    }
}

fn net(id: &str, tap: &str) -> NetConfig {
    NetConfig {
        id: id.into(),
        tap: tap.into(),
        ..NetConfig::default()
    }
}

#[test]
fn test_net_arg_all_options() {
    let n = NetConfig::from_cli("tap=tap0,mac=02:fc:00:00:00:07,id=uplink", "net0").unwrap();
    assert_eq!(
        n,
        NetConfig {
            id: "uplink".into(),
            tap: "tap0".into(),
            mac: Some(MacAddr([2, 0xfc, 0, 0, 0, 7])),
            ..NetConfig::default()
        }
    );
}

#[test]
fn test_net_arg_default_id_and_stable_mac() {
    let n = NetConfig::from_cli("tap=tap1", "net3").unwrap();
    assert_eq!(n.id, "net3");
    assert_eq!(n.guest_mac(), MacAddr::stable("tap1"));
}

#[test]
fn test_net_arg_errors_name_the_problem() {
    for (arg, why) in [
        (
            "mac=02:fc:00:00:00:07",
            "exactly one of tap=NAME, bridge=BR, user",
        ),
        ("tap=a,bridge=br0", "exactly one of"),
        ("user,user", "given twice"),
        ("hostfwd=tcp::1-:2,user", "needs user first"),
        (
            "user,hostfwd=tcp::8080-10.0.2.15:80",
            "the guest address is the guest's own",
        ),
        ("tap=a,tap=b", "given twice"),
        ("tap=a,queues=4", "unknown option"),
        ("tap=a,mac=nonsense", "not a MAC address"),
    ] {
        let e = NetConfig::from_cli(arg, "net0").unwrap_err().to_string();
        assert!(e.contains(why), "{arg}: {e}");
    }
}

#[test]
fn test_net_hosts_from_the_command_line_and_json() {
    let n = NetConfig::from_cli("bridge=vmbr0,id=lan", "net0").unwrap();
    assert_eq!(n.host(), NetHost::Bridge("vmbr0"));
    assert_eq!(n.id, "lan");
    let n =
        NetConfig::from_cli("user,hostfwd=tcp::2222-:22,hostfwd=udp::5353-:53", "net0").unwrap();
    let NetHost::User(user) = n.host() else {
        panic!("{n:?}")
    };
    assert_eq!(user.hostfwd.len(), 2);
    assert_eq!(
        n.guest_mac(),
        MacAddr::stable("user/net0"),
        "stable in user mode"
    );
    // The API's form: fennec's fields instead of host_dev_name; exactly one of them.
    let json = r#"{"iface_id": "eth0", "user": {"hostfwd": [
        {"protocol": "tcp", "host_port": 2222, "guest_port": 22}]}}"#;
    let from_json: NetConfig = serde_json::from_str(json).unwrap();
    from_json.validate_host().unwrap();
    assert_eq!(from_json.user.unwrap().hostfwd, user.hostfwd[..1]);
    for bad in [
        r#"{"iface_id": "eth0"}"#,
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "bridge": "br0"}"#,
        r#"{"iface_id": "eth0", "bridge": "no/slash"}"#,
    ] {
        let n: NetConfig = serde_json::from_str(bad).unwrap();
        assert!(n.validate_host().is_err(), "{bad}");
    }
    // A bridge's VMs must not share a MAC: it comes from this process, and is pinned for
    // snapshots when the VM is built.
    let b = NetConfig::from_cli("bridge=br0", "net0").unwrap();
    assert_eq!(b.guest_mac(), b.guest_mac());
    assert_ne!(b.guest_mac(), MacAddr::stable("br0"));
    let mut c = config(None);
    c.net = vec![b.clone()];
    assert_eq!(c.with_macs_pinned().net[0].mac, Some(b.guest_mac()));
}

#[test]
fn test_net_multicast_mac_rejected() {
    let mut c = config(None);
    c.net = vec![NetConfig {
        mac: Some(MacAddr([1, 0, 0, 0, 0, 1])),
        ..net("n", "tap0")
    }];
    assert!(matches!(c.validate(), Err(ConfigError::Mac { .. })));
}

#[test]
fn test_net_duplicates_rejected() {
    let mut c = config(None);
    c.net = vec![net("a", "tap0"), net("a", "tap1")];
    assert_eq!(c.validate(), Err(ConfigError::DuplicateIface("a".into())));
    c.net = vec![net("a", "tap0"), net("b", "tap0")];
    assert_eq!(c.validate(), Err(ConfigError::DuplicateTap("tap0".into())));
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    c.net = vec![
        NetConfig {
            mac: Some(mac),
            ..net("a", "tap0")
        },
        NetConfig {
            mac: Some(mac),
            ..net("b", "tap1")
        },
    ];
    assert_eq!(c.validate(), Err(ConfigError::DuplicateMac(mac)));
}

#[test]
fn test_net_bad_tap_name_rejected() {
    let mut c = config(None);
    c.net = vec![net("a", "a-name-far-too-long")];
    assert!(matches!(c.validate(), Err(ConfigError::TapName { .. })));
}

#[test]
fn test_devices_drives_and_nets_share_the_limit() {
    let mut c = config(None);
    c.drives = (0..10).map(|i| drive(&format!("d{i}"), false)).collect();
    c.net = (0..10)
        .map(|i| net(&format!("n{i}"), &format!("tap{i}")))
        .collect();
    assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(20)));
}

#[test]
fn test_vm_config_firecracker_network_interfaces_parse() {
    let json = r#"{
        "boot-source": {"kernel_image_path": "/vmlinux"},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                "guest_mac": "06:00:AC:10:00:02"}]
    }"#;
    let cfg: VmConfig = serde_json::from_str(json).unwrap();
    assert_eq!(cfg.net[0].tap, "tap0");
    assert_eq!(cfg.net[0].mac, Some(MacAddr([6, 0, 0xac, 0x10, 0, 2])));
    let back = serde_json::to_value(&cfg).unwrap();
    assert_eq!(
        back["network-interfaces"][0]["guest_mac"],
        "06:00:ac:10:00:02"
    );
}

fn drive(id: &str, root: bool) -> BlockConfig {
    BlockConfig {
        root,
        ..BlockConfig::path(id, format!("/img/{id}"))
    }
}

#[test]
fn test_disk_arg_all_options() {
    let d = BlockConfig::from_cli("path=/a.img,id=data,ro,root", "disk0").unwrap();
    assert_eq!(
        d,
        BlockConfig {
            root: true,
            read_only: true,
            ..BlockConfig::path("data", "/a.img")
        }
    );
}

#[test]
fn test_disk_arg_default_id() {
    let d = BlockConfig::from_cli("path=/a.img", "disk3").unwrap();
    assert_eq!(d.id, "disk3");
    assert!(!d.read_only && !d.root);
}

#[test]
fn test_disk_arg_without_path_rejected() {
    let e = BlockConfig::from_cli("id=x,ro", "disk0").unwrap_err();
    assert!(e.to_string().contains("no path"), "{e}");
}

#[test]
fn test_disk_arg_unknown_option_rejected() {
    let e = BlockConfig::from_cli("path=/a,cache=none", "disk0").unwrap_err();
    assert!(
        e.to_string().contains("unknown option \"cache=none\""),
        "{e}"
    );
}

#[test]
fn test_disk_arg_template() {
    let d = BlockConfig::from_cli(
        "template=debian,store=zfs:tank/fennec,vm=web1,root",
        "disk0",
    )
    .unwrap();
    assert_eq!(
        d,
        BlockConfig {
            id: "disk0".into(),
            root: true,
            source: DriveSource::Template(TemplateDrive {
                template: "debian".into(),
                store: Some("zfs:tank/fennec".into()),
                vm_name: Some("web1".into()),
            }),
            read_only: false,
            ..BlockConfig::default()
        }
    );
    d.validate().unwrap();
    for (arg, why) in [
        ("template=a,path=/b", BOTH_SOURCES),
        ("path=/b,vm=x", "store and vm_name go with a template"),
        ("template=a,template=b", "given twice"),
        ("template=", "no value"),
        ("store=zfs:x", "no path= or template="),
    ] {
        let e = BlockConfig::from_cli(arg, "d").unwrap_err().to_string();
        assert!(e.contains(why), "{arg}: {e}");
    }
}

#[test]
fn test_drive_template_names_checked() {
    for (template, vm) in [("../etc", None), ("ok", Some("a/b")), ("-x", None)] {
        let d = BlockConfig {
            id: "d".into(),
            source: DriveSource::Template(TemplateDrive {
                template: template.into(),
                store: None,
                vm_name: vm.map(str::to_string),
            }),
            ..BlockConfig::default()
        };
        assert!(
            matches!(d.validate(), Err(ConfigError::DriveSource { .. })),
            "{template} {vm:?}"
        );
    }
    let json = r#"{"drive_id": "d", "path_on_host": "/a", "store": "zfs:x"}"#;
    let e = serde_json::from_str::<BlockConfig>(json).unwrap_err();
    assert!(
        e.to_string()
            .contains("store and vm_name go with a template"),
        "{e}"
    );
}

#[test]
fn test_no_boot_source_is_none_and_refused() {
    let c: VmConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c.boot_source, None);
    assert_eq!(c.validate(), Err(ConfigError::NoKernel));
    assert_eq!(
        serde_json::to_value(&c).unwrap()["boot-source"],
        serde_json::Value::Null
    );
}

#[test]
fn test_drive_with_path_and_template_refused_from_json() {
    let json = r#"{"drive_id": "d", "path_on_host": "/a", "template": "t"}"#;
    let e = serde_json::from_str::<BlockConfig>(json).unwrap_err();
    assert!(e.to_string().contains(BOTH_SOURCES), "{e}");
}

#[test]
fn test_drive_json_round_trip_keeps_firecracker_names() {
    for json in [
        r#"{"drive_id":"rootfs","path_on_host":"/r.ext4","is_root_device":true,"is_read_only":false,"cache_type":"Unsafe","io_engine":"Sync"}"#,
        r#"{"drive_id":"d","is_root_device":false,"is_read_only":true,"template":"t","vm_name":"web1","cache_type":"Writeback","io_engine":"Sync","rate_limiter":{},"partuuid":"0eaa91a0-01"}"#,
    ] {
        let d: BlockConfig = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
    }
}

#[test]
fn test_drive_bad_id_rejected() {
    let mut c = config(None);
    c.drives.push(drive("has space", false));
    assert_eq!(c.validate(), Err(ConfigError::DriveId("has space".into())));
}

#[test]
fn test_drives_duplicate_id_rejected() {
    let mut c = config(None);
    c.drives = vec![drive("a", false), drive("a", false)];
    assert_eq!(c.validate(), Err(ConfigError::DuplicateDrive("a".into())));
}

#[test]
fn test_drives_two_roots_rejected() {
    let mut c = config(None);
    c.drives = vec![drive("a", true), drive("b", true)];
    assert_eq!(
        c.validate(),
        Err(ConfigError::TwoRootDrives("a".into(), "b".into()))
    );
}

#[test]
fn test_drives_too_many_rejected() {
    let mut c = config(None);
    c.drives = (0..20).map(|i| drive(&format!("d{i}"), false)).collect();
    assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(20)));
}

#[test]
fn test_drives_root_first_in_guest_order() {
    let mut c = config(None);
    c.drives = vec![drive("a", false), drive("r", true), drive("b", false)];
    let ids: Vec<_> = c
        .drives_in_guest_order()
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, ["r", "a", "b"]);
}

#[test]
fn test_kernel_cmdline_root_drive_adds_root_and_mode() {
    let mut c = config(Some("console=ttyS0 reboot=k"));
    c.drives = vec![BlockConfig {
        read_only: true,
        ..drive("r", true)
    }];
    let (_, extra) = c.kernel_cmdline();
    assert_eq!(extra, ["root=/dev/vda", "ro"]);
}

#[test]
fn test_kernel_cmdline_root_drive_partuuid() {
    let mut c = config(None);
    c.drives = vec![BlockConfig {
        partuuid: Some("0eaa91a0-01".into()),
        read_only: true,
        ..drive("rootfs", true)
    }];
    let (_, extra) = c.kernel_cmdline();
    assert_eq!(extra, ["root=PARTUUID=0eaa91a0-01", "ro"]);
}

#[test]
fn test_kernel_cmdline_user_root_respected() {
    let mut c = config(Some("root=/dev/vdb"));
    c.drives = vec![drive("r", true)];
    let (_, extra) = c.kernel_cmdline();
    assert!(!extra.iter().any(|e| e.starts_with("root=")));
}

#[test]
fn test_vm_config_firecracker_drives_parse() {
    let json = r#"{
        "boot-source": {"kernel_image_path": "/vmlinux"},
        "drives": [{"drive_id": "rootfs", "path_on_host": "/r.ext4",
                    "is_root_device": true, "is_read_only": false}]
    }"#;
    let cfg: VmConfig = serde_json::from_str(json).unwrap();
    assert_eq!(cfg.drives[0].id, "rootfs");
    assert!(cfg.drives[0].root);
}

#[test]
fn test_machine_config_zero_vcpus_invalid() {
    let m = MachineConfig {
        vcpu_count: 0,
        mem_size_mib: 128,
        ..MachineConfig::default()
    };
    assert_eq!(m.validate(), Err(ConfigError::VcpuCount(0)));
}

#[test]
fn test_machine_config_tiny_memory_invalid() {
    let m = MachineConfig {
        vcpu_count: 1,
        mem_size_mib: 1,
        ..MachineConfig::default()
    };
    assert_eq!(m.validate(), Err(ConfigError::MemSize(1)));
}

#[test]
fn test_vm_config_empty_kernel_invalid() {
    assert_eq!(VmConfig::default().validate(), Err(ConfigError::NoKernel));
}

#[test]
fn test_kernel_cmdline_user_args_get_console_and_reboot() {
    let (base, extra) = config(Some("quiet")).kernel_cmdline();
    assert_eq!(base, "quiet");
    assert_eq!(extra, vec!["console=ttyS0", "reboot=k"]);
}

#[test]
fn test_kernel_cmdline_user_console_respected() {
    let (_, extra) = config(Some("console=hvc0 reboot=t")).kernel_cmdline();
    assert!(extra.is_empty());
}

#[test]
fn test_kernel_cmdline_init_args_do_not_count() {
    let (_, extra) = config(Some("quiet -- console=foo")).kernel_cmdline();
    assert_eq!(extra, vec!["console=ttyS0", "reboot=k"]);
}

#[test]
fn test_kernel_cmdline_default_has_console() {
    let (base, extra) = config(None).kernel_cmdline();
    assert_eq!(base, DEFAULT_BOOT_ARGS);
    assert!(extra.is_empty());
}

#[test]
fn test_vm_config_firecracker_json_parses() {
    let json = r#"{
        "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256}
    }"#;
    let cfg: VmConfig = serde_json::from_str(json).unwrap();
    assert_eq!(cfg.machine_config.vcpu_count, 2);
    assert_eq!(
        cfg.boot_source.map(|b| b.kernel_image_path),
        Some(PathBuf::from("/vmlinux"))
    );
}

#[test]
fn test_vm_config_unknown_field_rejected() {
    let json = r#"{"boot-source": {"kernel_image_path": "/k", "bogus": 1}}"#;
    assert!(serde_json::from_str::<VmConfig>(json).is_err());
}
