//! The configuration as JSON: Firecracker's bodies, as the control socket and `--config-file`
//! receive them.
//!
//! The config types carry Firecracker's field names and every field Firecracker defines, so any
//! body a Firecracker client sends parses; what fennec does not do (`"smt": true`, a rate
//! limiter with buckets) is refused by the types' `validate` with a message naming the field.
//! A section the API receives on its own is validated here; a whole configuration when it is
//! built.

use serde_json::Value;

use super::device::VirtioDeviceConfig;
use super::error::ConfigError;
use super::machine::{BootSourceConfig, MachineConfig};
use super::vm::VmConfig;

/// Why a body or a configuration file was refused. The text is what the API's 400 answer and
/// the CLI's one-line error say.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No body where one is needed.
    #[error("the request has no body; it needs a JSON object")]
    Empty,
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// JSON, but not an object.
    #[error("the body must be a JSON object")]
    NotObject,
    /// A section that parses but that fennec refuses (a range, a name, a field set to
    /// something fennec does not do).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The object does not fit the configuration: an unknown field, a wrong type, a value
    /// the configuration refuses.
    #[error("{0}")]
    Shape(serde_json::Error),
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, BodyError> {
    serde_json::from_value(value).map_err(BodyError::Shape)
}

/// Parses a JSON body, with serde's message (line and column) on failure.
pub fn json(body: &[u8]) -> Result<Value, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    serde_json::from_slice(body).map_err(BodyError::Json)
}

/// A `boot-source` body.
pub fn boot_source(value: Value) -> Result<BootSourceConfig, BodyError> {
    parse(value)
}

/// A `machine-config` body.
pub fn machine_config(value: Value) -> Result<MachineConfig, BodyError> {
    let machine: MachineConfig = parse(value)?;
    machine.validate()?;
    Ok(machine)
}

/// A `machine-config` PATCH body: the fields given replace those of `current`.
pub fn machine_config_patch(
    value: Value,
    current: &MachineConfig,
) -> Result<MachineConfig, BodyError> {
    let mut merged = serde_json::to_value(current).map_err(BodyError::Shape)?;
    let Value::Object(patch) = value else {
        return Err(BodyError::NotObject);
    };
    if let Some(m) = merged.as_object_mut() {
        m.extend(patch);
    }
    machine_config(merged)
}

/// A device's body (a drive, a network interface, the entropy device): parsed, and checked
/// on its own.
pub fn device<C: VirtioDeviceConfig>(value: Value) -> Result<C, BodyError> {
    let device: C = parse(value)?;
    device.validate()?;
    Ok(device)
}

