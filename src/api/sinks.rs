//! Where Firecracker's process sends its log and metrics: files or FIFOs opened as it opens
//! them, and the metrics line it writes.

use serde_json::{json, Value};

use crate::VmHandle;

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

/// A file or FIFO the VM's metrics go to, one JSON object a line: `utc_timestamp_ms` and every
/// counter of [`VmHandle::metrics`]. Written without blocking: a line a stalled reader cannot
/// take is dropped and logged.
pub struct MetricsSink(std::fs::File);

impl MetricsSink {
    /// Writes to `file` (opened non-blocking).
    pub fn new(file: std::fs::File) -> Self {
        MetricsSink(file)
    }

    /// Writes one line of `handle`'s metrics (only the time and state before the VM starts).
    pub fn write(&mut self, handle: Option<&VmHandle>) {
        use std::io::Write;
        let metrics = handle.map_or(json!({"state": "Not started"}), |h| {
            serde_json::to_value(h.metrics()).unwrap_or(Value::Null)
        });
        let Value::Object(mut line) = metrics else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        line.insert("utc_timestamp_ms".into(), json!(now));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Err(e) = self.0.write_all(text.as_bytes()) {
            log::warn!("Metrics line dropped: {e}");
        }
    }
}
