//! The metrics line of fennec as `firecracker`: Firecracker's schema (the release named by
//! [`crate::api::FIRECRACKER_VERSION`]), so dashboards and tools built on Firecracker's metrics
//! read fennec's unchanged.
//!
//! Every group and counter Firecracker writes is there, in its order. fennec's own counters fill
//! the ones they correspond to (the control socket's requests, how long the last pause,
//! resume, snapshot and restore took, a vCPU's exits, the serial console, each drive, network
//! interface, entropy and vsock device); the others stay 0. As Firecracker does, a counter is written
//! as what it gained since the line before (and a latency as `min_us`, `max_us`, `sum_us`), a
//! drive's and an interface's counters appear under `block_ID` and `net_ID` and summed under
//! `block` and `net`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::config::{BlockConfig, EntropyConfig, NetConfig, VirtioDeviceConfig, VsockConfig};
use crate::VmMetrics;

/// The counters of one of Firecracker's drives.
const BLOCK: &[&str] = &[
    "activate_fails",
    "cfg_fails",
    "no_avail_buffer",
    "event_fails",
    "execute_fails",
    "invalid_reqs_count",
    "flush_count",
    "queue_event_count",
    "rate_limiter_event_count",
    "update_count",
    "update_fails",
    "read_bytes",
    "write_bytes",
    "read_count",
    "write_count",
    "read_agg",
    "write_agg",
    "rate_limiter_throttled_events",
    "io_engine_throttled_events",
    "remaining_reqs_count",
];

/// The counters of one of Firecracker's network interfaces.
const NET: &[&str] = &[
    "activate_fails",
    "cfg_fails",
    "mac_address_updates",
    "no_rx_avail_buffer",
    "no_tx_avail_buffer",
    "event_fails",
    "rx_queue_event_count",
    "rx_event_rate_limiter_count",
    "rx_partial_writes",
    "rx_rate_limiter_throttled",
    "rx_tap_event_count",
    "rx_bytes_count",
    "rx_packets_count",
    "rx_fails",
    "rx_count",
    "tap_read_fails",
    "tap_write_fails",
    "tap_write_agg",
    "tx_bytes_count",
    "tx_malformed_frames",
    "tx_fails",
    "tx_count",
    "tx_packets_count",
    "tx_partial_reads",
    "tx_queue_event_count",
    "tx_rate_limiter_event_count",
    "tx_rate_limiter_throttled",
    "tx_spoofed_mac_count",
    "tx_remaining_reqs_count",
];

