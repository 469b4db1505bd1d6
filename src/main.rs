//! The `fennec` command line: parse, build the configuration, call the library, map the result to
//! an exit status.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};

use fennec::api::http::ApiServer;
use fennec::api::service::{self, one_line, Event, MetricsSink, VmService};
use fennec::config::{
    BlockConfig, BootSourceConfig, MachineConfig, NetConfig, VmConfig, MAX_MEM_MIB, MIN_MEM_MIB,
};
use fennec::console::OutputPump;
use fennec::mmds::Mmds;
use fennec::sandbox::FileAccess;
use fennec::seccomp::{self, SeccompLevel};
use fennec::storage::helper::StorageHelper;
use fennec::terminal::RawTerminal;
use fennec::threads::{self, Role};
use fennec::{Console, ExitReason, VmBuilder, VmHandle};

mod ctl_cmd;
mod fc_args;
mod fc_logger;
mod fc_mode;
mod image;
mod jail_cmd;
mod jailer_mode;

/// Exit status when the guest halted for good instead of resetting or powering off.
const EXIT_GUEST_HALTED: u8 = 3;
/// Exit status when the guest's kernel panicked (and said so through pvpanic).
const EXIT_GUEST_PANICKED: u8 = 4;

/// fennec: a small, fast KVM virtual machine monitor.
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest; its serial console is this process's stdin and stdout.
    ///
    /// Exit status: 0 when the guest powers off, or resets (Linux `reboot`, a triple fault, a
    /// kernel panic under panic=N: --reset-status gives those another), 3 when it halts with
    /// interrupts disabled on every vCPU, 4 when its kernel panics and says so (the pvpanic
    /// device, which ACPI describes: Linux's pvpanic-mmio driver), 1 on any error, 2 on bad
    /// usage. How the guest ended is the last line on stderr. When stdin is a terminal it is put in
    /// raw mode: every key, Ctrl-C included, goes to the guest. The guest never waits for the
    /// console's reader: output a stopped reader cannot take is dropped and counted. SIGTERM,
    /// SIGINT and SIGHUP stop the VM cleanly and restore the terminal; SIGUSR1 logs where the
    /// VM stands (vCPUs, local APICs, serial port, IOAPIC), for diagnosing a stalled guest.
    ///
    /// With --api-socket, fennec serves its control socket (Firecracker's API) and boots when
    /// told to (PUT /actions InstanceStart), or at once if the command line or --config-file
    /// gives a kernel; it exits when the guest ends.
    Run(Box<RunArgs>),

    /// Talk to a running fennec over its control socket.
    ///
    /// Prints JSON answers on stdout. Exit status 0 on success, 1 with the socket's
    /// fault_message on stderr otherwise.
    Ctl(ctl_cmd::CtlArgs),

    /// Run `fennec run` confined, as Firecracker's jailer does: a directory of the VM's own,
    /// new mount and PID namespaces, cgroup v2 and rlimit limits, an unprivileged uid and gid,
    /// no capabilities.
    ///
    /// Takes every option of `fennec run` plus the jail's own. The jail, BASE/ID/root, holds
    /// the kernel and initrd (copied), the drives' images (bind-mounted, and given to the
    /// VM's uid), /dev/kvm and /dev/net/tun, /proc, the configuration (vm.json) and the
    /// control socket (--api-socket NAME). It is removed when the VM ends. Drives must be
    /// image paths (clone templates first). Exit status: fennec's, or 1 with the reason on
    /// stderr when the jail cannot be made.
    Jail(Box<jail_cmd::JailArgs>),

    /// Run as the `firecracker` binary: Firecracker's flags (--api-sock, --id, --config-file,
    /// --no-api, --log-path, --level, --metrics-path, --no-seccomp, ...) with their meaning.
    ///
    /// The same as starting fennec through a symlink named `firecracker`, so engines that spawn
    /// Firecracker (its SDKs, firecracker-containerd, Kata) can spawn fennec. `--help` lists
    /// every flag; errors and exit statuses are Firecracker's (153 for a bad command line).
    Firecracker {
        /// Firecracker's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// Run as Firecracker's `jailer`: its flags (--id, --exec-file, --uid, --gid,
    /// --chroot-base-dir, --netns, --cgroup, --cgroup-version, --parent-cgroup,
    /// --resource-limit, --daemonize, --new-pid-ns) and its chroot layout
    /// (<base>/<exec file name>/<id>/root), confining the --exec-file (fennec as firecracker)
    /// as `fennec jail` does. The same as starting fennec through a symlink named `jailer`.
    Jailer {
        /// The jailer's flags, then `--` and the program's.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// Manage disk images: templates, and VM disks cloned from them.
    ///
    /// A store is a directory of raw images (the default) or a ZFS dataset, where a VM disk
    /// is a copy-on-write `zfs clone` of a template snapshot, made in milliseconds. Exit
    /// status 0 on success, 1 with the reason on stderr otherwise.
    Image(image::ImageArgs),
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(true)
    .args(["kernel", "config_file", "api_socket", "restore", "from_checkpoint"]))]
