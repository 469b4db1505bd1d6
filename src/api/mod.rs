//! The control socket: HTTP/1.1 + JSON on a Unix socket, following Firecracker's API.
//!
//! - [`http`]: the server. It accepts connections, parses requests with `httparse`, and hands
//!   each one, as an [`ApiRequest`], to whoever serves the VM; then it writes the answer.
//! - [`routes`]: methods, paths and bodies to [`ApiRequest`]s, and nothing else.
//! - [`service`]: the VMM side. [`service::VmService`] owns the configuration being built
//!   and, once started, the [`crate::VmHandle`]; [`service::serve`] runs it until the guest
//!   ends.
//! - [`client`]: the client behind `fennec ctl`.
//!
//! Operations Firecracker has keep its method, path, body, status codes and error shape
//! (`{"fault_message": "..."}`); fennec's extensions are the `Stop` and `Shutdown` actions,
//! `GET /status`, `GET /metrics`, drives cloned from a template and their live snapshots (see `docs/api.md`).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{BootSourceConfig, DeviceConfig, MachineConfig};

/// The Firecracker release whose API and process flags fennec follows: `GET /version` and
/// `firecracker --version` report it, and the `firecracker` persona's metrics lines have its
/// schema. Its endpoints and fields are all served (the newest: `network_overrides` on
/// snapshot load, from 1.12); later releases' additions are not yet (README).
pub const FIRECRACKER_VERSION: &str = "1.12.0";

pub mod client;
pub mod http;
pub mod routes;
pub mod service;
pub mod sinks;

/// `PUT /logger` body: Firecracker's `Logger`. Every field is optional; what is left out keeps
/// its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// A file or FIFO for the log (made if missing, mode 0600).
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// Error, Warning, Info, Debug, Trace or Off.
    #[serde(default)]
    pub level: Option<String>,
    /// The level in each line.
    #[serde(default)]
    pub show_level: Option<bool>,
    /// The source file and line in each line.
    #[serde(default)]
    pub show_log_origin: Option<bool>,
    /// Only this module's records.
    #[serde(default)]
    pub module: Option<String>,
}

