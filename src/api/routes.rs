//! From an HTTP method, path and body to an [`ApiRequest`].
//!
//! Firecracker's paths keep their bodies and answers. A path fennec does not know is a 404 and
//! a known path with another method a 405; a Firecracker operation fennec does not implement
//! (balloon, hotplug, ...) is a 400 that says so, which is what a Firecracker client
//! shows its user.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, ApiRequest, MmdsRequest};
use crate::config::json as config_json;
use crate::config::RateLimiterConfig;
use crate::config::{
    BlockConfig, DeviceConfig, EntropyConfig, NetConfig, VirtioDeviceConfig, VsockConfig,
};

/// How long `Shutdown` waits for the guest when the body names no timeout.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout_ms` a `Shutdown` takes: a guest that has not shut down in ten minutes
/// will not.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);

/// Firecracker operations fennec does not implement.
const FIRECRACKER_ONLY: &[&str] = &["balloon", "cpu-config", "hotplug", "pmem", "serial"];

/// `PUT /metrics` body: Firecracker's `Metrics`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsBody {
    metrics_path: std::path::PathBuf,
}

/// `PUT /snapshot/create` body: Firecracker's `SnapshotCreateParams`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCreate {
    #[serde(default)]
    snapshot_type: Option<String>,
    snapshot_path: std::path::PathBuf,
    mem_file_path: std::path::PathBuf,
    /// Deprecated in Firecracker, and ignored there too.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
}

/// `mem_backend` of `PUT /snapshot/load`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemBackend {
    backend_type: String,
    backend_path: std::path::PathBuf,
}

/// One of `network_overrides`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkOverride {
    iface_id: String,
    #[serde(default)]
    host_dev_name: String,
    /// fennec's extensions: another MAC, or a bridge or user mode instead of a TAP.
    #[serde(default)]
    guest_mac: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    user: Option<crate::config::UserNetConfig>,
}

/// `vsock_override`: the vsock device's new host socket.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VsockOverride {
    uds_path: std::path::PathBuf,
}

/// `PUT /checkpoint` body (fennec's extension).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    checkpoint_name: String,
}

/// One of `drive_overrides` (fennec's extension).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriveOverride {
    drive_id: String,
    path_on_host: std::path::PathBuf,
}

/// `PUT /snapshot/load` body: Firecracker's `SnapshotLoadParams`, and `drive_overrides`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotLoadBody {
    snapshot_path: std::path::PathBuf,
    #[serde(default)]
    mem_file_path: Option<std::path::PathBuf>,
    #[serde(default)]
    mem_backend: Option<MemBackend>,
    #[serde(default)]
    enable_diff_snapshots: bool,
    #[serde(default)]
    resume_vm: bool,
    #[serde(default)]
    network_overrides: Vec<NetworkOverride>,
    #[serde(default)]
    vsock_override: Option<VsockOverride>,
    #[serde(default)]
    drive_overrides: Vec<DriveOverride>,
}

fn snapshot_load(raw: &[u8]) -> Result<ApiRequest, ApiError> {
    let load: SnapshotLoadBody = body(raw)?;
    let bad = |m: &str| Err(ApiError::bad_request(m.to_string()));
    if load.enable_diff_snapshots {
        return bad("enable_diff_snapshots: fennec takes full snapshots only");
    }
    let mem_file_path = match (load.mem_file_path, load.mem_backend) {
        (Some(path), None) => path,
        (None, Some(b)) if b.backend_type == "File" => b.backend_path,
        (None, Some(b)) => {
            return Err(ApiError::bad_request(format!(
                "mem_backend {:?} is not supported: fennec loads memory from a File",
                b.backend_type
            )))
        }
        (Some(_), Some(_)) => return bad("Give mem_backend or mem_file_path, not both"),
        (None, None) => return bad("Missing mem_backend (or the older mem_file_path)"),
    };
    let mut network_overrides = Vec::new();
    for o in load.network_overrides {
        let guest_mac = match o.guest_mac.as_deref().map(str::parse::<crate::MacAddr>) {
            None => None,
            Some(Ok(mac)) if mac.is_unicast() => Some(mac),
            Some(Ok(mac)) => {
                return Err(ApiError::bad_request(format!(
                    "guest_mac {mac} is not a unicast MAC address"
                )))
            }
            Some(Err(e)) => return Err(ApiError::bad_request(e)),
        };
        // The same checks as a configured interface's: exactly one host side, a valid name.
        let host = crate::config::NetConfig {
            id: o.iface_id.clone(),
            tap: o.host_dev_name,
            bridge: o.bridge,
            user: o.user,
            ..Default::default()
        };
        host.validate_host()
            .map_err(|e| ApiError::bad_request(format!("network_overrides: {e}")))?;
        network_overrides.push(super::NetOverride {
            iface_id: o.iface_id,
            host,
            guest_mac,
        });
    }
    Ok(ApiRequest::LoadSnapshot(Box::new(super::LoadSnapshot {
        snapshot_path: load.snapshot_path,
        mem_file_path,
        resume_vm: load.resume_vm,
        network_overrides,
        vsock_uds_path: load.vsock_override.map(|v| v.uds_path),
        drive_overrides: load
            .drive_overrides
            .into_iter()
            .map(|o| (o.drive_id, o.path_on_host))
            .collect(),
    })))
}