struct RunArgs {
    /// Kernel image: ELF vmlinux (entered through PVH if it has the note, else the 64-bit
    /// protocol) or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,

    /// Read the whole VM configuration from a JSON file in Firecracker's config-file format
    /// (boot-source, machine-config, drives, network-interfaces) instead of the flags.
    #[arg(long, value_name = "PATH",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "no_acpi", "disk", "net"])]
    config_file: Option<PathBuf>,

    /// Restore the VM snapshotted in DIR (its `state` and `memory` files, written by `fennec
    /// ctl snapshot-vm` or PUT /snapshot/create) instead of booting one: it goes on where it
    /// was, with the drives and network interfaces it had.
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "no_acpi", "disk", "net", "config_file"])]
    restore: Option<PathBuf>,

    /// Restore checkpoint NAME (taken with `fennec ctl checkpoint NAME`) as a new VM: every
    /// disk cloned from the checkpoint's snapshot as NEWNAME/DISK in the store (--store), then
    /// the VM goes on from the checkpoint on them. Each run with another --vm is another
    /// independent copy.
    #[arg(long, value_name = "NAME", requires = "vm",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "no_acpi", "disk", "net", "config_file", "restore"])]
    from_checkpoint: Option<String>,

    /// The new VM's name for --from-checkpoint (its disks are NAME/DISK in the store).
    #[arg(long, value_name = "NAME", requires = "from_checkpoint")]
    vm: Option<String>,

    /// The image store of --from-checkpoint (default $FENNEC_STORE, else
    /// dir:/var/lib/fennec/images).
    #[arg(long, value_name = "SPEC", requires = "from_checkpoint")]
    store: Option<String>,

    /// Serve the control socket (HTTP + JSON, Firecracker's API) at PATH, mode 0600. A stale
    /// socket there is replaced; a live one is refused.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,

    /// The instance ID the control socket reports.
    #[arg(long, value_name = "ID", default_value = "fennec")]
    id: String,

    /// Initramfs to load.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// Kernel command line. fennec appends console=ttyS0 and reboot=k unless it names a
    /// console= or reboot= of its own.
    #[arg(long, value_name = "STR", default_value = fennec::config::DEFAULT_BOOT_ARGS)]
    cmdline: String,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = fennec::config::DEFAULT_VCPUS,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(fennec_boot::layout::MAX_VCPUS)))]
    vcpus: u8,

    /// Guest memory, in MiB, or with a suffix: 512M, 2G.
    #[arg(long, value_name = "MIB", default_value = "128", value_parser = parse_mib)]
    memory: usize,

    /// Describe the machine only in the MP table and on the kernel command line, without ACPI
    /// tables. By default the guest gets both: distribution kernels read ACPI (their CPUs,
    /// virtio devices, power button), kernels built without ACPI read the others.
    #[arg(long)]
    no_acpi: bool,

    /// A virtio-blk drive backed by a raw image file or block device; repeat for more drives.
    /// `id=` names it (default disk0, disk1, ...; the guest reads it as the disk's serial),
    /// `ro` makes it read-only, `root` makes it the root filesystem: it becomes /dev/vda and
    /// fennec adds root=/dev/vda and rw (or ro) to the command line. Other drives follow as
    /// /dev/vdb, /dev/vdc, ... in the order given. A writable image is locked while fennec
    /// runs, so no second VM can open it.
    ///
    /// `template=NAME` instead of `path=` gives the VM a clone of a template from an image
    /// store (`store=SPEC`, see `fennec image --help`; default $FENNEC_STORE, else
    /// dir:/var/lib/fennec/images). The clone is destroyed when the VM ends, unless `vm=NAME`
    /// keeps it as disk NAME/ID, which later runs with the same vm= reuse.
    #[arg(long, value_name = "path=PATH|template=NAME[,...]",
          value_parser = |s: &str| BlockConfig::from_cli(s, ""))]
    disk: Vec<BlockConfig>,

    /// A virtio-net interface on an existing TAP interface; repeat for more. The guest sees
    /// them as eth0, eth1, ... in the order given. `mac=` sets the guest's MAC address (default:
    /// a locally administered one derived from the TAP name, the same on every run); `id=` names
    /// the interface (default net0, net1, ...). Create the TAP first, for example:
    /// `ip tuntap add tap0 mode tap && ip link set tap0 up`.
    #[arg(long, value_name = "tap=NAME[,mac=MAC][,id=ID]",
          value_parser = |s: &str| NetConfig::from_cli(s, ""))]
    net: Vec<NetConfig>,

    /// What fennec's syscall filters do with a syscall outside a thread's allowlist: `kill`
    /// ends fennec with SIGSYS; `log` lets the call through and has the kernel log it
    /// (`audit: type=1326 ... syscall=N` in dmesg), to find what a new code path needs; `off`
    /// installs no filters. Every thread has one allowlist per role (vCPU, VMM event loop,
    /// control socket, ...), installed before it runs anything a guest can reach.
    #[arg(long, value_name = "LEVEL", default_value_t = SeccompLevel::Kill)]
    seccomp_filter: SeccompLevel,

    /// Once the VM is built, fennec can open only its drives' images (Landlock; where the
    /// kernel has it): repeat this to allow the files beneath a directory too, for images a
    /// running VM's drive is switched to (PATCH /drives).
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,

    /// The drives' directories are allowed too (fennec as `firecracker`, whose engines switch
    /// drives to files they put beside the first ones).
    #[arg(skip)]
    allow_drive_dirs: bool,

    /// Write the VM's counters to this file or FIFO (which must exist), one JSON object a
    /// line: once the guest runs, and when it ends (Firecracker's --metrics-path).
    #[arg(long, value_name = "PATH")]
    metrics_path: Option<PathBuf>,

    /// A JSON object the guest's metadata service (MMDS) starts with. Which interfaces reach
    /// the service, at which address, is the configuration's `mmds-config` (--config-file or
    /// PUT /mmds/config); the control socket's PUT and PATCH /mmds change the document.
    #[arg(long, value_name = "PATH")]
    metadata: Option<PathBuf>,

    /// The largest metadata document, in bytes of JSON.
    #[arg(long, value_name = "BYTES", default_value_t = fennec::mmds::DEFAULT_SIZE_LIMIT)]
    mmds_size_limit: usize,

    /// The largest control-socket request body taken, in bytes (`fennec firecracker`'s
    /// --http-api-max-payload-size).
    #[arg(skip)]
    api_max_body: Option<usize>,

    /// The exit status when the guest resets (a reboot, a triple fault, or a kernel panic
    /// under panic=N) instead of powering off. Both end fennec with 0 by default, as they end
    /// Firecracker; give another status to tell them apart.
    #[arg(long, value_name = "STATUS", default_value_t = 0)]
    reset_status: u8,

    /// The logger `PUT /logger` reconfigures (fennec as `firecracker`).
    #[arg(skip)]
    fc_logger: Option<&'static fc_logger::FcLogger>,
}

