//! The `fennec` command line: parse, build the configuration, call the library, map the result to
//! an exit status.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use fennec::config::{
    BlockConfig, BootSourceConfig, MachineConfig, NetConfig, VmConfig, MAX_MEM_MIB, MIN_MEM_MIB,
};
use fennec::terminal::RawTerminal;
use fennec::{Console, ExitReason, Vm};

/// Exit status when the guest halted for good instead of resetting or powering off.
const EXIT_GUEST_HALTED: u8 = 3;

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
    /// Exit status: 0 when the guest resets or powers off (Linux `reboot`, `reboot -f`, a
    /// triple fault), 3 when it halts with interrupts disabled on every vCPU, 1 on any error
    /// (printed as one line on stderr), 2 on bad usage. When stdin is a terminal it is put in
    /// raw mode: every key, Ctrl-C included, goes to the guest. SIGTERM, SIGINT and SIGHUP stop
    /// the VM cleanly and restore the terminal.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Kernel image: ELF vmlinux (entered through PVH if it has the note, else the 64-bit
    /// protocol) or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,

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

    /// A virtio-blk drive backed by a raw image file or block device; repeat for more drives.
    /// `id=` names it (default disk0, disk1, ...; the guest reads it as the disk's serial),
    /// `ro` makes it read-only, `root` makes it the root filesystem: it becomes /dev/vda and
    /// fennec adds root=/dev/vda and rw (or ro) to the command line. Other drives follow as
    /// /dev/vdb, /dev/vdc, ... in the order given. A writable image is locked while fennec
    /// runs, so no second VM can open it.
    #[arg(long, value_name = "path=PATH[,id=ID][,ro][,root]",
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
    fn config(&self) -> VmConfig {
        VmConfig {
            boot_source: BootSourceConfig {
                kernel_image_path: self.kernel.clone(),
                initrd_path: self.initrd.clone(),
                boot_args: Some(self.cmdline.clone()),
            },
            machine_config: MachineConfig {
                vcpu_count: self.vcpus,
                mem_size_mib: self.memory,
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
        }
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

/// An error and its sources on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

fn console() -> io::Result<Console> {
    let output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    Ok(Console {
        output: Box::new(output),
        input: Some(Box::new(input)),
    })
}

/// Signals that stop the VM cleanly (so the terminal is restored) instead of killing fennec.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks the stop signals in this thread, and so in every VM thread started after it; they are
/// then taken by [`stop_on_signals`]. `None` if that fails (the defaults then apply).
fn block_stop_signals() -> Option<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid.
    let ok = unsafe {
        libc::sigemptyset(&mut set);
        STOP_SIGNALS.iter().for_each(|s| {
            libc::sigaddset(&mut set, *s);
        });
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0
    };
    ok.then_some(set)
}

/// Waits for a stop signal on its own thread and stops the VM when one arrives.
fn stop_on_signals(set: libc::sigset_t, stopper: fennec::Stopper) {
    std::thread::spawn(move || loop {
        let mut signo: libc::c_int = 0;
        // SAFETY: `set` holds signals blocked in every thread, so sigwait is the only taker;
        // `signo` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut signo) } == 0 {
            log::info!("Received signal {signo}, stopping the VM");
            if let Err(e) = stopper.stop() {
                log::error!("{e}");
            }
        }
    });
}

fn run(args: &RunArgs) -> ExitCode {
    let config = args.config();
    let console = match console() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fennec: cannot use stdin/stdout as the console: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdin = io::stdin();
    let result = Vm::new(&config, console).and_then(|vm| {
        // Raw mode only once the VM is built, so build errors print on a sane terminal; the
        // guard restores the terminal before anything below prints.
        let _raw = RawTerminal::enter(stdin.as_fd()).unwrap_or_else(|e| {
            log::warn!("Cannot put the terminal in raw mode: {e}");
            None
        });
        let stop_signals = block_stop_signals();
        let handle = vm.start()?;
        if let Some(signals) = stop_signals {
            stop_on_signals(signals, handle.stopper()?);
        }
        handle.wait()
    });
    match result {
        Ok(reason) if reason.is_clean() => ExitCode::SUCCESS,
        Ok(reason @ ExitReason::Halted) => {
            eprintln!("fennec: {reason}");
            ExitCode::from(EXIT_GUEST_HALTED)
        }
        Ok(reason) => {
            eprintln!("fennec: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fennec: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
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
