//! `fennec run`: boot (or restore) a VM with its console on stdin and stdout, directly or
//! behind the control socket, and turn how the guest ended into the exit status.

mod args;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use fennec::api::http::ApiServer;
use fennec::api::service::{self, one_line, LoggerHook, MetricsFormat, MetricsSink, VmService};
use fennec::api::Event;
use fennec::config::VmConfig;
use fennec::console::OutputPump;
use fennec::mmds::Mmds;
use fennec::sandbox::FileAccess;
use fennec::seccomp::{self, SeccompLevel};
use fennec::storage::helper::StorageHelper;
use fennec::terminal::RawTerminal;
use fennec::{Console, ExitReason, VmBuilder};

pub use args::RunArgs;

use super::signals::{block_signals, on_signals, SignalTarget};

/// Exit status when the guest halted for good instead of resetting or powering off.
const EXIT_GUEST_HALTED: u8 = 3;
/// Exit status when the guest's kernel panicked (and said so through pvpanic).
const EXIT_GUEST_PANICKED: u8 = 4;

/// What fennec started as another program (`firecracker`) changes in `fennec run`, beyond the
/// flags it maps onto `fennec run`'s.
#[derive(Default)]
pub struct Persona {
    /// The largest control-socket request body taken, in bytes.
    pub api_max_body: Option<usize>,
    /// Reconfigures the process's logger on `PUT /logger`.
    pub logger: Option<LoggerHook>,
    /// The guest's end is the persona's to log, in its own format: nothing more on stderr, and
    /// status 0 for a reset or a panic as for a power-off.
    pub quiet_exit: bool,
    /// The shape of the metrics lines.
    pub metrics_format: MetricsFormat,
}

/// The console on stdin and stdout; its output is written by a thread of its own, so a
/// reader that stops reading never stops the guest.
fn console() -> io::Result<(Console, OutputPump)> {
    let output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    OutputPump::start(Box::new(output), Some(Box::new(input)))
}

/// How long fennec waits at exit for the guest's last output to be written.
const CONSOLE_DRAIN: Duration = Duration::from_secs(2);

