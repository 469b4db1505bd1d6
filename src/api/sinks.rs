//! Where Firecracker's process sends its log and metrics: files or FIFOs opened as it opens
//! them, and the metrics line it writes.

mod firecracker;

use serde_json::{json, Map, Value};

use crate::VmHandle;
pub use firecracker::{count_api_request, record_latency, FirecrackerLines, Timed};

/// What serves `PUT /logger`: applies the configuration, or says why not.
pub type LoggerHook = Box<dyn Fn(&crate::api::LoggerConfig) -> Result<(), String> + Send>;

/// Opens a log or metrics file or FIFO as Firecracker does: made if missing (mode 0600); read
/// and write, so a FIFO without a reader yet does not block; non-blocking, so a stalled reader
/// never stops the VMM.
pub fn open_sink(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Whose shape a metrics line has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricsFormat {
    /// fennec's: `utc_timestamp_ms` and every counter of [`VmHandle::metrics`], as totals.
    #[default]
    Fennec,
    /// Firecracker's schema, for fennec as `firecracker` (see [`FirecrackerLines`]).
    Firecracker,
}

/// A file or FIFO the VM's metrics go to, one JSON object a line, in a [`MetricsFormat`].
/// Written without blocking: a line a stalled reader cannot take is dropped and logged.
pub struct MetricsSink {
    file: std::fs::File,
    /// `Some` for Firecracker's lines.
    firecracker: Option<FirecrackerLines>,
}

impl MetricsSink {
    /// Writes fennec's lines to `file` (opened non-blocking).
    pub fn new(file: std::fs::File) -> Self {
        Self::with_format(file, MetricsFormat::Fennec)
    }

    /// Writes lines of `format` to `file` (opened non-blocking).
    pub fn with_format(file: std::fs::File, format: MetricsFormat) -> Self {
        let firecracker = (format == MetricsFormat::Firecracker).then(FirecrackerLines::default);
        MetricsSink { file, firecracker }
    }

    /// Writes one line of `handle`'s metrics (before the VM starts: only the time and state
    /// in fennec's lines, every counter 0 in Firecracker's).
    pub fn write(&mut self, handle: Option<&VmHandle>) {
        use std::io::Write;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut line = Map::new();
        line.insert("utc_timestamp_ms".into(), json!(now));
        let metrics = handle.map(VmHandle::metrics);
        let counters = match self.firecracker.as_mut() {
            Some(lines) => lines.line(metrics.as_ref()),
            None => match metrics.map_or(json!({"state": "Not started"}), |m| {
                serde_json::to_value(m).unwrap_or(Value::Null)
            }) {
                Value::Object(map) => map,
                _ => return,
            },
        };
        line.extend(counters);
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            log::warn!("Metrics line dropped: {e}");
        }
    }
}
