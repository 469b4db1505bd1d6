use std::path::Path;

use super::files::place_files;
use super::*;
use crate::config::VmConfig;
use crate::config::{BlockConfig, BootSourceConfig};

fn config() -> VmConfig {
    VmConfig {
        boot_source: Some(BootSourceConfig {
            kernel_image_path: "/images/vmlinux".into(),
            initrd_path: Some("/images/initrd.img".into()),
            boot_args: None,
        }),
        drives: vec![
            BlockConfig {
                root: true,
                ..BlockConfig::path("rootfs", "/images/rootfs.ext4")
            },
            BlockConfig {
                read_only: true,
                ..BlockConfig::path("data", "/data/disk.img")
            },
        ],
        ..VmConfig::default()
    }
}

fn spec(config: Option<VmConfig>) -> JailSpec {
    JailSpec {
        id: "vm1".into(),
        uid: 1000,
        gid: 1000,
        base: std::env::temp_dir().join("fennec-jail-unit"),
        netns: None,
        limits: Limits::default(),
        config,
        api_socket: None,
        run_args: Vec::new(),
        jailer: None,
    }
}

#[test]
fn test_files_are_placed_at_fixed_names_and_the_config_names_those() {
    let (placed, inside) = place_files(&config()).unwrap();
    let names: Vec<_> = placed
        .iter()
        .map(|p| (p.name.as_str(), p.bind, p.read_only))
        .collect();
    assert_eq!(
        names,
        [
            ("kernel", false, true),
            ("initrd", false, true),
            ("drive-rootfs", true, false),
            ("drive-data", true, true)
        ]
    );
    let boot = inside.boot_source.unwrap();
    assert_eq!(boot.kernel_image_path, Path::new("/kernel"));
    assert_eq!(boot.initrd_path.as_deref(), Some(Path::new("/initrd")));
    let paths: Vec<_> = inside
        .drives
        .iter()
        .map(|d| d.image_path().unwrap())
        .collect();
    assert_eq!(
        paths,
        [Path::new("/drive-rootfs"), Path::new("/drive-data")]
    );
    assert!(inside.drives[0].root && inside.drives[1].read_only);
}

#[test]
fn test_template_drives_and_odd_drive_ids_are_refused() {
    let mut c = config();
    c.drives[0].source = crate::config::DriveSource::Template(crate::config::TemplateDrive {
        template: "debian".into(),
        store: None,
        vm_name: None,
    });
    let e = place_files(&c).unwrap_err().to_string();
    assert!(e.contains("cloned from a template"), "{e}");
    let mut c = config();
    c.drives[1].id = "../x".into();
    let e = place_files(&c).unwrap_err().to_string();
    assert!(e.contains("cannot name a file"), "{e}");
}

#[test]
fn test_interfaces_fennec_would_make_are_refused_with_the_tap_to_use() {
    for arg in ["bridge=br0", "user"] {
        let mut c = config();
        c.net = vec![crate::config::NetConfig::from_cli(arg, "net0").unwrap()];
        let e = place_files(&c).unwrap_err().to_string();
        assert!(
            e.contains("not available in the jail") && e.contains("tap=NAME"),
            "{arg}: {e}"
        );
    }
    let mut c = config();
    c.net = vec![crate::config::NetConfig::from_cli("tap=tap0", "net0").unwrap()];
    place_files(&c).unwrap();
}

#[test]
fn test_root_ids_and_bad_names_are_refused_before_anything_is_made() {
    let mut s = spec(Some(config()));
    s.uid = 0;
    assert!(matches!(run(&s), Err(JailError::Root)));
    let mut s = spec(Some(config()));
    s.gid = 0;
    assert!(matches!(run(&s), Err(JailError::Root)));
    for id in ["", "a/b", "..", &"x".repeat(65)] {
        let mut s = spec(Some(config()));
        s.id = id.to_string();
        assert!(matches!(run(&s), Err(JailError::BadId(_))), "{id:?}");
    }
    assert!(!spec(None).base.join("vm1").exists());
}

#[test]
fn test_missing_files_fail_and_leave_nothing_behind() {
    let base = tempfile::tempdir().unwrap();
    let mut s = spec(Some(config()));
    s.base = base.path().to_path_buf();
    let e = run(&s).unwrap_err().to_string();
    assert!(e.contains("/images/vmlinux"), "{e}");
    assert!(!base.path().join("vm1").exists());
}

#[test]
fn test_a_jailed_vsock_device_listens_in_the_jails_root() {
    let mut c = config();
    c.vsock = Some(crate::config::VsockConfig {
        guest_cid: 3,
        uds_path: "/run/elsewhere/v.sock".into(),
        vsock_id: None,
    });
    let (placed, inside) = place_files(&c).unwrap();
    assert_eq!(inside.vsock.unwrap().uds_path, Path::new("/v.sock"));
    assert!(
        placed.iter().all(|p| p.name != "v.sock"),
        "nothing is placed for it"
    );
}
