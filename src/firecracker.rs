//! Firecracker's JSON shapes, where they carry more than fennec models.
//!
//! Firecracker's bodies have fields fennec has no use for but that clients send with fixed
//! values (`"smt": false`, `"cache_type": "Unsafe"`, `"io_engine": "Sync"`). This module takes
//! them out of a body before it is deserialised into fennec's config types (which deny unknown
//! fields), accepting the values that match what fennec does and refusing the others with a
//! message that says why. The API and the `--config-file` loader both go through here, so a
//! body means the same in both.

use serde_json::{Map, Value};

use crate::config::{BlockConfig, BootSourceConfig, MachineConfig, NetConfig, VmConfig};

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
    /// A Firecracker field with a value fennec cannot honour.
    #[error("{field}: {value} given, but {refusal}")]
    Refused {
        /// The field.
        field: &'static str,
        /// The value given, as JSON.
        value: Value,
        /// Why.
        refusal: &'static str,
    },
    /// A refusal inside one section of a configuration file.
    #[error("{section}: {error}")]
    In {
        /// The section (`machine-config`, `drives`, ...).
        section: &'static str,
        /// What is wrong there.
        error: Box<BodyError>,
    },
    /// The object does not fit the configuration: an unknown field, a wrong type, a value
    /// the configuration refuses.
    #[error("{0}")]
    Shape(serde_json::Error),
}

/// A Firecracker field fennec accepts only with the value it names, and why.
struct Accepted {
    field: &'static str,
    ok: fn(&Value) -> bool,
    refusal: &'static str,
}

const MACHINE: &[Accepted] = &[
    Accepted {
        field: "smt",
        ok: is_false,
        refusal: "simultaneous multithreading (smt) is not supported",
    },
    Accepted {
        field: "track_dirty_pages",
        ok: is_false,
        refusal: "dirty page tracking is not supported (fennec has no snapshots)",
    },
    Accepted {
        field: "cpu_template",
        ok: is_none_string,
        refusal: "CPU templates are not supported; use \"None\"",
    },
    Accepted {
        field: "huge_pages",
        ok: is_none_string,
        refusal: "huge pages are not supported; use \"None\"",
    },
];

const DRIVE: &[Accepted] = &[
    Accepted {
        field: "cache_type",
        // fennec always honours the guest's flushes, which is "Writeback"; "Unsafe" only
        // allows skipping them, so it is served the same, safer way.
        ok: |v| matches!(v.as_str(), Some("Unsafe" | "Writeback")),
        refusal: "cache_type must be \"Unsafe\" or \"Writeback\"",
    },
    Accepted {
        field: "io_engine",
        ok: |v| v.as_str() == Some("Sync"),
        refusal: "only the \"Sync\" io_engine is supported",
    },
    Accepted {
        field: "rate_limiter",
        ok: Value::is_null,
        refusal: "rate limiters are not supported",
    },
    Accepted {
        field: "partuuid",
        ok: Value::is_null,
        refusal: "partuuid is not supported; the root drive is always /dev/vda",
    },
    Accepted {
        field: "socket",
        ok: Value::is_null,
        refusal: "vhost-user drives are not supported",
    },
];

const NET: &[Accepted] = &[
    Accepted {
        field: "rx_rate_limiter",
        ok: Value::is_null,
        refusal: "rate limiters are not supported",
    },
    Accepted {
        field: "tx_rate_limiter",
        ok: Value::is_null,
        refusal: "rate limiters are not supported",
    },
];

fn is_false(v: &Value) -> bool {
    v.as_bool() == Some(false)
}

fn is_none_string(v: &Value) -> bool {
    v.as_str() == Some("None")
}

/// Removes `accepted` fields from `object`, or says which value fennec cannot honour.
fn strip(object: &mut Value, accepted: &[Accepted]) -> Result<(), BodyError> {
    let Some(map) = object.as_object_mut() else {
        return Ok(());
    };
    for a in accepted {
        if let Some(value) = map.remove(a.field) {
            if !(a.ok)(&value) {
                return Err(BodyError::Refused {
                    field: a.field,
                    value,
                    refusal: a.refusal,
                });
            }
        }
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(
    mut value: Value,
    accepted: &[Accepted],
) -> Result<T, BodyError> {
    strip(&mut value, accepted)?;
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
    parse(value, &[])
}

/// A `machine-config` body.
pub fn machine_config(value: Value) -> Result<MachineConfig, BodyError> {
    parse(value, MACHINE)
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

/// A drive body.
pub fn drive(value: Value) -> Result<BlockConfig, BodyError> {
    parse(value, DRIVE)
}

/// A network-interface body.
pub fn network_interface(value: Value) -> Result<NetConfig, BodyError> {
    parse(value, NET)
}

/// A whole configuration, as Firecracker's `--config-file` takes it (`boot-source`,
/// `machine-config`, `drives`, `network-interfaces`).
pub fn vm_config(text: &str) -> Result<VmConfig, BodyError> {
    let mut value = json(text.as_bytes())?;
    let map = value.as_object_mut().ok_or(BodyError::NotObject)?;
    let within = |section| {
        move |error| BodyError::In {
            section,
            error: Box::new(error),
        }
    };
    if let Some(m) = map.get_mut("machine-config") {
        strip(m, MACHINE).map_err(within("machine-config"))?;
    }
    for (key, accepted) in [("drives", DRIVE), ("network-interfaces", NET)] {
        if let Some(Value::Array(items)) = map.get_mut(key) {
            for item in items {
                strip(item, accepted).map_err(within(key))?;
            }
        }
    }
    serde_json::from_value(value).map_err(BodyError::Shape)
}

/// `machine-config` as Firecracker reports it, with the fields fennec fixes.
pub fn machine_config_json(m: &MachineConfig) -> Value {
    let mut map = Map::new();
    map.insert("vcpu_count".into(), m.vcpu_count.into());
    map.insert("mem_size_mib".into(), m.mem_size_mib.into());
    map.insert("smt".into(), false.into());
    map.insert("track_dirty_pages".into(), false.into());
    map.insert("huge_pages".into(), "None".into());
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn test_machine_config_smt_refused_with_reason() {
        let e = machine_config(json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": true}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("smt"), "{e}");
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
        };
        let m = machine_config_patch(json!({"mem_size_mib": 64}), &current).unwrap();
        assert_eq!((m.vcpu_count, m.mem_size_mib), (2, 64));
    }

    #[test]
    fn test_drive_cache_type_accepted_rate_limiter_refused() {
        let d = drive(json!({
            "drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true,
            "is_read_only": false, "cache_type": "Unsafe", "io_engine": "Sync"
        }))
        .unwrap();
        assert!(d.root);
        let e = drive(json!({
            "drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true,
            "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("rate limiters"), "{e}");
    }

    #[test]
    fn test_vm_config_file_strips_compat_fields_everywhere() {
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
