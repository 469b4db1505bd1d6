//! Unit tests of the document, its limits and the configuration's checks.

use std::net::Ipv4Addr;

use super::*;
use serde_json::json;

#[test]
fn test_mmds_patch_follows_rfc_7396() {
    let mmds = Mmds::default();
    mmds.put(json!({"a": "b", "c": {"d": "e", "f": "g"}}))
        .unwrap();
    mmds.patch(json!({"a": "z", "c": {"f": null}, "n": [1]}))
        .unwrap();
    assert_eq!(mmds.get(), json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
    assert_eq!(mmds.patch(json!([1])), Err(MmdsError::NotObject));
    assert_eq!(mmds.put(json!("x")), Err(MmdsError::NotObject));
    assert_eq!(mmds.get()["a"], "z", "a refused write changes nothing");
}

#[test]
fn test_mmds_size_limit_refuses_and_keeps_the_old_document() {
    let mmds = Mmds::new(32);
    mmds.put(json!({"k": "v"})).unwrap();
    let big = json!({"k": "x".repeat(40)});
    assert!(matches!(
        mmds.put(big.clone()),
        Err(MmdsError::TooLarge { limit: 32, .. })
    ));
    assert!(matches!(mmds.patch(big), Err(MmdsError::TooLarge { .. })));
    assert_eq!(mmds.get(), json!({"k": "v"}));
}

#[test]
fn test_mmds_config_parses_firecracker_bodies_and_checks_them() {
    let c: MmdsConfig = serde_json::from_value(json!({
        "version": "V2", "network_interfaces": ["eth0"], "ipv4_address": "169.254.170.2"
    }))
    .unwrap();
    assert_eq!(c.version, MmdsVersion::V2);
    assert_eq!(c.address(), Ipv4Addr::new(169, 254, 170, 2));
    assert_eq!(c.validate(["eth0", "eth1"].into_iter()), Ok(()));
    assert_eq!(
        c.validate(["eth1"].into_iter()),
        Err(MmdsError::UnknownInterface("eth0".into()))
    );
    let c: MmdsConfig = serde_json::from_value(json!({"network_interfaces": ["eth0"]})).unwrap();
    assert_eq!((c.version, c.address()), (MmdsVersion::V1, DEFAULT_IPV4));
    for bad in ["10.0.0.1", "169.254.0.0", "169.254.3.255"] {
        let c = MmdsConfig {
            ipv4_address: Some(bad.parse().unwrap()),
            ..c.clone()
        };
        assert!(
            matches!(c.validate(["eth0"].into_iter()), Err(MmdsError::Address(_))),
            "{bad}"
        );
    }
    for bad in [
        json!({"network_interfaces": ["eth0"], "version": "V3"}),
        json!({"network_interfaces": ["eth0"], "ipv4_address": "x"}),
        json!({"version": "V1"}),
        json!({"network_interfaces": ["eth0"], "extra": 1}),
    ] {
        assert!(
            serde_json::from_value::<MmdsConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    let twice = MmdsConfig {
        network_interfaces: vec!["eth0".into(), "eth0".into()],
        ..c
    };
    assert_eq!(
        twice.validate(["eth0"].into_iter()),
        Err(MmdsError::DuplicateInterface("eth0".into()))
    );
}