/// `PUT /actions` body: Firecracker's `InstanceActionInfo`, plus fennec's `timeout_ms`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action_type: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `PATCH /vm` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmStateBody {
    state: String,
}

/// `PATCH /drives/{id}` body: Firecracker's `PartialDrive`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialDrive {
    drive_id: String,
    #[serde(default)]
    path_on_host: Option<std::path::PathBuf>,
    #[serde(default)]
    rate_limiter: Option<RateLimiterConfig>,
}

/// `PATCH /network-interfaces/{id}` body: Firecracker's `PartialNetworkInterface`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialNet {
    iface_id: String,
    #[serde(default)]
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

/// `PUT /drives/{id}/snapshot` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    snapshot_name: String,
}

fn body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let value = json(raw)?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn json(raw: &[u8]) -> Result<Value, ApiError> {
    Ok(config_json::json(raw)?)
}

fn same_id(path_id: &str, body_id: &str) -> Result<(), ApiError> {
    if path_id == body_id {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "The id from the path ({path_id:?}) does not match the id from the body ({body_id:?})"
        )))
    }
}

/// `PUT` of a device's configuration: the body parsed and checked as a `C`; for a device a VM
/// may have many of, its ID must be the path's.
fn put_device<C>(raw: &[u8], path_id: Option<&str>) -> Result<ApiRequest, ApiError>
where
    C: VirtioDeviceConfig,
    DeviceConfig: From<C>,
{
    let device: C = config_json::device(json(raw)?)?;
    if let Some(path_id) = path_id {
        same_id(path_id, device.id())?;
    }
    Ok(ApiRequest::PutDevice(device.into()))
}

fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
    ApiError {
        status: 405,
        message: format!("{method} is not allowed on {path}; use {allowed}"),
    }
}