/// The exit status for how the guest ended, saying how on stderr, except for a stop the host
/// asked for, and as `firecracker` (`quiet`), which logs the end in its own format.
fn exit_status(result: Result<ExitReason, String>, reset_status: u8, quiet: bool) -> ExitCode {
    match result {
        Ok(ExitReason::Stopped) => ExitCode::SUCCESS,
        Ok(reason @ (ExitReason::PowerOff | ExitReason::Reset)) => {
            if !quiet {
                eprintln!("fennec: {reason}");
            }
            match reason {
                ExitReason::Reset => ExitCode::from(reset_status),
                _ => ExitCode::SUCCESS,
            }
        }
        Ok(reason @ ExitReason::Halted) => {
            eprintln!("fennec: {reason}");
            ExitCode::from(EXIT_GUEST_HALTED)
        }
        // Firecracker has no pvpanic: its guest resets after the panic, and it exits 0.
        Ok(ExitReason::Panicked) if quiet => {
            log::error!("{}", ExitReason::Panicked);
            ExitCode::SUCCESS
        }
        Ok(reason @ ExitReason::Panicked) => {
            eprintln!("fennec: {reason}");
            ExitCode::from(EXIT_GUEST_PANICKED)
        }
        Ok(reason) => {
            eprintln!("fennec: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fennec: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `fennec run` with `args` as `persona` has it.
pub fn run(args: &RunArgs, persona: Persona) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fennec: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match args
        .metrics_path
        .as_deref()
        .map(service::open_sink)
        .transpose()
    {
        Ok(file) => file.map(|f| MetricsSink::with_format(f, persona.metrics_format)),
        Err(e) => {
            eprintln!("fennec: cannot open the metrics file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mmds = match Mmds::from_file(args.metadata.as_deref(), args.mmds_size_limit) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fennec: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.allow_path.is_empty() {
        log::warn!(
            "--allow-path is no longer needed, and ignored: the files the control socket's \
             requests name (a drive's new image, a snapshot) open wherever they are, and the \
             VM's guest-facing threads open none"
        );
    }
    seccomp::set_level(args.seccomp_filter);
    if args.seccomp_filter != SeccompLevel::Kill {
        log::warn!(
            "Syscall filters: {} (a syscall outside a thread's allowlist is {})",
            args.seccomp_filter,
            match args.seccomp_filter {
                SeccompLevel::Off => "not filtered at all",
                _ => "allowed and logged by the kernel",
            }
        );
    }
    let (reset_status, quiet) = (args.reset_status, persona.quiet_exit);
    match &args.api_socket {
        Some(path) => exit_status(
            run_with_api(path, args, config, persona, (metrics, mmds)),
            reset_status,
            quiet,
        ),
        None => {
            // Before any thread starts: the template clones are destroyed in this forked helper
            // after the VM ends, since by then this thread runs under a filter without execve.
            let helper = match config.drives.iter().any(|d| d.template().is_some()) {
                false => None,
                true => match StorageHelper::start() {
                    Ok(h) => Some(Arc::new(h)),
                    Err(e) => {
                        eprintln!("fennec: cannot start the storage helper: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let builder = match (&args.restore, &args.from_checkpoint) {
                (None, None) => Ok(VmBuilder::from_config(config)),
                (Some(dir), _) => VmBuilder::restore(dir),
                (None, Some(name)) => checkpoint_builder(name, args),
            };
            let builder = match builder {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("fennec: {}", one_line(&e));
                    return ExitCode::FAILURE;
                }
            };
            exit_status(
                run_direct(builder, helper, (metrics, mmds)),
                reset_status,
                quiet,
            )
        }
    }
}

/// The builder of `--from-checkpoint NAME --vm NEWNAME`: the checkpoint's disks cloned for
/// NEWNAME, its VM state on them.
fn checkpoint_builder(name: &str, args: &RunArgs) -> Result<VmBuilder, fennec::Error> {
    let spec = fennec::storage::default_spec(args.store.as_deref());
    let store =
        fennec::storage::open(&spec).map_err(|source| fennec::snapshot::SnapshotError::Store {
            name: name.to_string(),
            source,
        })?;
    let vm = args.vm.as_deref().unwrap_or_default();
    let (state, memory) = fennec::snapshot::checkpoint::prepare(store.as_ref(), name, vm)?;
    Ok(VmBuilder::from_state(state, memory))
}

/// Serves the control socket until the guest ends (or the VMM is stopped before a start).
fn run_with_api(
    path: &Path,
    args: &RunArgs,
    config: VmConfig,
    persona: Persona,
    (metrics, mmds): (Option<MetricsSink>, Mmds),
) -> Result<ExitReason, String> {
    // Before any thread starts, so that none can be killed by them.
    let signals = block_signals();
    // Before any thread starts: live snapshots run in this forked helper, so this process
    // executes no program once its VM runs.
    let helper =
        StorageHelper::start().map_err(|e| format!("cannot start the storage helper: {e}"))?;
    let (events, incoming) = mpsc::channel();
    let max_body = persona.api_max_body.unwrap_or(fennec::api::http::MAX_BODY);
    let server =
        ApiServer::start_with_limit(path, events.clone(), max_body).map_err(|e| one_line(&e))?;
    if let Some(signals) = signals {
        let events = events.clone();
        on_signals(signals, move |signo| {
            let _ = events.send(Event::Signal(signo));
        });
    }
    let boot_now = config.boot_source.is_some();
    let pumps = Arc::new(Mutex::new(Vec::new()));
    let made = pumps.clone();
    let make_console = move || {
        let (console, pump) = console()?;
        made.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pump);
        Ok(console)
    };
    let mut vm = VmService::new(args.id.clone(), config, Box::new(make_console), events)
        .with_storage_helper(helper)
        .with_mmds(mmds)
        .confined();
    let restore = match (&args.restore, &args.from_checkpoint) {
        (Some(dir), _) => Some((dir.clone(), Vec::new())),
        (None, Some(name)) => {
            // The checkpoint's disks cloned for the new VM; the snapshot loaded on them.
            let state = checkpoint_builder(name, args).map_err(|e| one_line(&e))?;
            let spec = fennec::storage::default_spec(args.store.as_deref());
            let store = fennec::storage::open(&spec).map_err(|e| e.to_string())?;
            let dir = fennec::snapshot::checkpoint::dir(store.as_ref(), name)
                .map_err(|e| e.to_string())?;
            let drives = state
                .config()
                .drives
                .iter()
                .filter_map(|d| Some((d.id.clone(), d.image_path()?.to_path_buf())))
                .collect();
            Some((dir, drives))
        }
        (None, None) => None,
    };
    if let Some((dir, drive_overrides)) = restore {
        let (snapshot_path, mem_file_path) = fennec::snapshot::files_in(&dir);
        let load = fennec::api::LoadSnapshot {
            snapshot_path,
            mem_file_path,
            resume_vm: true,
            network_overrides: Vec::new(),
            vsock_uds_path: args.vsock_uds.clone(),
            drive_overrides,
        };
        vm.serve_request(fennec::api::ApiRequest::LoadSnapshot(Box::new(load)))
            .map_err(|e| e.message)?;
    }
    vm = vm.with_metrics_format(persona.metrics_format);
    if let Some(sink) = metrics {
        vm = vm.with_metrics(sink);
    }
    if let Some(logger) = persona.logger {
        vm = vm.with_logger(logger);
    }
    let result = service::serve(vm, incoming, boot_now);
    server.drain(service::DRAIN_TIMEOUT);
    drop(server);
    for pump in std::mem::take(&mut *pumps.lock().unwrap_or_else(PoisonError::into_inner)) {
        pump.finish(CONSOLE_DRAIN);
    }
    match result {
        Ok(reason) => Ok(reason.unwrap_or(ExitReason::Stopped)),
        Err(e) => Err(e.message),
    }
}

/// Boots the configured guest with the console on stdin/stdout and waits for it to end.
fn run_direct(
    builder: VmBuilder,
    helper: Option<Arc<StorageHelper>>,
    (mut metrics, mmds): (Option<MetricsSink>, Mmds),
) -> Result<ExitReason, String> {
    let signals = block_signals();
    let target = Arc::new(Mutex::new(SignalTarget::default()));
    if let Some(signals) = signals {
        let target = target.clone();
        on_signals(signals, move |signo| {
            SignalTarget::on_signal(&target, signo)
        });
    }
    let (console, pump) = match console() {
        Ok(c) => c,
        Err(e) => return Err(format!("cannot use stdin/stdout as the console: {e}")),
    };
    let stdin = io::stdin();
    let mut builder = builder.console(console).mmds(mmds);
    if let Some(helper) = helper {
        builder = builder.storage_helper(helper);
    }
    let result = builder
        .build()
        .and_then(|built| {
            // Raw mode only once the VM is built, so build errors print on a sane terminal; the
            // guard restores the terminal before anything below prints.
            let _raw = RawTerminal::enter(stdin.as_fd()).unwrap_or_else(|e| {
                log::warn!("Cannot put the terminal in raw mode: {e}");
                None
            });
            // The VM's guest-facing threads open nothing else from here; this one only waits
            // for the VM, then tidies up.
            let access = FileAccess::for_vm(built.config());
            let vm = built.confine_and_start(Some(&access))?;
            SignalTarget::started(&target, &vm)?;
            if let Some(sink) = metrics.as_mut() {
                sink.write(Some(&vm));
            }
            let ended = vm.wait();
            if let Some(sink) = metrics.as_mut() {
                sink.write(Some(&vm));
            }
            SignalTarget::ended(&target);
            // Dropping `vm` destroys the ephemeral template clones, after the VM.
            Ok(ended?)
        })
        .map_err(|e| one_line(&e));
    pump.finish(CONSOLE_DRAIN);
    result
}