/// What a client asks of the VMM.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiRequest {
    /// `GET /`: Firecracker's instance information.
    GetInstanceInfo,
    /// `PUT /logger`: where the log goes and how it reads.
    PutLogger(LoggerConfig),
    /// `PUT /metrics`: a file or FIFO for the VM's metrics, a JSON line at a time (once).
    PutMetrics(PathBuf),
    /// `PUT /actions` `FlushMetrics`: write a metrics line now.
    FlushMetrics,
    /// `GET /version`: the Firecracker API version fennec follows, and fennec's own.
    GetVersion,
    /// `PUT /boot-source`.
    PutBootSource(BootSourceConfig),
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`: the body's fields over the current ones.
    PatchMachineConfig(Value),
    /// `PUT /drives/{id}`, `PUT /network-interfaces/{id}`, `PUT /entropy`: adds or replaces
    /// a device before boot.
    PutDevice(DeviceConfig),
    /// `PATCH /drives/{id}`: after boot, a new image file for the drive.
    PatchDrive {
        /// The drive.
        id: String,
        /// Its new image, if given.
        path: Option<PathBuf>,
        /// Its new rate limits, if given.
        rate_limiter: Option<crate::config::RateLimiterConfig>,
    },
    /// `PATCH /network-interfaces/{id}`: new rate limits for a running VM's interface.
    PatchNetworkInterface {
        /// The interface.
        id: String,
        /// New limits on what the guest receives, if given.
        rx_rate_limiter: Option<crate::config::RateLimiterConfig>,
        /// New limits on what the guest sends, if given.
        tx_rate_limiter: Option<crate::config::RateLimiterConfig>,
    },
    /// `PUT /drives/{id}/snapshot` (extension): a live snapshot of a running VM's drive
    /// cloned from a template: pause, flush, snapshot in its store, resume.
    SnapshotDrive {
        /// The drive.
        id: String,
        /// The snapshot's name.
        name: String,
    },
    /// `PUT /actions` `InstanceStart`.
    InstanceStart,
    /// `PUT /actions` `SendCtrlAltDel`.
    SendCtrlAltDel,
    /// `PUT /actions` `Stop` (extension): stop the VM now and exit.
    Stop,
    /// `PUT /actions` `Shutdown` (extension): the ACPI power button (or Ctrl-Alt-Del for a guest
    /// without ACPI), then stop after `timeout`.
    Shutdown {
        /// How long the guest gets to shut down.
        timeout: Duration,
    },
    /// `PATCH /vm` `{"state": "Paused"}`.
    Pause,
    /// `PATCH /vm` `{"state": "Resumed"}`.
    Resume,
    /// `GET /vm/config`.
    GetVmConfig,
    /// `GET /status` (extension).
    GetStatus,
    /// `GET /metrics` (extension).
    GetMetrics,
    /// The metadata service: `PUT`, `PATCH` and `GET /mmds`, `PUT /mmds/config`.
    Mmds(MmdsRequest),
    /// `PUT /snapshot/create`: the paused VM's state and memory to these files.
    CreateSnapshot {
        /// The state file.
        snapshot_path: PathBuf,
        /// The memory file.
        mem_file_path: PathBuf,
    },
    /// `PUT /snapshot/load`: a VM from a snapshot, instead of configuring one.
    LoadSnapshot(Box<LoadSnapshot>),
    /// `PUT /checkpoint` (extension): the VM and its template disks, snapshotted together.
    Checkpoint(String),
}

/// A restored network interface's new host side, and (extension) its new MAC address.
#[derive(Clone, Debug, PartialEq)]
pub struct NetOverride {
    /// The interface.
    pub iface_id: String,
    /// Its new host side (`tap`, `bridge` or `user`; the rest of it unused).
    pub host: crate::config::NetConfig,
    /// The MAC address its device reports from now on (the guest's driver reads it when it
    /// next probes the device).
    pub guest_mac: Option<crate::MacAddr>,
}

/// `PUT /snapshot/load`: which snapshot, and what changes.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSnapshot {
    /// The state file.
    pub snapshot_path: PathBuf,
    /// The memory file.
    pub mem_file_path: PathBuf,
    /// Run the VM at once (else it waits, paused, for `PATCH /vm Resumed`).
    pub resume_vm: bool,
    /// Network interfaces on other TAPs than the snapshot's.
    pub network_overrides: Vec<NetOverride>,
    /// The vsock device's host socket, if not the snapshot's (`vsock_override`).
    pub vsock_uds_path: Option<PathBuf>,
    /// **Extension**: drives on other images than the snapshot's (a clone's own copy):
    /// (drive_id, path_on_host).
    pub drive_overrides: Vec<(String, PathBuf)>,
}

/// What a client asks of the metadata service.
#[derive(Clone, Debug, PartialEq)]
pub enum MmdsRequest {
    /// `PUT /mmds`: replace the document.
    Put(Value),
    /// `PATCH /mmds`: merge into the document (RFC 7396).
    Patch(Value),
    /// `GET /mmds`: the document.
    Get,
    /// `PUT /mmds/config`: which interfaces reach the service, where, V1 or V2 (before boot).
    PutConfig(crate::mmds::MmdsConfig),
}

/// A request for the VM's thread, and where its answer goes.
pub struct ApiCall {
    /// What the client asks.
    pub request: ApiRequest,
    /// Where to send the answer.
    pub reply: mpsc::Sender<Result<ApiResponse, ApiError>>,
}

/// What the serving loop reacts to.
pub enum Event {
    /// A request from the control socket (boxed: a whole device's configuration is large
    /// beside the other events).
    Call(Box<ApiCall>),
    /// The guest ended.
    Exited,
    /// The process was asked to stop (SIGTERM, SIGINT, SIGHUP) or to describe the VM
    /// (SIGUSR1).
    Signal(i32),
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiResponse {
    /// 204 No Content.
    Empty,
    /// 200 with a JSON body.
    Json(Value),
}

/// A failed request: an HTTP status and the `fault_message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// 400 Bad Request: the request cannot be honoured (Firecracker's answer for almost
    /// everything, including operations in the wrong state).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    /// The `{"fault_message": "..."}` body.
    pub fn body(&self) -> Value {
        serde_json::json!({ "fault_message": self.message })
    }
}

/// A refused body is the client's mistake: 400, with what was wrong.
impl From<crate::config::json::BodyError> for ApiError {
    fn from(e: crate::config::json::BodyError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}
