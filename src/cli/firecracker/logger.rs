//! Firecracker's logger, for fennec running as `firecracker`: lines `TIMESTAMP [ID:THREAD(:LEVEL)
//! (:FILE:LINE)] MESSAGE` to stderr, or to the file or FIFO that `--log-path` or `PUT /logger`
//! names; configured once, by the flags or by the API, as Firecracker allows.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

use fennec::api::LoggerConfig;

/// What the logger writes and how.
pub struct Settings {
    /// The most verbose level written.
    pub level: LevelFilter,
    /// Only records of modules whose path starts with this.
    pub module: Option<String>,
    /// The level in each line.
    pub show_level: bool,
    /// The source file and line in each line.
    pub show_origin: bool,
}

struct Inner {
    settings: Settings,
    out: Box<dyn Write + Send>,
    /// A `--log-path` or a `PUT /logger` set it: Firecracker takes one of them, once.
    configured: bool,
}

/// The process's logger.
pub struct FcLogger {
    id: String,
    inner: Mutex<Inner>,
}

/// Parses Firecracker's level names.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::Error,
        "warning" | "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => return None,
    })
}

/// Installs the logger for instance `id`, writing to `out` (stderr when `None`).
pub fn install(
    id: &str,
    settings: Settings,
    out: Option<Box<dyn Write + Send>>,
) -> &'static FcLogger {
    let configured = out.is_some();
    let logger: &'static FcLogger = Box::leak(Box::new(FcLogger {
        id: id.to_string(),
        inner: Mutex::new(Inner {
            settings,
            out: out.unwrap_or_else(|| Box::new(std::io::stderr())),
            configured,
        }),
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(LevelFilter::Trace);
    }
    logger
}

impl FcLogger {
    /// `PUT /logger`: a new destination and format, once, and only if `--log-path` did not
    /// configure the logger already.
    pub fn reconfigure(&self, config: &LoggerConfig) -> Result<(), String> {
        let mut inner = fennec_devices::lock(&self.inner);
        if inner.configured {
            return Err(
                "Reinitialization of the logger is not allowed: it is configured \
                        already (by --log-path or an earlier PUT /logger)"
                    .into(),
            );
        }
        let level = match config.level.as_deref() {
            None => inner.settings.level,
            Some(name) => parse_level(name).ok_or_else(|| {
                format!("Invalid value for logger level: {name}. Possible values: [Error, Warning, Info, Debug, Trace, Off]")
            })?,
        };
        if let Some(path) = &config.log_path {
            let file = fennec::api::service::open_sink(path)
                .map_err(|e| format!("Cannot open the log file {}: {e}", path.display()))?;
            inner.out = Box::new(file);
        }
        inner.settings = Settings {
            level,
            module: config.module.clone().or(inner.settings.module.take()),
            show_level: config.show_level.unwrap_or(inner.settings.show_level),
            show_origin: config.show_log_origin.unwrap_or(inner.settings.show_origin),
        };
        inner.configured = true;
        Ok(())
    }

    fn wanted(settings: &Settings, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= settings.level
            && settings
                .module
                .as_deref()
                .is_none_or(|m| metadata.target().starts_with(m))
    }
}

impl Log for FcLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        Self::wanted(&fennec_devices::lock(&self.inner).settings, metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let mut inner = fennec_devices::lock(&self.inner);
        if !Self::wanted(&inner.settings, record.metadata()) {
            return;
        }
        let mut tag = format!(
            "{}:{}",
            self.id,
            std::thread::current().name().unwrap_or("main")
        );
        if inner.settings.show_level {
            tag += &format!(":{}", record.level());
        }
        if inner.settings.show_origin {
            tag += &format!(
                ":{}:{}",
                record.file().unwrap_or("?"),
                record.line().unwrap_or(0)
            );
        }
        let line = format!(
            "{} [{tag}] {}\n",
            timestamp(SystemTime::now()),
            record.args()
        );
        // A log that cannot take a line (a full FIFO) loses it; the VMM goes on.
        let _ = inner.out.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = fennec_devices::lock(&self.inner).out.flush();
    }
}

/// `time` in UTC as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNN`, as Firecracker's log lines begin.
fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn test_timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000000");
        let t = UNIX_EPOCH + Duration::new(1_795_776_000, 5);
        assert_eq!(timestamp(t), "2026-11-27T10:40:00.000000005");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000000");
    }

    #[test]
    fn test_levels_parse_as_firecracker_names_them() {
        assert_eq!(parse_level("Warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("Loud"), None);
    }
}
