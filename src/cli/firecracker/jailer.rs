//! fennec as a drop-in for Firecracker's `jailer`: started under that name (a symlink) or as
//! `fennec jailer ...`, it takes the jailer's flags with their meaning and confines the
//! `--exec-file` (fennec as `firecracker`) the way [`fennec::jail`] confines a VM, in the
//! jailer's layout and process model.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use fennec::jail::{self, Ended, JailSpec, JailerMode, Limits};

use super::args::{self as fc_args, flag, ArgError, FcArgs, Flag};

/// The jailer's flags.
const FLAGS: &[Flag] = &[
    Flag {
        required: true,
        ..flag("id", true, "Jail ID: 1 to 64 letters, digits or '-'.")
    },
    Flag {
        required: true,
        ..flag(
            "exec-file",
            true,
            "The program to run (its file name must contain \"firecracker\").",
        )
    },
    Flag {
        required: true,
        ..flag("uid", true, "The user the program runs as.")
    },
    Flag {
        required: true,
        ..flag("gid", true, "The group the program runs as.")
    },
    Flag {
        default: Some("/srv/jailer"),
        ..flag(
            "chroot-base-dir",
            true,
            "Where the jail is made, as <base>/<exec file name>/<id>/root.",
        )
    },
    flag("netns", true, "A network namespace to join (a path)."),
    flag(
        "daemonize",
        false,
        "Start a new session and use /dev/null as stdin, stdout and stderr.",
    ),
    flag(
        "new-pid-ns",
        false,
        "Run the program in a new PID namespace; its PID goes to <root>/<exec file name>.pid.",
    ),
    Flag {
        multiple: true,
        ..flag(
            "cgroup",
            true,
            "A cgroup file to write, <file>=<value> (memory.max=268435456); repeatable.",
        )
    },
    Flag {
        default: Some("1"),
        ..flag(
            "cgroup-version",
            true,
            "The cgroup version of --cgroup: 2 (fennec writes cgroup v2 only).",
        )
    },
    flag(
        "parent-cgroup",
        true,
        "The cgroup the jail's goes under (default: the exec file's name).",
    ),
    Flag {
        multiple: true,
        ..flag(
            "resource-limit",
            true,
            "fsize=<bytes> or no-file=<count>; repeatable.",
        )
    },
    flag("version", false, "Print the version."),
];

/// Whether this process was started under the jailer's name.
pub fn started_as_jailer(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "jailer")
}

