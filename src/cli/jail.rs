//! `fennec jail`: the command line of [`fennec::jail`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use fennec::jail::{self, Ended, JailSpec, Limits};

use crate::cli::run::RunArgs;

#[derive(Args)]
pub struct JailArgs {
    /// The uid the VM runs as (not 0). The jail gives it the drives' images.
    #[arg(long, value_name = "UID")]
    uid: u32,

    /// The gid the VM runs as (not 0).
    #[arg(long, value_name = "GID")]
    gid: u32,

    /// The directory the jail is made in, as BASE/ID/root.
    #[arg(long, value_name = "DIR", default_value = jail::DEFAULT_BASE)]
    base: PathBuf,

    /// Run the VM in this existing network namespace (such as /run/netns/NAME), where its
    /// TAPs are.
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,

    /// At most this many CPUs' worth of time (cgroup v2 cpu.max), such as 1 or 0.5.
    #[arg(long, value_name = "N", value_parser = parse_cpus)]
    cpus: Option<f64>,

    /// At most this much memory for the whole process, guest memory included (cgroup v2
    /// memory.max): 512M, 2G. Above it the kernel kills the VM, not the host.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory_max: Option<u64>,

    /// At most this many processes and threads (cgroup v2 pids.max).
    #[arg(long, value_name = "N")]
    pids_max: Option<u64>,

    /// At most this many open files (RLIMIT_NOFILE).
    #[arg(long, value_name = "N")]
    rlimit_nofile: Option<u64>,

    /// The largest file the VM may write, in bytes or with a suffix (RLIMIT_FSIZE).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    rlimit_fsize: Option<u64>,

    #[command(flatten)]
    run: RunArgs,
}

/// A size in bytes: `4096`, `512K`, `64M`, `2G`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let shift = match t[split..].to_ascii_lowercase().as_str() {
        "" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        unit => return Err(format!("unknown unit '{unit}' (use K, M or G)")),
    };
    t[..split]
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{s}' is not a size"))
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if (0.01..=1024.0).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a number of CPUs between 0.01 and 1024"
        )),
    }
}

/// `fennec jail`; `verbose` is the count of `-v` given, passed on to the jailed fennec.
pub fn jail(args: &JailArgs, verbose: u8) -> ExitCode {
    let run = &args.run;
    let config = match run.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fennec jail: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !run.allow_path.is_empty() {
        eprintln!("fennec jail: --allow-path names host paths, which a jailed VM cannot see");
        return ExitCode::from(2);
    }
    let api_socket = match run.api_socket.as_deref().map(|p| p.file_name()) {
        None => None,
        Some(Some(name)) => Some(name.to_string_lossy().into_owned()),
        Some(None) => {
            eprintln!("fennec jail: --api-socket needs a file name (made in the jail's root)");
            return ExitCode::from(2);
        }
    };
    let mut run_args: Vec<OsString> = vec![
        "--id".into(),
        run.id.clone().into(),
        "--seccomp-filter".into(),
        run.seccomp_filter.to_string().into(),
    ];
    if run.reset_status != 0 {
        run_args.extend(["--reset-status".into(), run.reset_status.to_string().into()]);
    }
    // The same -v for the jailed fennec.
    if verbose > 0 {
        run_args.push(format!("-{}", "v".repeat(usize::from(verbose))).into());
    }
    let spec = JailSpec {
        id: run.id.clone(),
        uid: args.uid,
        gid: args.gid,
        base: args.base.clone(),
        netns: args.netns.clone(),
        limits: Limits {
            cpus: args.cpus,
            memory_max: args.memory_max,
            pids_max: args.pids_max,
            nofile: args.rlimit_nofile,
            fsize: args.rlimit_fsize,
        },
        config: config.boot_source.is_some().then_some(config),
        api_socket,
        run_args,
        jailer: None,
    };
    let root = spec.base.join(&spec.id).join("root");
    if let Some(name) = &spec.api_socket {
        log::warn!("The jail's control socket is {}", root.join(name).display());
    }
    match jail::run(&spec) {
        Ok(Ended::Exited(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Ok(Ended::Killed(signal)) => {
            eprintln!("fennec jail: the VM's process was killed by signal {signal}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fennec jail: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sizes_and_cpus_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12T").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
