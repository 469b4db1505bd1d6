//! fennec as a drop-in for the `firecracker` binary: started under that name (a symlink) or as
//! `fennec firecracker ...`, it takes Firecracker's flags with their meaning and runs the VM as
//! `fennec run` does.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use fennec::seccomp::SeccompLevel;

use crate::fc_args::{self, FcArgs, EXIT_ARG_PARSING, EXIT_BAD_CONFIGURATION};
use crate::fc_logger::{self, parse_level, FcLogger, Settings};
use crate::RunArgs;

use fennec::firecracker::FIRECRACKER_VERSION;

/// Whether this process was started under Firecracker's name.
pub fn started_as_firecracker(argv0: &str) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "firecracker")
}

/// An error of the kind Firecracker reports after parsing: one line, and its exit status.
struct Refusal(String, u8);

fn bad_config(message: impl Into<String>) -> Refusal {
    Refusal(message.into(), EXIT_BAD_CONFIGURATION)
}

/// Runs `fennec` as `firecracker ARGS` (without the program name).
pub fn main(args: Vec<String>) -> ExitCode {
    let fc = match fc_args::parse(&args) {
        Ok(fc) => fc,
        Err(e) => {
            eprintln!("Error: Arguments parsing error: {e}\n\nFor more information try --help.");
            return ExitCode::from(EXIT_ARG_PARSING);
        }
    };
    if fc.help {
        println!(
            "Firecracker v{FIRECRACKER_VERSION} (fennec {})\n",
            env!("CARGO_PKG_VERSION")
        );
        print!("{}", fc_args::help());
        return ExitCode::SUCCESS;
    }
    if fc.version {
        println!("Firecracker v{FIRECRACKER_VERSION}\n");
        return ExitCode::SUCCESS;
    }
    match prepare(&fc) {
        Ok(run) => {
            log::info!(
                "Running as Firecracker v{FIRECRACKER_VERSION} (fennec {}), flags: {}",
                env!("CARGO_PKG_VERSION"),
                fc.given().copied().collect::<Vec<_>>().join(" ")
            );
            crate::run(&run)
        }
        Err(Refusal(message, status)) => {
            eprintln!("Error: {message}");
            ExitCode::from(status)
        }
    }
}

/// Checks the flags, sets up the logger, and makes the `fennec run` they mean.
fn prepare(fc: &FcArgs) -> Result<RunArgs, Refusal> {
    for (flag, why) in [
        (
            "seccomp-filter",
            "fennec's syscall filters are one allowlist per thread role, built in; --no-seccomp \
             turns them off",
        ),
        ("metadata", "fennec has no MMDS yet"),
        ("snapshot-version", "fennec has no snapshots yet"),
        ("describe-snapshot", "fennec has no snapshots yet"),
        ("enable-pci", "fennec's devices are virtio-mmio"),
    ] {
        if fc.present(flag) {
            return Err(Refusal(format!("--{flag} is not supported: {why}"), 1));
        }
    }
    let id = fc.value("id").unwrap_or_default().to_string();
    if !(1..=64).contains(&id.len()) || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad_config(format!(
            "Invalid instance ID {id:?}: 1 to 64 letters, digits or '-'"
        )));
    }
    for name in [
        "http-api-max-payload-size",
        "mmds-size-limit",
        "start-time-us",
        "start-time-cpu-us",
        "parent-cpu-time-us",
    ] {
        if let Some(v) = fc.value(name) {
            v.parse::<u64>().map_err(|_| {
                bad_config(format!(
                    "'{name}' parameter expected to be of 'usize' type."
                ))
            })?;
        }
    }
    let logger = init_logger(fc, &id)?;
    let max_body = fc
        .value("http-api-max-payload-size")
        .and_then(|v| v.parse::<usize>().ok());
    // Opened by `fennec run`, once: a FIFO's reader sees its end when the last writer closes.
    let metrics_path = fc.value("metrics-path").map(PathBuf::from);
    Ok(RunArgs {
        config_file: fc.value("config-file").map(PathBuf::from),
        api_socket: (!fc.present("no-api"))
            .then(|| PathBuf::from(fc.value("api-sock").unwrap_or_default())),
        id,
        seccomp_filter: if fc.present("no-seccomp") {
            SeccompLevel::Off
        } else {
            SeccompLevel::Kill
        },
        metrics_path,
        api_max_body: max_body,
        fc_logger: Some(logger),
        ..RunArgs::default()
    })
}

/// Firecracker's logger, from the flags: to `--log-path` (else stderr) at `--level`.
fn init_logger(fc: &FcArgs, id: &str) -> Result<&'static FcLogger, Refusal> {
    let level = match fc.value("level") {
        None => log::LevelFilter::Warn,
        Some(name) => parse_level(name).ok_or_else(|| {
            bad_config(format!(
                "Invalid value for logger level: {name}.Possible values: [Error, Warning, Info, \
                 Debug]"
            ))
        })?,
    };
    let out: Option<Box<dyn Write + Send>> = match fc.value("log-path") {
        None => None,
        Some(path) => Some(Box::new(
            fennec::api::service::open_sink(std::path::Path::new(path))
                .map_err(|e| Refusal(format!("Could not initialize logger: {path}: {e}"), 1))?,
        )),
    };
    let settings = Settings {
        level,
        module: fc.value("module").map(str::to_string),
        show_level: fc.present("show-level"),
        show_origin: fc.present("show-log-origin"),
    };
    Ok(fc_logger::install(id, settings, out))
}