/// Parses a memory size in MiB: `512`, `512M`, `512MiB`, `2G`, `2GiB`.
fn parse_mib(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, factor) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t, 1),
        Some(i) => match t[i..].to_ascii_lowercase().as_str() {
            "m" | "mb" | "mib" => (&t[..i], 1),
            "g" | "gb" | "gib" => (&t[..i], 1024),
            unit => return Err(format!("unknown unit '{unit}' (use M or G)")),
        },
    };
    let mib = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("'{s}' is not a memory size"))?;
    if (MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mib) {
        Ok(mib)
    } else {
        Err(format!(
            "{mib} MiB is outside {MIN_MEM_MIB}..={MAX_MEM_MIB} MiB"
        ))
    }
}

impl RunArgs {
    /// `fennec run`'s arguments from `flags` (without `run`), with its defaults for the rest.
    fn from_flags(flags: &[String]) -> Result<RunArgs, clap::Error> {
        let command = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
        RunArgs::from_arg_matches(&command.try_get_matches_from(flags)?)
    }

    /// The configuration from --config-file, or from the flags (without a kernel, an empty
    /// one the control socket fills in).
    fn config(&self) -> Result<VmConfig, String> {
        if let Some(path) = &self.config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            return fennec::firecracker::vm_config(&text)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        Ok(VmConfig {
            boot_source: self.kernel.clone().map(|kernel| BootSourceConfig {
                kernel_image_path: kernel,
                initrd_path: self.initrd.clone(),
                boot_args: Some(self.cmdline.clone()),
            }),
            machine_config: MachineConfig {
                vcpu_count: self.vcpus,
                mem_size_mib: self.memory,
                acpi: !self.no_acpi,
                ..MachineConfig::default()
            },
            drives: self
                .disk
                .iter()
                .enumerate()
                .map(|(i, d)| BlockConfig {
                    id: id_or_default(&d.id, "disk", i),
                    ..d.clone()
                })
                .collect(),
            net: self
                .net
                .iter()
                .enumerate()
                .map(|(i, n)| NetConfig {
                    id: id_or_default(&n.id, "net", i),
                    ..n.clone()
                })
                .collect(),
            mmds_config: None,
            entropy: None,
        })
    }
}