/// One entry of the line: a group of counters, or the groups of a kind of device.
enum Group {
    /// A group of the VMM's own.
    Fixed(&'static str, &'static [&'static str]),
    /// `NAME_ID` for each device of the kind, then `NAME` with their sums.
    PerDevice(&'static str, &'static [&'static str]),
}

/// Firecracker's metrics line, group by group in its order.
const SCHEMA: &[Group] = &[
    Group::Fixed(
        "api_server",
        &[
            "process_startup_time_us",
            "process_startup_time_cpu_us",
            "sync_response_fails",
            "sync_vmm_send_timeout_count",
        ],
    ),
    Group::Fixed(
        "balloon",
        &[
            "activate_fails",
            "inflate_count",
            "stats_updates_count",
            "stats_update_fails",
            "deflate_count",
            "event_fails",
        ],
    ),
    Group::PerDevice("block", BLOCK),
    Group::Fixed(
        "deprecated_api",
        &["deprecated_http_api_calls", "deprecated_cmd_line_api_calls"],
    ),
    Group::Fixed(
        "get_api_requests",
        &[
            "instance_info_count",
            "machine_cfg_count",
            "mmds_count",
            "vmm_version_count",
        ],
    ),
    Group::Fixed(
        "i8042",
        &[
            "error_count",
            "missed_read_count",
            "missed_write_count",
            "read_count",
            "reset_count",
            "write_count",
        ],
    ),
    Group::Fixed(
        "uart",
        &[
            "error_count",
            "flush_count",
            "missed_read_count",
            "missed_write_count",
            "read_count",
            "write_count",
        ],
    ),
    Group::Fixed(
        "latencies_us",
        &[
            "full_create_snapshot",
            "diff_create_snapshot",
            "load_snapshot",
            "pause_vm",
            "resume_vm",
            "vmm_full_create_snapshot",
            "vmm_diff_create_snapshot",
            "vmm_load_snapshot",
            "vmm_pause_vm",
            "vmm_resume_vm",
        ],
    ),
    Group::Fixed(
        "logger",
        &[
            "missed_metrics_count",
            "metrics_fails",
            "missed_log_count",
            "log_fails",
        ],
    ),
    Group::Fixed(
        "mmds",
        &[
            "rx_accepted",
            "rx_accepted_err",
            "rx_accepted_unusual",
            "rx_bad_eth",
            "rx_count",
            "tx_bytes",
            "tx_count",
            "tx_errors",
            "tx_frames",
            "connections_created",
            "connections_destroyed",
        ],
    ),
    Group::PerDevice("net", NET),
    Group::Fixed(
        "patch_api_requests",
        &[
            "drive_count",
            "drive_fails",
            "network_count",
            "network_fails",
            "machine_cfg_count",
            "machine_cfg_fails",
            "mmds_count",
            "mmds_fails",
        ],
    ),
    Group::Fixed(
        "put_api_requests",
        &[
            "actions_count",
            "actions_fails",
            "boot_source_count",
            "boot_source_fails",
            "drive_count",
            "drive_fails",
            "logger_count",
            "logger_fails",
            "machine_cfg_count",
            "machine_cfg_fails",
            "cpu_cfg_count",
            "cpu_cfg_fails",
            "metrics_count",
            "metrics_fails",
            "network_count",
            "network_fails",
            "mmds_count",
            "mmds_fails",
            "vsock_count",
            "vsock_fails",
        ],
    ),
    Group::Fixed("seccomp", &["num_faults"]),
    Group::Fixed(
        "vcpu",
        &[
            "exit_io_in",
            "exit_io_out",
            "exit_mmio_read",
            "exit_mmio_write",
            "failures",
            "kvmclock_ctrl_fails",
            "exit_io_in_agg",
            "exit_io_out_agg",
            "exit_mmio_read_agg",
            "exit_mmio_write_agg",
        ],
    ),
    Group::Fixed("vmm", &["device_events", "panic_count"]),
    Group::Fixed(
        "signals",
        &[
            "sigbus", "sigsegv", "sigxfsz", "sigxcpu", "sigpipe", "sighup", "sigill",
        ],
    ),
    Group::Fixed(
        "vsock",
        &[
            "activate_fails",
            "cfg_fails",
            "rx_queue_event_fails",
            "tx_queue_event_fails",
            "ev_queue_event_fails",
            "muxer_event_fails",
            "conn_event_fails",
            "rx_queue_event_count",
            "tx_queue_event_count",
            "rx_bytes_count",
            "tx_bytes_count",
            "rx_packets_count",
            "tx_packets_count",
            "conns_added",
            "conns_killed",
            "conns_removed",
            "killq_resync",
            "tx_flush_fails",
            "tx_write_fails",
            "rx_read_fails",
        ],
    ),
    Group::Fixed(
        "entropy",
        &[
            "activate_fails",
            "entropy_event_fails",
            "entropy_event_count",
            "entropy_bytes",
            "host_rng_fails",
            "entropy_rate_limiter_throttled",
            "rate_limiter_event_count",
        ],
    ),
];

/// Which of fennec's counters make up one of Firecracker's: (Firecracker's, fennec's summed).
type Mapping = &'static [(&'static str, &'static [&'static str])];

/// A vCPU's exits.
const VCPU_MAP: Mapping = &[
    ("exit_io_in", &["io_in"]),
    ("exit_io_out", &["io_out"]),
    ("exit_mmio_read", &["mmio_read"]),
    ("exit_mmio_write", &["mmio_write"]),
];

/// The serial console (one write or read of its data register is one byte).
const UART_MAP: Mapping = &[
    ("write_count", &["bytes_out"]),
    ("read_count", &["bytes_in"]),
    ("missed_write_count", &["bytes_lost"]),
];

/// A drive.
const BLOCK_MAP: Mapping = &[
    ("read_count", &["read_count"]),
    ("read_bytes", &["read_bytes"]),
    ("write_count", &["write_count"]),
    ("write_bytes", &["write_bytes"]),
    ("flush_count", &["flush_count"]),
    (
        "invalid_reqs_count",
        &["invalid_requests", "unsupported_requests"],
    ),
    ("execute_fails", &["io_errors"]),
    ("queue_event_count", &["notifications"]),
    ("rate_limiter_throttled_events", &["rate_limited"]),
];

/// A network interface.
const NET_MAP: Mapping = &[
    ("rx_bytes_count", &["rx_bytes"]),
    ("rx_packets_count", &["rx_packets"]),
    ("rx_count", &["rx_packets"]),
    ("rx_fails", &["rx_errors"]),
    ("no_rx_avail_buffer", &["rx_buffer_waits"]),
    ("rx_queue_event_count", &["rx_notifications"]),
    ("rx_rate_limiter_throttled", &["rx_rate_limited"]),
    ("tx_bytes_count", &["tx_bytes"]),
    ("tx_packets_count", &["tx_packets"]),
    ("tx_count", &["tx_packets"]),
    ("tx_fails", &["tx_errors"]),
    ("tx_malformed_frames", &["bad_chains"]),
    ("tx_queue_event_count", &["tx_notifications"]),
    ("tx_rate_limiter_throttled", &["tx_rate_limited"]),
];

/// The entropy device.
const ENTROPY_MAP: Mapping = &[
    ("entropy_event_count", &["notifications"]),
    ("entropy_bytes", &["bytes"]),
    ("host_rng_fails", &["errors"]),
    ("entropy_rate_limiter_throttled", &["rate_limited"]),
];

/// The vsock device.
const VSOCK_MAP: Mapping = &[
    ("rx_queue_event_count", &["notifications"]),
    ("rx_bytes_count", &["rx_bytes"]),
    ("tx_bytes_count", &["tx_bytes"]),
    ("rx_packets_count", &["rx_packets"]),
    ("tx_packets_count", &["tx_packets"]),
    ("conns_added", &["conns_added"]),
    ("conns_killed", &["conns_killed"]),
];

/// Counters by group, then by name: what fennec has to say, as totals since the VM started.
type Totals = BTreeMap<String, BTreeMap<&'static str, u64>>;

/// The control socket's requests, counted as Firecracker counts them: by group and counter
/// (`put_api_requests.drive_count`, `..._fails`). One per process, as Firecracker's own.
static API_REQUESTS: Mutex<BTreeMap<(&str, &str), u64>> = Mutex::new(BTreeMap::new());

/// The last duration of each operation Firecracker times (`latencies_us`), in microseconds.
static LATENCIES: Mutex<BTreeMap<&str, u64>> = Mutex::new(BTreeMap::new());

/// The operations Firecracker times, as `record_latency` takes them.
#[derive(Clone, Copy, Debug)]
pub enum Timed {
    /// `PATCH /vm` Paused.
    Pause,
    /// `PATCH /vm` Resumed.
    Resume,
    /// `PUT /snapshot/create` (a full snapshot).
    CreateSnapshot,
    /// `PUT /snapshot/load`.
    LoadSnapshot,
}

/// Records how long `what` took: `total` from the request's start to its answer, `vmm` the
/// VMM's part of it (Firecracker's `vmm_` latencies). Written as the last value, not summed.
pub fn record_latency(what: Timed, total: std::time::Duration, vmm: std::time::Duration) {
    let (api, in_vmm) = match what {
        Timed::Pause => ("pause_vm", "vmm_pause_vm"),
        Timed::Resume => ("resume_vm", "vmm_resume_vm"),
        Timed::CreateSnapshot => ("full_create_snapshot", "vmm_full_create_snapshot"),
        Timed::LoadSnapshot => ("load_snapshot", "vmm_load_snapshot"),
    };
    let mut latencies = fennec_devices::lock(&LATENCIES);
    latencies.insert(api, total.as_micros() as u64);
    latencies.insert(in_vmm, vmm.as_micros() as u64);
}

/// Firecracker's group and counter stem for a request, if it counts that one.
fn api_counter(method: &str, path: &str) -> Option<(&'static str, &'static str)> {
    let path = path.split('?').next().unwrap_or_default();
    let first = path.trim_matches('/').split('/').next().unwrap_or_default();
    let stem = match first {
        "" => "instance_info",
        "actions" => "actions",
        "boot-source" => "boot_source",
        "drives" => "drive",
        "logger" => "logger",
        "machine-config" => "machine_cfg",
        "cpu-config" => "cpu_cfg",
        "metrics" => "metrics",
        "network-interfaces" => "network",
        "mmds" => "mmds",
        "vsock" => "vsock",
        "version" => "vmm_version",
        _ => return None,
    };
    let group = match method {
        "GET" => "get_api_requests",
        "PUT" => "put_api_requests",
        "PATCH" => "patch_api_requests",
        _ => return None,
    };
    Some((group, stem))
}

/// Counts a control-socket request and whether it failed, for Firecracker's
/// `get_api_requests`, `put_api_requests` and `patch_api_requests` (only the counters its
/// schema has are written).
pub fn count_api_request(method: &str, path: &str, failed: bool) {
    let Some((group, stem)) = api_counter(method, path) else {
        return;
    };
    let count = format!("{stem}_count");
    let fails = format!("{stem}_fails");
    let mut counters = fennec_devices::lock(&API_REQUESTS);
    for (name, counts) in [(count, true), (fails, failed)] {
        let known = SCHEMA.iter().find_map(|g| match g {
            Group::Fixed(n, names) if *n == group => names.iter().find(|c| **c == name),
            _ => None,
        });
        if let (Some(name), true) = (known, counts) {
            *counters.entry((group, *name)).or_default() += 1;
        }
    }
}

/// Adds `counters`' values (a JSON object of fennec's counters) to `group` by `mapping`.
fn add(totals: &mut Totals, group: &str, mapping: Mapping, counters: &Value) {
    let group = totals.entry(group.to_string()).or_default();
    for (name, sources) in mapping {
        let sum: u64 = sources
            .iter()
            .filter_map(|s| counters.get(*s).and_then(Value::as_u64))
            .fold(0, u64::saturating_add);
        let total = group.entry(name).or_default();
        *total = total.saturating_add(sum);
    }
}

/// fennec's counters, by Firecracker's groups and names: the control socket's requests, and
/// the VM's once it runs.
fn totals(metrics: Option<&VmMetrics>) -> Totals {
    let mut totals = Totals::new();
    for ((group, name), n) in fennec_devices::lock(&API_REQUESTS).iter() {
        *totals
            .entry(group.to_string())
            .or_default()
            .entry(name)
            .or_default() += n;
    }
    let latencies = totals.entry("latencies_us".to_string()).or_default();
    for (name, us) in fennec_devices::lock(&LATENCIES).iter() {
        latencies.insert(name, *us);
    }
    let Some(metrics) = metrics else {
        return totals;
    };
    for vcpu in &metrics.vcpus {
        add(&mut totals, "vcpu", VCPU_MAP, vcpu);
    }
    add(&mut totals, "uart", UART_MAP, &metrics.serial);
    for (id, device) in &metrics.devices {
        let (group, mapping) = match device.kind {
            BlockConfig::KIND => ("block", BLOCK_MAP),
            NetConfig::KIND => ("net", NET_MAP),
            EntropyConfig::KIND => ("entropy", ENTROPY_MAP),
            VsockConfig::KIND => ("vsock", VSOCK_MAP),
            _ => continue,
        };
        if group == "entropy" || group == "vsock" {
            add(&mut totals, group, mapping, &device.counters);
        } else {
            add(
                &mut totals,
                &format!("{group}_{id}"),
                mapping,
                &device.counters,
            );
            add(&mut totals, group, mapping, &device.counters);
        }
    }
    totals
}

/// Writes Firecracker's metrics lines: each counter as what it gained since the line before.
#[derive(Debug, Default)]
pub struct FirecrackerLines {
    /// What each counter (`group.name`) stood at in the last line.
    written: HashMap<String, u64>,
}

impl FirecrackerLines {
    /// The next line's object (without its time), from `metrics` (`None` before the VM
    /// starts: every counter 0).
    pub fn line(&mut self, metrics: Option<&VmMetrics>) -> Map<String, Value> {
        let totals = totals(metrics);
        let mut line = Map::new();
        for group in SCHEMA {
            match group {
                Group::Fixed(name, counters) => {
                    let value = self.group(name, counters, &totals);
                    line.insert(name.to_string(), value);
                }
                Group::PerDevice(kind, counters) => {
                    let prefix = format!("{kind}_");
                    let devices = totals.keys().filter(|g| g.starts_with(&prefix));
                    for device in devices {
                        let value = self.group(device, counters, &totals);
                        line.insert(device.clone(), value);
                    }
                    line.insert(kind.to_string(), self.group(kind, counters, &totals));
                }
            }
        }
        line
    }

