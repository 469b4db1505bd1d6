//! fennec as a drop-in for the `firecracker` binary: started under that name (a symlink) or as
//! `fennec firecracker ...`, it takes Firecracker's flags with their meaning and runs the VM as
//! `fennec run` does.

use std::io::Write;
use std::process::ExitCode;

use fennec::seccomp::SeccompLevel;

pub mod args;
pub mod jailer;
pub mod logger;

use args::{ArgError, FcArgs, EXIT_ARG_PARSING, EXIT_BAD_CONFIGURATION};
use logger::{parse_level, FcLogger, Settings};

use crate::cli::run::{self, Persona, RunArgs};

use fennec::api::FIRECRACKER_VERSION;

/// Whether this process was started under Firecracker's name.
pub fn started_as_firecracker(argv0: &std::ffi::OsStr) -> bool {
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
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args: Result<Vec<String>, _> = args.into_iter().map(|a| a.into_string()).collect();
    let fc = match args {
        Ok(args) => args::parse(&args),
        Err(arg) => Err(ArgError::NotUnicode(arg.to_string_lossy().into_owned())),
    };
    let fc = match fc {
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
        print!("{}", args::help());
        return ExitCode::SUCCESS;
    }
    if fc.version {
        println!("Firecracker v{FIRECRACKER_VERSION}\n");
        return ExitCode::SUCCESS;
    }
    // Firecracker's snapshot versions are its own; these print fennec's.
    if fc.present("snapshot-version") {
        println!("v{}.0.0", fennec::snapshot::FORMAT_VERSION);
        return ExitCode::SUCCESS;
    }
    if let Some(path) = fc.value("describe-snapshot") {
        return match fennec::snapshot::read_state(std::path::Path::new(path)) {
            Ok(state) => {
                println!(
                    "v{}.0.0 (fennec {})",
                    fennec::snapshot::FORMAT_VERSION,
                    state.fennec_version
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match prepare(&fc) {
        Ok((flags, persona)) => {
            log::info!(
                "Running as Firecracker v{FIRECRACKER_VERSION} (fennec {}), flags: {}",
                env!("CARGO_PKG_VERSION"),
                fc.given().copied().collect::<Vec<_>>().join(" ")
            );
            run::run(&flags, persona)
        }
        Err(Refusal(message, status)) => {
            eprintln!("Error: {message}");
            ExitCode::from(status)
        }
    }
}

/// Checks the flags, sets up the logger, and makes the `fennec run` they mean.
fn prepare(fc: &FcArgs) -> Result<(RunArgs, Persona), Refusal> {
    for (flag, why) in [
        (
            "seccomp-filter",
            "fennec's syscall filters are one allowlist per thread role, built in; --no-seccomp \
             turns them off",
        ),
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
    let number = |name: &str| {
        fc.value(name)
            .map(|v| v.parse::<usize>())
            .transpose()
            .map_err(|_| {
                bad_config(format!(
                    "'{name}' parameter expected to be of 'usize' type."
                ))
            })
    };
    let max_body = number("http-api-max-payload-size")?;
    // Firecracker's default: the API's body limit.
    let mmds_limit = number("mmds-size-limit")?.or(max_body);
    for name in ["start-time-us", "start-time-cpu-us", "parent-cpu-time-us"] {
        number(name)?;
    }
    let logger = init_logger(fc, &id)?;
    // The `fennec run` these flags mean, through `fennec run`'s own parser and defaults. The
    // metrics file is opened there, once: a FIFO's reader sees its end when the last writer
    // closes.
    let level = match fc.present("no-seccomp") {
        true => SeccompLevel::Off,
        false => SeccompLevel::Kill,
    };
    let mut flags = vec![flag("id", &id), flag("seccomp-filter", &level.to_string())];
    if let Some(path) = fc.value("config-file") {
        flags.push(flag("config-file", path));
    }
    if !fc.present("no-api") {
        flags.push(flag("api-socket", fc.value("api-sock").unwrap_or_default()));
    }
    if let Some(path) = fc.value("metrics-path") {
        flags.push(flag("metrics-path", path));
    }
    if let Some(path) = fc.value("metadata") {
        flags.push(flag("metadata", path));
    }
    if let Some(limit) = mmds_limit {
        flags.push(flag("mmds-size-limit", &limit.to_string()));
    }
    let run = RunArgs::from_flags(&flags).map_err(|e| bad_config(e.to_string()))?;
    let persona = Persona {
        api_max_body: max_body,
        logger: Some(Box::new(move |config| logger.reconfigure(config))),
        quiet_exit: true,
        metrics_format: fennec::api::service::MetricsFormat::Firecracker,
    };
    Ok((run, persona))
}

/// `--name=value`, which no value can be mistaken for a flag in.
fn flag(name: &str, value: &str) -> String {
    format!("--{name}={value}")
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
    Ok(logger::install(id, settings, out))
}