/// `id`, or `{prefix}{index}` when the user gave none.
fn id_or_default(id: &str, prefix: &str, index: usize) -> String {
    if id.is_empty() {
        format!("{prefix}{index}")
    } else {
        id.to_string()
    }
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

/// Signals fennec takes itself: SIGTERM, SIGINT and SIGHUP stop the VM cleanly (so the
/// terminal is restored) instead of killing fennec; SIGUSR1 logs the VM's state.
const HANDLED_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// Blocks [`HANDLED_SIGNALS`] in this thread, and so in every thread started after it; they
/// are then taken by [`on_signals`]. `fennec run` calls it before it starts any thread, so no
/// thread can be killed by one. `None` if that fails (the defaults then apply).
fn block_signals() -> Option<libc::sigset_t> {
    // A handler that never runs (the signals stay blocked, sigwait takes them): as PID 1 of a
    // PID namespace (in `fennec jail`), a process gets no signal whose action is the default.
    extern "C" fn never_runs(_: libc::c_int) {}
    for signo in HANDLED_SIGNALS {
        // SAFETY: installs an async-signal-safe (empty) handler for a valid signal number.
        unsafe { libc::signal(signo, never_runs as *const () as libc::sighandler_t) };
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid.
    let ok = unsafe {
        libc::sigemptyset(&mut set);
        HANDLED_SIGNALS.iter().for_each(|s| {
            libc::sigaddset(&mut set, *s);
        });
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0
    };
    ok.then_some(set)
}

/// Waits for the handled signals on its own thread and calls `on_signal` for each.
fn on_signals(set: libc::sigset_t, on_signal: impl Fn(i32) + Send + 'static) {
    let spawned = threads::spawn(Role::Signals, "signals", move || loop {
        let mut signo: libc::c_int = 0;
        // SAFETY: `set` holds signals blocked in every thread, so sigwait is the only taker;
        // `signo` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut signo) } == 0 {
            on_signal(signo);
        }
    });
    if let Err(e) = spawned {
        log::warn!("Cannot start the signal thread ({e}); SIGTERM, SIGINT and SIGHUP kill fennec");
    }
}

/// Where the signal thread finds the VM of `fennec run`: not started yet (a stop signal is then
/// remembered), or running.
#[derive(Default)]
struct SignalTarget {
    handle: Option<VmHandle>,
    stop_asked: bool,
}

impl SignalTarget {
    fn on_signal(target: &Mutex<SignalTarget>, signo: i32) {
        let mut t = target.lock().unwrap_or_else(PoisonError::into_inner);
        match (&t.handle, signo) {
            (Some(handle), _) => service::on_signal(handle, signo),
            (None, libc::SIGUSR1) => log::warn!("Received SIGUSR1 before the VM started"),
            (None, _) => {
                log::info!("Received signal {signo} before the VM started; it stops at once");
                t.stop_asked = true;
            }
        }
    }

    /// The VM started: signals reach it from now on, and a stop asked for before, now.
    fn started(target: &Mutex<SignalTarget>, handle: &VmHandle) -> Result<(), fennec::Error> {
        let mut t = target.lock().unwrap_or_else(PoisonError::into_inner);
        t.handle = Some(handle.clone());
        if t.stop_asked {
            handle.stop()?;
        }
        Ok(())
    }
}

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

fn run(args: &RunArgs) -> ExitCode {
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
        Ok(file) => file.map(MetricsSink::new),
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
    match &args.api_socket {
        Some(path) => exit_status(
            run_with_api(path, args, config, block_signals(), (metrics, mmds)),
            args.reset_status,
            args.fc_logger.is_some(),
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
                run_direct(
                    builder,
                    (&args.allow_path, args.allow_drive_dirs),
                    block_signals(),
                    helper,
                    (metrics, mmds),
                ),
                args.reset_status,
                args.fc_logger.is_some(),
            )
        }
    }
}