/// Maps one request to what it asks.
pub fn route(method: &str, target: &str, raw: &[u8]) -> Result<ApiRequest, ApiError> {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let bad = |message: String| ApiError::bad_request(message);
    match (method, segments.as_slice()) {
        ("GET", [] | [""]) => Ok(ApiRequest::GetInstanceInfo),
        ("GET", ["version"]) => Ok(ApiRequest::GetVersion),
        (_, ["version"]) => Err(method_not_allowed(method, path, "GET")),
        (_, [] | [""]) => Err(method_not_allowed(method, path, "GET")),

        ("PUT", ["boot-source"]) => config_json::boot_source(json(raw)?)
            .map(ApiRequest::PutBootSource)
            .map_err(ApiError::from),
        (_, ["boot-source"]) => Err(method_not_allowed(method, path, "PUT")),

        ("GET", ["machine-config"]) => Ok(ApiRequest::GetMachineConfig),
        ("PUT", ["machine-config"]) => config_json::machine_config(json(raw)?)
            .map(ApiRequest::PutMachineConfig)
            .map_err(ApiError::from),
        ("PATCH", ["machine-config"]) => Ok(ApiRequest::PatchMachineConfig(json(raw)?)),
        (_, ["machine-config"]) => Err(method_not_allowed(method, path, "GET, PUT or PATCH")),

        // A device's configuration: one line per kind of device.
        ("PUT", ["drives", id]) => put_device::<BlockConfig>(raw, Some(id)),
        ("PUT", ["network-interfaces", id]) => put_device::<NetConfig>(raw, Some(id)),
        ("PUT", ["entropy"]) => put_device::<EntropyConfig>(raw, None),
        ("PUT", ["vsock"]) => put_device::<VsockConfig>(raw, None),

        ("PATCH", ["drives", id]) => {
            let patch: PartialDrive = body(raw)?;
            same_id(id, &patch.drive_id)?;
            Ok(ApiRequest::PatchDrive {
                id: patch.drive_id,
                path: patch.path_on_host,
                rate_limiter: patch.rate_limiter,
            })
        }
        (_, ["drives", _]) => Err(method_not_allowed(method, path, "PUT or PATCH")),
        ("PUT", ["drives", id, "snapshot"]) => {
            let snap: SnapshotBody = body(raw)?;
            crate::storage::check_name("snapshot", &snap.snapshot_name)
                .map_err(|e| bad(e.to_string()))?;
            Ok(ApiRequest::SnapshotDrive {
                id: id.to_string(),
                name: snap.snapshot_name,
            })
        }
        (_, ["drives", _, "snapshot"]) => Err(method_not_allowed(method, path, "PUT")),

        ("PATCH", ["network-interfaces", id]) => {
            let patch: PartialNet = body(raw)?;
            same_id(id, &patch.iface_id)?;
            Ok(ApiRequest::PatchNetworkInterface {
                id: patch.iface_id,
                rx_rate_limiter: patch.rx_rate_limiter,
                tx_rate_limiter: patch.tx_rate_limiter,
            })
        }
        (_, ["network-interfaces", _]) => Err(method_not_allowed(method, path, "PUT or PATCH")),

        ("PUT", ["actions"]) => {
            let action: ActionBody = body(raw)?;
            let timeout_allowed = action.action_type == "Shutdown";
            if action.timeout_ms.is_some() && !timeout_allowed {
                return Err(bad(format!(
                    "timeout_ms applies only to Shutdown, not {}",
                    action.action_type
                )));
            }
            match action.action_type.as_str() {
                "InstanceStart" => Ok(ApiRequest::InstanceStart),
                "SendCtrlAltDel" => Ok(ApiRequest::SendCtrlAltDel),
                "Stop" => Ok(ApiRequest::Stop),
                "Shutdown" => {
                    let timeout = action
                        .timeout_ms
                        .map_or(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_millis);
                    if timeout > MAX_SHUTDOWN_TIMEOUT {
                        return Err(bad(format!(
                            "timeout_ms {} is more than the {} a Shutdown may wait",
                            timeout.as_millis(),
                            MAX_SHUTDOWN_TIMEOUT.as_millis()
                        )));
                    }
                    Ok(ApiRequest::Shutdown { timeout })
                }
                "FlushMetrics" => Ok(ApiRequest::FlushMetrics),
                other => Err(bad(format!(
                    "Unknown action_type {other:?}: use InstanceStart, SendCtrlAltDel, \
                     FlushMetrics, Shutdown or Stop"
                ))),
            }
        }
        (_, ["actions"]) => Err(method_not_allowed(method, path, "PUT")),

        ("PATCH", ["vm"]) => {
            let state: VmStateBody = body(raw)?;
            match state.state.as_str() {
                "Paused" => Ok(ApiRequest::Pause),
                "Resumed" => Ok(ApiRequest::Resume),
                other => Err(bad(format!(
                    "Unknown VM state {other:?}: use \"Paused\" or \"Resumed\""
                ))),
            }
        }
        (_, ["vm"]) => Err(method_not_allowed(method, path, "PATCH")),

        ("GET", ["vm", "config"]) => Ok(ApiRequest::GetVmConfig),
        (_, ["vm", "config"]) => Err(method_not_allowed(method, path, "GET")),

        ("GET", ["status"]) => Ok(ApiRequest::GetStatus),
        ("GET", ["metrics"]) => Ok(ApiRequest::GetMetrics),
        ("PUT", ["logger"]) => Ok(ApiRequest::PutLogger(body(raw)?)),
        (_, ["logger"]) => Err(method_not_allowed(method, path, "PUT")),
        ("PUT", ["metrics"]) => {
            let metrics: MetricsBody = body(raw)?;
            Ok(ApiRequest::PutMetrics(metrics.metrics_path))
        }
        (_, ["metrics"]) => Err(method_not_allowed(method, path, "GET or PUT")),
        (_, ["status"]) => Err(method_not_allowed(method, path, "GET")),

        ("PUT", ["snapshot", "create"]) => {
            let create: SnapshotCreate = body(raw)?;
            match create.snapshot_type.as_deref() {
                None | Some("Full") => Ok(ApiRequest::CreateSnapshot {
                    snapshot_path: create.snapshot_path,
                    mem_file_path: create.mem_file_path,
                }),
                Some("Diff") => Err(bad(
                    "snapshot_type Diff: fennec takes full snapshots only".into()
                )),
                Some(other) => Err(bad(format!(
                    "Unknown snapshot_type {other:?}: use \"Full\""
                ))),
            }
        }
        ("PUT", ["snapshot", "load"]) => snapshot_load(raw),
        ("PUT", ["checkpoint"]) => {
            let c: CheckpointBody = body(raw)?;
            crate::storage::check_name("checkpoint", &c.checkpoint_name)
                .map_err(|e| bad(e.to_string()))?;
            Ok(ApiRequest::Checkpoint(c.checkpoint_name))
        }
        (_, ["checkpoint"]) => Err(method_not_allowed(method, path, "PUT")),
        (_, ["snapshot", "create" | "load"]) => Err(method_not_allowed(method, path, "PUT")),

        (_, ["entropy"]) => Err(method_not_allowed(method, path, "PUT")),
        (_, ["vsock"]) => Err(method_not_allowed(method, path, "PUT")),

        ("PUT", ["mmds"]) => Ok(ApiRequest::Mmds(MmdsRequest::Put(json(raw)?))),
        ("PATCH", ["mmds"]) => Ok(ApiRequest::Mmds(MmdsRequest::Patch(json(raw)?))),
        ("GET", ["mmds"]) => Ok(ApiRequest::Mmds(MmdsRequest::Get)),
        (_, ["mmds"]) => Err(method_not_allowed(method, path, "GET, PUT or PATCH")),
        ("PUT", ["mmds", "config"]) => Ok(ApiRequest::Mmds(MmdsRequest::PutConfig(body(raw)?))),
        (_, ["mmds", "config"]) => Err(method_not_allowed(method, path, "PUT")),

        (_, [first, ..]) if FIRECRACKER_ONLY.contains(first) => Err(bad(format!(
            "{method} {path} is a Firecracker operation fennec does not implement"
        ))),
        _ => Err(ApiError {
            status: 404,
            message: format!("No such path: {method} {path}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, path: &str, body: &str) -> u16 {
        route(method, path, body.as_bytes()).unwrap_err().status
    }

    #[test]
    fn test_route_firecracker_getting_started_sequence() {
        let boot = r#"{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}"#;
        assert!(matches!(
            route("PUT", "/boot-source", boot.as_bytes()),
            Ok(ApiRequest::PutBootSource(_))
        ));
        let drive = r#"{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true,
                        "is_read_only": false}"#;
        assert!(matches!(
            route("PUT", "/drives/rootfs", drive.as_bytes()),
            Ok(ApiRequest::PutDevice(DeviceConfig::Drive(_)))
        ));
        let start = r#"{"action_type": "InstanceStart"}"#;
        assert_eq!(
            route("PUT", "/actions", start.as_bytes()),
            Ok(ApiRequest::InstanceStart)
        );
    }

    #[test]
    fn test_route_template_drives_and_snapshots() {
        let drive = r#"{"drive_id": "root", "template": "debian", "store": "zfs:tank/fennec",
                        "vm_name": "web1", "is_root_device": true}"#;
        match route("PUT", "/drives/root", drive.as_bytes()) {
            Ok(ApiRequest::PutDevice(DeviceConfig::Drive(d))) => {
                let t = d.template().expect("a template drive");
                assert_eq!(t.template, "debian");
                assert_eq!(t.vm_name.as_deref(), Some("web1"));
                assert_eq!(d.image_path(), None);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"drive_id": "root", "template": "debian", "path_on_host": "/x"}"#,
            r#"{"drive_id": "root", "template": "../etc"}"#,
            r#"{"drive_id": "root", "template": "t", "vm_name": "a/b"}"#,
            r#"{"drive_id": "root"}"#,
        ] {
            let e = route("PUT", "/drives/root", bad.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{bad}: {}", e.message);
        }
        assert_eq!(
            route(
                "PUT",
                "/drives/root/snapshot",
                br#"{"snapshot_name": "s1"}"#
            ),
            Ok(ApiRequest::SnapshotDrive {
                id: "root".into(),
                name: "s1".into()
            })
        );
        for bad in [
            r#"{"snapshot_name": "../s"}"#,
            r#"{"snapshot_name": "-f"}"#,
            "{}",
        ] {
            let e = route("PUT", "/drives/root/snapshot", bad.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
        let e = route("GET", "/drives/root/snapshot", b"").unwrap_err();
        assert_eq!(e.status, 405);
    }

    #[test]
    fn test_route_network_hosts_and_snapshot_overrides() {
        let bridge = br#"{"iface_id": "eth0", "bridge": "vmbr0"}"#;
        match route("PUT", "/network-interfaces/eth0", bridge) {
            Ok(ApiRequest::PutDevice(DeviceConfig::Net(n))) => {
                assert_eq!(n.host(), crate::config::NetHost::Bridge("vmbr0"))
            }
            other => panic!("{other:?}"),
        }
        let load = |over: &str| {
            let body = format!(
                r#"{{"snapshot_path": "/s", "mem_backend": {{"backend_type": "File",
                    "backend_path": "/m"}}, "network_overrides": [{over}]}}"#
            );
            route("PUT", "/snapshot/load", body.as_bytes())
        };
        match load(r#"{"iface_id": "eth0", "user": {}}"#) {
            Ok(ApiRequest::LoadSnapshot(l)) => assert!(matches!(
                l.network_overrides[0].host.host(),
                crate::config::NetHost::User(_)
            )),
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"iface_id": "eth0"}"#,
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "user": {}}"#,
        ] {
            assert_eq!(load(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn test_route_drive_id_mismatch_is_400() {
        let drive = r#"{"drive_id": "a", "path_on_host": "/r", "is_root_device": false}"#;
        assert_eq!(status("PUT", "/drives/b", drive), 400);
    }

    #[test]
    fn test_route_pause_resume_and_bad_state() {
        assert_eq!(
            route("PATCH", "/vm", br#"{"state": "Paused"}"#),
            Ok(ApiRequest::Pause)
        );
        assert_eq!(
            route("PATCH", "/vm", br#"{"state": "Resumed"}"#),
            Ok(ApiRequest::Resume)
        );
        assert_eq!(status("PATCH", "/vm", r#"{"state": "Asleep"}"#), 400);
    }

    #[test]
    fn test_route_shutdown_timeout_and_default() {
        assert_eq!(
            route(
                "PUT",
                "/actions",
                br#"{"action_type": "Shutdown", "timeout_ms": 250}"#
            ),
            Ok(ApiRequest::Shutdown {
                timeout: Duration::from_millis(250)
            })
        );
        assert_eq!(
            route("PUT", "/actions", br#"{"action_type": "Shutdown"}"#),
            Ok(ApiRequest::Shutdown {
                timeout: DEFAULT_SHUTDOWN_TIMEOUT
            })
        );
        let longest = format!(
            r#"{{"action_type": "Shutdown", "timeout_ms": {}}}"#,
            MAX_SHUTDOWN_TIMEOUT.as_millis()
        );
        assert_eq!(
            route("PUT", "/actions", longest.as_bytes()),
            Ok(ApiRequest::Shutdown {
                timeout: MAX_SHUTDOWN_TIMEOUT
            })
        );
        let too_long = r#"{"action_type": "Shutdown", "timeout_ms": 18446744073709551615}"#;
        assert_eq!(status("PUT", "/actions", too_long), 400);
        assert_eq!(
            status(
                "PUT",
                "/actions",
                r#"{"action_type": "Stop", "timeout_ms": 1}"#
            ),
            400
        );
    }

    #[test]
    fn test_route_bad_bodies_are_400() {
        assert_eq!(status("PUT", "/actions", ""), 400);
        assert_eq!(status("PUT", "/actions", "{"), 400);
        assert_eq!(status("PUT", "/actions", r#"{"action_type": 7}"#), 400);
        assert_eq!(
            status("PUT", "/actions", r#"{"action": "InstanceStart"}"#),
            400
        );
        assert_eq!(
            status("PUT", "/machine-config", r#"{"vcpu_count": 1}"#),
            400
        );
        assert_eq!(status("PUT", "/boot-source", "[1, 2]"), 400);
    }

    #[test]
    fn test_route_unknown_path_404_wrong_method_405_firecracker_only_400() {
        assert_eq!(status("GET", "/nope", ""), 404);
        assert_eq!(status("GET", "/drives/x/y", ""), 404);
        assert_eq!(status("DELETE", "/actions", ""), 405);
        assert_eq!(status("POST", "/", ""), 405);
        assert_eq!(status("PUT", "/balloon", "{}"), 400);
        assert_eq!(status("PUT", "/snapshot/create", "{}"), 400);
        assert_eq!(status("PUT", "/snapshot/fork", "{}"), 404);
    }

    #[test]
    fn test_route_mmds_bodies_and_methods() {
        assert_eq!(
            route("PUT", "/mmds", br#"{"a": {"b": "c"}}"#),
            Ok(ApiRequest::Mmds(MmdsRequest::Put(
                serde_json::json!({"a": {"b": "c"}})
            )))
        );
        assert_eq!(
            route("PATCH", "/mmds", br#"{"a": null}"#),
            Ok(ApiRequest::Mmds(MmdsRequest::Patch(
                serde_json::json!({"a": null})
            )))
        );
        assert_eq!(
            route("GET", "/mmds", b""),
            Ok(ApiRequest::Mmds(MmdsRequest::Get))
        );
        let config = br#"{"version": "V2", "network_interfaces": ["eth0"]}"#;
        assert!(matches!(
            route("PUT", "/mmds/config", config),
            Ok(ApiRequest::Mmds(MmdsRequest::PutConfig(c))) if c.network_interfaces == ["eth0"]
        ));
        assert_eq!(status("PUT", "/mmds", "{"), 400);
        assert_eq!(status("PUT", "/mmds/config", r#"{"version": "V9"}"#), 400);
        assert_eq!(status("DELETE", "/mmds", ""), 405);
        assert!(matches!(
            route("PUT", "/entropy", br#"{"rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}"#),
            Ok(ApiRequest::PutDevice(DeviceConfig::Entropy(e))) if e.rate_limiter.is_some()
        ));
        assert_eq!(status("PUT", "/entropy", r#"{"rate": 1}"#), 400);
        assert_eq!(status("GET", "/entropy", ""), 405);
        assert_eq!(status("GET", "/mmds/config", ""), 405);
    }

    proptest::proptest! {
        /// What `fuzz/fuzz_targets/api_request.rs` checks, on stable: no request panics the
        /// router, and every refusal is a 4xx with a message.
        #[test]
        fn test_route_arbitrary_requests_never_panic(
            method in proptest::sample::select(vec!["GET", "PUT", "PATCH", "POST", "DELETE"]),
            path in "(/[a-z-]{0,16}){0,3}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            if let Err(e) = route(method, &path, &body) {
                proptest::prop_assert!((400..500).contains(&e.status) && !e.message.is_empty());
            }
        }
    }

    #[test]
    fn test_route_ignores_query_and_trailing_slash() {
        assert_eq!(
            route("GET", "/machine-config/?x=1", b""),
            Ok(ApiRequest::GetMachineConfig)
        );
    }
}