/// Runs `fennec` as `jailer ARGS` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Result<Vec<String>, _> = args.into_iter().map(|a| a.into_string()).collect();
    let args = match args {
        Ok(args) => args,
        Err(arg) => return refuse(ArgError::NotUnicode(arg.to_string_lossy().into_owned())),
    };
    let parsed = match fc_args::parse_with(FLAGS, &args) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    if parsed.help {
        println!(
            "Jailer v{} (fennec {})\n",
            fennec::api::FIRECRACKER_VERSION,
            env!("CARGO_PKG_VERSION")
        );
        print!("{}", fc_args::help_for(FLAGS));
        return ExitCode::SUCCESS;
    }
    if parsed.version {
        println!("Jailer v{}\n", fennec::api::FIRECRACKER_VERSION);
        return ExitCode::SUCCESS;
    }
    // Everything after `--` is the program's.
    let program_args = args
        .iter()
        .position(|a| a == "--")
        .map(|i| args[i + 1..].iter().map(OsString::from).collect())
        .unwrap_or_default();
    let spec = match spec(&parsed, program_args) {
        Ok(spec) => spec,
        Err(message) => {
            eprintln!("Jailer error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match jail::run(&spec) {
        Ok(Ended::Exited(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Ok(Ended::Killed(signal)) => {
            eprintln!("Jailer error: the program was killed by signal {signal}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("Jailer error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn refuse(e: ArgError) -> ExitCode {
    eprintln!("Jailer error: Arguments parsing error: {e}\n\nFor more information try --help.");
    ExitCode::FAILURE
}

/// The jail the flags mean.
fn spec(fc: &FcArgs, args: Vec<OsString>) -> Result<JailSpec, String> {
    let value = |name: &str| fc.value(name).unwrap_or_default();
    let id = value("id").to_string();
    if !(1..=64).contains(&id.len()) || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "Invalid instance ID {id:?}: 1 to 64 letters, digits or '-'"
        ));
    }
    let number = |name: &str| {
        value(name)
            .parse::<u32>()
            .map_err(|_| format!("Invalid --{name} {:?}: not a number", value(name)))
    };
    let exec_file = PathBuf::from(value("exec-file"));
    if !exec_file.is_file() {
        return Err(format!("--exec-file {} is not a file", exec_file.display()));
    }
    let name = exec_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains("firecracker") {
        return Err(format!(
            "Invalid --exec-file name {name:?}: it must contain \"firecracker\" (for fennec, a \
             symlink named firecracker)"
        ));
    }
    let mut limits = Limits::default();
    for limit in fc.values("resource-limit") {
        let parsed = limit
            .split_once('=')
            .and_then(|(k, v)| Some((k, v.parse::<u64>().ok()?)));
        match parsed {
            Some(("fsize", n)) => limits.fsize = Some(n),
            Some(("no-file", n)) => limits.nofile = Some(n),
            _ => {
                return Err(format!(
                    "Invalid --resource-limit {limit:?}: use fsize=<bytes> or no-file=<count>"
                ))
            }
        }
    }
    let mut cgroup = Vec::new();
    for setting in fc.values("cgroup") {
        match setting.split_once('=') {
            Some((file, v)) if !file.is_empty() && !v.is_empty() => {
                cgroup.push((file.to_string(), v.to_string()))
            }
            _ => return Err(format!("Invalid --cgroup {setting:?}: use <file>=<value>")),
        }
    }
    match value("cgroup-version") {
        "2" => {}
        "1" if cgroup.is_empty() => {}
        "1" => {
            return Err(
                "cgroup v1 is not supported: fennec writes cgroup v2 files; pass \
                 --cgroup-version 2 (with v2 names: memory.max, cpu.max, pids.max)"
                    .into(),
            )
        }
        other => return Err(format!("Invalid --cgroup-version {other:?}: use 1 or 2")),
    }
    Ok(JailSpec {
        id,
        uid: number("uid")?,
        gid: number("gid")?,
        base: PathBuf::from(value("chroot-base-dir")),
        netns: fc.value("netns").map(PathBuf::from),
        limits,
        config: None,
        api_socket: None,
        run_args: Vec::new(),
        jailer: Some(JailerMode {
            exec_file,
            args,
            new_pid_ns: fc.present("new-pid-ns"),
            daemonize: fc.present("daemonize"),
            parent_cgroup: fc.value("parent-cgroup").map(str::to_string),
            cgroup,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<JailSpec, String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let fc = fc_args::parse_with(FLAGS, &words).map_err(|e| e.to_string())?;
        spec(&fc, vec!["--api-sock".into(), "/run/api.sock".into()])
    }

    fn with(extra: &[&str]) -> Result<JailSpec, String> {
        let dir = std::env::temp_dir().join("fennec-jailer-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("firecracker");
        std::fs::write(&exe, b"").unwrap();
        let mut words = vec![
            "--id",
            "vm-1",
            "--exec-file",
            exe.to_str().unwrap(),
            "--uid",
            "123",
            "--gid",
            "456",
        ];
        words.extend_from_slice(extra);
        let words: Vec<&str> = words.to_vec();
        parse(&words)
    }

    #[test]
    fn test_jailer_flags_make_the_jail() {
        let s = with(&[
            "--cgroup-version",
            "2",
            "--cgroup",
            "memory.max=268435456",
            "--cgroup",
            "cpu.max=50000 100000",
            "--resource-limit",
            "no-file=1024",
            "--resource-limit",
            "fsize=4096",
            "--new-pid-ns",
            "--daemonize",
            "--parent-cgroup",
            "vms",
            "--netns",
            "/run/netns/x",
        ])
        .unwrap();
        assert_eq!((s.id.as_str(), s.uid, s.gid), ("vm-1", 123, 456));
        assert_eq!(s.base, PathBuf::from("/srv/jailer"));
        assert_eq!(s.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!((s.limits.nofile, s.limits.fsize), (Some(1024), Some(4096)));
        let j = s.jailer.unwrap();
        assert!(j.new_pid_ns && j.daemonize);
        assert_eq!(j.parent_cgroup.as_deref(), Some("vms"));
        assert_eq!(
            j.cgroup,
            vec![
                ("memory.max".to_string(), "268435456".to_string()),
                ("cpu.max".to_string(), "50000 100000".to_string())
            ]
        );
        assert_eq!(j.exec_name().unwrap(), "firecracker");
        assert_eq!(
            j.args,
            vec![OsString::from("--api-sock"), "/run/api.sock".into()]
        );
    }

    #[test]
    fn test_jailer_refusals_say_why() {
        let err = |extra: &[&str]| with(extra).unwrap_err();
        assert!(err(&["--cgroup", "memory.max=1"]).contains("--cgroup-version 2"));
        assert!(err(&["--cgroup-version", "3"]).contains("use 1 or 2"));
        assert!(
            err(&["--cgroup-version", "2", "--cgroup", "memory.max"]).contains("<file>=<value>")
        );
        assert!(err(&["--resource-limit", "stack=1"]).contains("fsize=<bytes>"));
        assert!(err(&["--resource-limit", "fsize=lots"]).contains("fsize=<bytes>"));
        assert!(err(&["--id", "x"]).contains("more than once"));
        assert!(err(&["--bogus"]).contains("wasn't expected"));
        let missing = parse(&["--id", "a"]).unwrap_err();
        assert!(
            missing.contains("Argument 'exec-file' required"),
            "{missing}"
        );
        let bad_id = parse(&[
            "--id",
            "a_b",
            "--exec-file",
            "/",
            "--uid",
            "1",
            "--gid",
            "1",
        ]);
        assert!(bad_id.unwrap_err().contains("Invalid instance ID"));
        let not_fc = parse(&[
            "--id",
            "a",
            "--exec-file",
            "/bin/sh",
            "--uid",
            "1",
            "--gid",
            "1",
        ]);
        assert!(not_fc.unwrap_err().contains("must contain \"firecracker\""));
        let uid = with(&[]).map(|_| ());
        assert!(uid.is_ok());
    }
}