/// The builder of `--from-checkpoint NAME --vm NEWNAME`: the checkpoint's disks cloned for
/// NEWNAME, its VM state on them.
fn checkpoint_builder(name: &str, args: &RunArgs) -> Result<VmBuilder, fennec::Error> {
    let spec = fennec::storage::default_spec(args.store.as_deref());
    let store = fennec::storage::open(&spec)
        .map_err(|e| fennec::snapshot::SnapshotError::Checkpoint(e.to_string()))?;
    let vm = args.vm.as_deref().unwrap_or_default();
    let (state, memory) = fennec::snapshot::checkpoint::prepare(store.as_ref(), name, vm)?;
    Ok(VmBuilder::from_state(state, memory))
}

/// Serves the control socket until the guest ends (or the VMM is stopped before a start).
fn run_with_api(
    path: &Path,
    args: &RunArgs,
    config: VmConfig,
    signals: Option<libc::sigset_t>,
    (metrics, mmds): (Option<MetricsSink>, Mmds),
) -> Result<ExitReason, String> {
    // Before any thread starts: live snapshots run in this forked helper, so this process
    // executes no program once its VM runs.
    let helper =
        StorageHelper::start().map_err(|e| format!("cannot start the storage helper: {e}"))?;
    let (events, incoming) = mpsc::channel();
    let max_body = args.api_max_body.unwrap_or(fennec::api::http::MAX_BODY);
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
        .with_file_access(args.allow_path.clone(), path.to_path_buf());
    if args.allow_drive_dirs {
        vm = vm.with_drive_dirs();
    }
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
            drive_overrides,
        };
        vm.serve_request(fennec::api::ApiRequest::LoadSnapshot(Box::new(load)))
            .map_err(|e| e.message)?;
    }
    if let Some(sink) = metrics {
        vm = vm.with_metrics(sink);
    }
    if let Some(logger) = args.fc_logger {
        vm = vm.with_logger(Box::new(move |config| logger.reconfigure(config)));
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
    (allowed, drive_dirs): (&[PathBuf], bool),
    signals: Option<libc::sigset_t>,
    helper: Option<Arc<StorageHelper>>,
    (mut metrics, mmds): (Option<MetricsSink>, Mmds),
) -> Result<ExitReason, String> {
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
            // The VM's threads, and this one, open nothing else from here.
            let mut access = FileAccess::for_vm(built.config(), allowed);
            if drive_dirs {
                access = access.with_drive_dirs(built.config());
            }
            fennec::sandbox::restrict_thread(&access)
                .map_err(|e| fennec::StartError::Vm(e.into()))?;
            let vm = built.start()?;
            // This thread only waits for the VM from here, then tidies up.
            if let Err(e) = seccomp::install(Role::ApiService) {
                return Err(fennec::StartError::Vm(fennec::Error::Seccomp(e)));
            }
            SignalTarget::started(&target, &vm)?;
            if let Some(sink) = metrics.as_mut() {
                sink.write(Some(&vm));
            }
            let ended = vm.wait();
            if let Some(sink) = metrics.as_mut() {
                sink.write(Some(&vm));
            }
            target.lock().unwrap_or_else(PoisonError::into_inner).handle = None;
            // Dropping `vm` destroys the ephemeral template clones, after the VM.
            Ok(ended?)
        })
        .map_err(|e| one_line(&e));
    pump.finish(CONSOLE_DRAIN);
    result
}