/// A whole configuration, as Firecracker's `--config-file` takes it (`boot-source`,
/// `machine-config`, `drives`, `network-interfaces`); validated when the VM is built.
pub fn vm_config(text: &str) -> Result<VmConfig, BodyError> {
    parse(json(text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BlockConfig, CacheType, NetConfig, RateLimiterConfig};
    use serde_json::json;

    #[test]
    fn test_machine_config_firecracker_defaults_accepted() {
        let m = machine_config(json!({
            "vcpu_count": 2, "mem_size_mib": 256, "smt": false,
            "track_dirty_pages": false, "cpu_template": "None", "huge_pages": "None"
        }))
        .unwrap();
        assert_eq!((m.vcpu_count, m.mem_size_mib), (2, 256));
    }

    #[test]
    fn test_machine_config_unknown_field_refused() {
        let e = machine_config(json!({"vcpu_count": 2, "mem_size_mib": 256, "cpus": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `cpus`"), "{e}");
    }

    #[test]
    fn test_machine_config_patch_keeps_other_fields() {
        let current = MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 512,
            ..MachineConfig::default()
        };
        let m = machine_config_patch(json!({"mem_size_mib": 64}), &current).unwrap();
        assert_eq!((m.vcpu_count, m.mem_size_mib), (2, 64));
    }

    #[test]
    fn test_machine_config_every_firecracker_choice_parses_and_unsupported_ones_say_why() {
        for (field, value) in [
            ("smt", json!(true)),
            ("track_dirty_pages", json!(true)),
            ("cpu_template", json!("T2")),
            ("huge_pages", json!("2M")),
        ] {
            let mut body = json!({"vcpu_count": 1, "mem_size_mib": 64});
            body[field] = value.clone();
            let e = machine_config(body).unwrap_err();
            assert!(
                matches!(&e, BodyError::Config(ConfigError::Unsupported { error, .. })
                    if error.field == field),
                "{field}={value}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("machine-config: {field}: ")),
                "{e}"
            );
        }
        let e = machine_config(json!({"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "1G"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `1G`"), "{e}");
    }

    #[test]
    fn test_machine_config_reported_as_firecracker_does() {
        let m = machine_config(json!({"vcpu_count": 2, "mem_size_mib": 64})).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false,
                   "track_dirty_pages": false, "huge_pages": "None"})
        );
    }

    #[test]
    fn test_drive_firecracker_fields_typed() {
        let d = device::<BlockConfig>(json!({
            "drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true,
            "is_read_only": false, "cache_type": "Writeback", "io_engine": "Sync",
            "rate_limiter": {}, "partuuid": "0eaa91a0-01"
        }))
        .unwrap();
        assert_eq!(d.cache_type, CacheType::Writeback);
        assert_eq!(d.partuuid.as_deref(), Some("0eaa91a0-01"));
        for (field, value, says) in [
            (
                "rate_limiter",
                json!({"bandwidth": {"size": 1, "refill_time": 1, "burst": 1}}),
                "unknown field `burst`",
            ),
            ("io_engine", json!("Async"), "\"Sync\""),
            ("socket", json!("/run/vhost.sock"), "vhost-user"),
            ("partuuid", json!("root; rm -rf"), "not a partition UUID"),
            ("cache_type", json!("None"), "unknown variant `None`"),
        ] {
            let mut body = json!({"drive_id": "rootfs", "path_on_host": "/r.ext4"});
            body[field] = value;
            let e = device::<BlockConfig>(body).unwrap_err().to_string();
            assert!(e.contains(says), "{field}: {e}");
            // serde's own errors (an unknown variant or field) name no drive.
            if !matches!(field, "cache_type" | "rate_limiter") {
                assert!(
                    e.starts_with("Drive \"rootfs\"") || e.starts_with("drive \"rootfs\""),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn test_network_interface_rate_limiters_taken_as_buckets() {
        let n = device::<NetConfig>(json!({"iface_id": "n", "host_dev_name": "tap0",
                                         "rx_rate_limiter": {}, "tx_rate_limiter": null}))
        .unwrap();
        assert_eq!(n.rx_rate_limiter, Some(RateLimiterConfig::default()));
        assert_eq!(n.rx_rate_limiter.unwrap().buckets(), (None, None));
        let n = device::<NetConfig>(json!({"iface_id": "n", "host_dev_name": "tap0",
            "tx_rate_limiter": {"bandwidth": {"size": 1000, "one_time_burst": 5, "refill_time": 100}}}))
        .unwrap();
        let bucket = fennec_devices::rate_limiter::BucketSpec {
            size: 1000,
            one_time_burst: 5,
            refill_ms: 100,
        };
        assert_eq!(n.tx_rate_limiter.unwrap().buckets(), (Some(bucket), None));
    }

    #[test]
    fn test_vm_config_file_takes_firecracker_fields_everywhere() {
        let c = vm_config(
            r#"{"boot-source": {"kernel_image_path": "/k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "smt": false},
                "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
                            "cache_type": "Writeback"}],
                "network-interfaces": [{"iface_id": "n", "host_dev_name": "tap0",
                                        "rx_rate_limiter": null}]}"#,
        )
        .unwrap();
        assert_eq!(c.drives.len(), 1);
        assert_eq!(c.net.len(), 1);
        c.validate().unwrap();
        let smt = vm_config(
            r#"{"boot-source": {"kernel_image_path": "/k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "smt": true}}"#,
        )
        .unwrap();
        assert!(smt.validate().unwrap_err().to_string().contains("smt"));
    }

    #[test]
    fn test_json_empty_body_says_so() {
        assert!(json(b"  ").unwrap_err().to_string().contains("no body"));
        assert!(json(b"{\"a\":")
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
    }
}