    /// Group `name`'s object: each of `counters` by what it gained since the last line, the
    /// last durations (`latencies_us`) as they are, and the aggregates of latencies (`_agg`)
    /// as Firecracker writes them when it measured none.
    fn group(&mut self, name: &str, counters: &[&'static str], totals: &Totals) -> Value {
        let mut object = Map::new();
        for counter in counters {
            if counter.ends_with("_agg") {
                object.insert(
                    counter.to_string(),
                    json!({"min_us": 0, "max_us": 0, "sum_us": 0}),
                );
                continue;
            }
            let total = totals
                .get(name)
                .and_then(|g| g.get(counter))
                .copied()
                .unwrap_or(0);
            if name == "latencies_us" {
                object.insert(counter.to_string(), json!(total));
                continue;
            }
            let written = self.written.entry(format!("{name}.{counter}")).or_default();
            let gained = total.saturating_sub(*written);
            *written = total;
            object.insert(counter.to_string(), json!(gained));
        }
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::DeviceMetrics;

    fn metrics(read_count: u64, rx_bytes: u64, io_out: u64) -> VmMetrics {
        let mut devices = BTreeMap::new();
        devices.insert(
            "rootfs".to_string(),
            DeviceMetrics {
                kind: BlockConfig::KIND,
                counters: json!({"read_count": read_count, "invalid_requests": 1,
                                 "unsupported_requests": 2}),
            },
        );
        devices.insert(
            "eth0".to_string(),
            DeviceMetrics {
                kind: NetConfig::KIND,
                counters: json!({"rx_bytes": rx_bytes}),
            },
        );
        VmMetrics {
            serial: json!({"bytes_out": 7}),
            vcpus: vec![json!({"io_out": io_out}), json!({"io_out": 1})],
            devices,
            ..VmMetrics::default()
        }
    }

    #[test]
    fn test_firecracker_line_has_every_group_in_order_with_fennecs_counters_mapped() {
        let mut lines = FirecrackerLines::default();
        let line = lines.line(Some(&metrics(5, 100, 3)));
        let keys: Vec<&str> = line.keys().map(String::as_str).collect();
        let expected = [
            "api_server",
            "balloon",
            "block_rootfs",
            "block",
            "deprecated_api",
            "get_api_requests",
            "i8042",
            "uart",
            "latencies_us",
            "logger",
            "mmds",
            "net_eth0",
            "net",
            "patch_api_requests",
            "put_api_requests",
            "seccomp",
            "vcpu",
            "vmm",
            "signals",
            "vsock",
            "entropy",
        ];
        assert_eq!(keys, expected);
        assert_eq!(line["block_rootfs"]["read_count"], 5);
        assert_eq!(line["block_rootfs"]["invalid_reqs_count"], 3);
        assert_eq!(line["block"]["read_count"], 5);
        assert_eq!(line["block"]["write_agg"]["sum_us"], 0);
        assert_eq!(line["net_eth0"]["rx_bytes_count"], 100);
        assert_eq!(line["net"]["tx_spoofed_mac_count"], 0);
        assert_eq!(line["vcpu"]["exit_io_out"], 4, "summed over the vCPUs");
        assert_eq!(line["uart"]["write_count"], 7);
        assert_eq!(line["put_api_requests"]["actions_count"], 0);
        assert_eq!(line["entropy"]["entropy_bytes"], 0);
        assert_eq!(line["block"].as_object().unwrap().len(), BLOCK.len());
        assert_eq!(line["net"].as_object().unwrap().len(), NET.len());
    }

    #[test]
    fn test_firecracker_counters_are_what_they_gained_since_the_last_line() {
        let mut lines = FirecrackerLines::default();
        lines.line(Some(&metrics(5, 100, 3)));
        let line = lines.line(Some(&metrics(8, 100, 10)));
        assert_eq!(line["block_rootfs"]["read_count"], 3);
        assert_eq!(line["block"]["read_count"], 3);
        assert_eq!(line["net_eth0"]["rx_bytes_count"], 0);
        assert_eq!(line["vcpu"]["exit_io_out"], 7);
        assert_eq!(line["uart"]["write_count"], 0);
    }

    #[test]
    fn test_api_requests_are_counted_under_firecrackers_names() {
        assert_eq!(
            api_counter("PUT", "/drives/rootfs"),
            Some(("put_api_requests", "drive"))
        );
        assert_eq!(
            api_counter("PATCH", "/network-interfaces/eth0"),
            Some(("patch_api_requests", "network"))
        );
        assert_eq!(
            api_counter("GET", "/"),
            Some(("get_api_requests", "instance_info"))
        );
        assert_eq!(
            api_counter("GET", "/version?x=1"),
            Some(("get_api_requests", "vmm_version"))
        );
        assert_eq!(api_counter("DELETE", "/drives/x"), None);
        assert_eq!(api_counter("PUT", "/balloon"), None);
        let mut lines = FirecrackerLines::default();
        let before = lines.line(Some(&metrics(0, 0, 0)));
        let drive_fails =
            |line: &Map<String, Value>| line["put_api_requests"]["drive_fails"].clone();
        assert!(drive_fails(&before).is_u64());
        count_api_request("PUT", "/drives/rootfs", true);
        count_api_request("PUT", "/vsock", false);
        let line = lines.line(Some(&metrics(0, 0, 0)));
        // Other tests in this process may count too: at least these.
        assert!(line["put_api_requests"]["drive_count"].as_u64() >= Some(1));
        assert!(drive_fails(&line).as_u64() >= Some(1));
        assert!(line["put_api_requests"]["vsock_count"].as_u64() >= Some(1));
        assert!(line["get_api_requests"].get("vmm_version_fails").is_none());
    }

    #[test]
    fn test_latencies_are_the_last_value_not_a_sum() {
        let mut lines = FirecrackerLines::default();
        let ms = std::time::Duration::from_millis;
        record_latency(Timed::LoadSnapshot, ms(7), ms(5));
        let first = lines.line(None);
        let second = lines.line(None);
        for line in [&first, &second] {
            // Other tests may record too, never this one.
            assert_eq!(line["latencies_us"]["load_snapshot"], 7000);
            assert_eq!(line["latencies_us"]["vmm_load_snapshot"], 5000);
        }
    }

    #[test]
    fn test_firecracker_line_before_the_vm_starts_is_all_zeros() {
        let line = FirecrackerLines::default().line(None);
        assert_eq!(line["vcpu"]["exit_io_in"], 0);
        assert_eq!(line["block"]["read_count"], 0);
        assert!(!line.keys().any(|k| k.starts_with("block_")));
    }
}