fn main() -> ExitCode {
    // The guest's boot time counts from here.
    fennec::process_start();
    // Started as `firecracker`, or as `fennec firecracker`: Firecracker's flags, parsed as
    // Firecracker parses them (clap's rules differ).
    // Not `env::args`, which panics on an argument that is not UTF-8 (a path can be anything).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .is_some_and(|a| fc_mode::started_as_firecracker(a))
    {
        return fc_mode::main(args[1..].to_vec());
    }
    if args.get(1).is_some_and(|a| a == "firecracker") {
        return fc_mode::main(args[2..].to_vec());
    }
    // The same for Firecracker's `jailer`.
    if args
        .first()
        .is_some_and(|a| jailer_mode::started_as_jailer(a))
    {
        return jailer_mode::main(args[1..].to_vec());
    }
    if args.get(1).is_some_and(|a| a == "jailer") {
        return jailer_mode::main(args[2..].to_vec());
    }
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    match &cli.command {
        Command::Run(args) => run(args),
        Command::Ctl(args) => ctl_cmd::ctl(args),
        Command::Image(args) => image::image(args),
        Command::Jail(args) => jail_cmd::jail(args, cli.verbose),
        // Taken by `main` before clap sees it; listed for --help.
        Command::Firecracker { args } => fc_mode::main(args.iter().map(Into::into).collect()),
        Command::Jailer { args } => jailer_mode::main(args.iter().map(Into::into).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_mib_units() {
        assert_eq!(parse_mib("512"), Ok(512));
        assert_eq!(parse_mib("512M"), Ok(512));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert_eq!(parse_mib("2GiB"), Ok(2048));
    }

    #[test]
    fn test_parse_mib_rejects_garbage_and_range() {
        assert!(parse_mib("lots").is_err());
        assert!(parse_mib("1").is_err());
        assert!(parse_mib("12T").is_err());
        assert!(parse_mib("99999999999999999999").is_err());
    }

    #[test]
    fn test_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
