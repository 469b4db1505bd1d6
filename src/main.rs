//! The `fennec` command line: find out which program fennec was started as, parse, and hand
//! over to the subcommand in [`cli`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::{ctl, firecracker, image, jail, run};

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
    Run(Box<run::RunArgs>),

    /// Talk to a running fennec over its control socket.
    ///
    /// Prints JSON answers on stdout. Exit status 0 on success, 1 with the socket's
    /// fault_message on stderr otherwise.
    Ctl(ctl::CtlArgs),

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
    Jail(Box<jail::JailArgs>),

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

fn main() -> ExitCode {
    // The guest's boot time counts from here.
    fennec::process_start();
    // Started as `firecracker`, or as `fennec firecracker`: Firecracker's flags, parsed as
    // Firecracker parses them (clap's rules differ).
    // Not `env::args`, which panics on an argument that is not UTF-8 (a path can be anything).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .is_some_and(|a| firecracker::started_as_firecracker(a))
    {
        return firecracker::main(args[1..].to_vec());
    }
    if args.get(1).is_some_and(|a| a == "firecracker") {
        return firecracker::main(args[2..].to_vec());
    }
    // The same for Firecracker's `jailer`.
    if args
        .first()
        .is_some_and(|a| firecracker::jailer::started_as_jailer(a))
    {
        return firecracker::jailer::main(args[1..].to_vec());
    }
    if args.get(1).is_some_and(|a| a == "jailer") {
        return firecracker::jailer::main(args[2..].to_vec());
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
        Command::Run(args) => run::run(args, run::Persona::default()),
        Command::Ctl(args) => ctl::ctl(args),
        Command::Image(args) => image::image(args),
        Command::Jail(args) => jail::jail(args, cli.verbose),
        // Taken by `main` before clap sees it; listed for --help.
        Command::Firecracker { args } => firecracker::main(args.iter().map(Into::into).collect()),
        Command::Jailer { args } => {
            firecracker::jailer::main(args.iter().map(Into::into).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
