//! Firecracker's command-line flags, parsed the way Firecracker parses them, for `fennec` started
//! as `firecracker` (a symlink) or as `fennec firecracker ...`.
//!
//! Firecracker's parser takes `--name value` and `--flag`, nothing else: no short options, no
//! `--name=value`, a value may not start with `--`, a flag given twice is an error, `--help` and
//! `--version` win over everything. Its errors read as Firecracker's and exit with its status
//! for argument errors, so an engine that checks them sees what it expects.

use std::collections::BTreeMap;
use std::fmt;

/// Firecracker's exit status for a command line it cannot parse (`FcExitCode::ArgParsing`).
pub const EXIT_ARG_PARSING: u8 = 153;
/// Firecracker's exit status for a configuration it cannot use (`FcExitCode::BadConfiguration`).
pub const EXIT_BAD_CONFIGURATION: u8 = 152;

/// One flag: its name, whether it takes a value, its default, what it needs and excludes,
/// whether it must be given and whether it may be given more than once.
#[derive(Debug, PartialEq, Eq)]
pub struct Flag {
    pub name: &'static str,
    pub takes_value: bool,
    pub default: Option<&'static str>,
    pub requires: Option<&'static str>,
    pub forbids: Option<&'static str>,
    pub required: bool,
    pub multiple: bool,
    pub help: &'static str,
}

/// A flag with no default, needing and excluding nothing, optional, at most once.
pub const fn flag(name: &'static str, takes_value: bool, help: &'static str) -> Flag {
    Flag {
        name,
        takes_value,
        default: None,
        requires: None,
        forbids: None,
        required: false,
        multiple: false,
        help,
    }
}

/// Every flag Firecracker's binary takes, with what fennec does with it.
const FLAGS: &[Flag] = &[
    Flag {
        default: Some("/run/firecracker.socket"),
        ..flag("api-sock", true, "Path to the control socket.")
    },
    Flag {
        default: Some("anonymous-instance"),
        ..flag("id", true, "MicroVM unique identifier.")
    },
    Flag {
        forbids: Some("no-seccomp"),
        ..flag(
            "seccomp-filter",
            true,
            "A custom seccomp filter file (refused: fennec's filters are per thread role).",
        )
    },
    Flag {
        forbids: Some("seccomp-filter"),
        ..flag(
            "no-seccomp",
            false,
            "Run without syscall filters. Not recommended.",
        )
    },
    flag(
        "start-time-us",
        true,
        "Process start time (wall clock, microseconds).",
    ),
    flag(
        "start-time-cpu-us",
        true,
        "Process start CPU time (microseconds).",
    ),
    flag(
        "parent-cpu-time-us",
        true,
        "Parent process CPU time (microseconds).",
    ),
    flag(
        "config-file",
        true,
        "The microVM configuration, in JSON (Firecracker's format).",
    ),
    flag(
        "metadata",
        true,
        "The metadata service's (MMDS) starting document, a JSON file.",
    ),
    Flag {
        requires: Some("config-file"),
        ..flag(
            "no-api",
            false,
            "Serve no control socket: boot the --config-file VM.",
        )
    },
    flag("log-path", true, "A file or FIFO for the log."),
    flag(
        "level",
        true,
        "Log level: Error, Warning, Info, Debug, Trace or Off.",
    ),
    flag("module", true, "Log only this module's records."),
    flag("show-level", false, "Put the level in each log line."),
    flag(
        "show-log-origin",
        false,
        "Put the source file and line in each log line.",
    ),
    flag(
        "metrics-path",
        true,
        "A file or FIFO for metrics, one JSON object a line.",
    ),
    flag(
        "boot-timer",
        false,
        "Log the guest's boot time (fennec always does).",
    ),
    flag("version", false, "Print the version."),
    flag(
        "snapshot-version",
        false,
        "Print the snapshot format version fennec writes.",
    ),
    flag(
        "describe-snapshot",
        true,
        "Print the format version of a snapshot's state file.",
    ),
    Flag {
        default: Some("51200"),
        ..flag(
            "http-api-max-payload-size",
            true,
            "Largest API request body, in bytes.",
        )
    },
    flag("mmds-size-limit", true, "Largest MMDS store, in bytes."),
    flag(
        "enable-pci",
        false,
        "Enable PCIe (refused: fennec's devices are virtio-mmio).",
    ),
];

/// Why a command line is refused, in Firecracker's words.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgError {
    /// A flag needs another that was not given.
    MissingArgument(String),
    /// A flag that takes a value got none.
    MissingValue(String),
    /// Not a flag Firecracker has.
    UnexpectedArgument(String),
    /// Given twice.
    DuplicateArgument(String),
    /// Given with a flag it excludes.
    ForbiddenArgument(String, String),
    /// Not UTF-8 (Firecracker reads its arguments as strings).
    NotUnicode(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::MissingArgument(a) => write!(f, "Argument '{a}' required, but not found."),
            ArgError::MissingValue(a) => {
                write!(
                    f,
                    "The argument '{a}' requires a value, but none was supplied."
                )
            }
            ArgError::UnexpectedArgument(a) => write!(
                f,
                "Found argument '{a}' which wasn't expected, or isn't valid in this context."
            ),
            ArgError::DuplicateArgument(a) => {
                write!(f, "The argument '{a}' was provided more than once.")
            }
            ArgError::NotUnicode(a) => write!(f, "The argument '{a}' is not valid UTF-8."),
            ArgError::ForbiddenArgument(a, b) => {
                write!(
                    f,
                    "Argument '{a}' cannot be used together with argument '{b}'."
                )
            }
        }
    }
}

/// What a parsed command line holds: the flags given (with a value, or `None` for a flag
/// without), and the defaults of those not given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FcArgs {
    flags: &'static [Flag],
    given: BTreeMap<&'static str, Vec<Option<String>>>,
    /// `--help` was given: nothing else was parsed.
    pub help: bool,
    /// `--version` was given: nothing else was parsed.
    pub version: bool,
}

impl FcArgs {
    /// The value of `name`, given or default.
    pub fn value(&self, name: &str) -> Option<&str> {
        match self.given.get(name) {
            Some(v) => v.last().and_then(|v| v.as_deref()),
            None => self
                .flags
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.default),
        }
    }

    /// Every value given for `name` (a flag that may be repeated), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.given
            .get(name)
            .map(|v| v.iter().filter_map(|v| v.as_deref()).collect())
            .unwrap_or_default()
    }

    /// Whether `name` was given.
    pub fn present(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }

    /// The flags given, for the log.
    pub fn given(&self) -> impl Iterator<Item = &&'static str> {
        self.given.keys()
    }
}

/// Parses `args` (without the program name) as Firecracker does.
pub fn parse(args: &[String]) -> Result<FcArgs, ArgError> {
    parse_with(FLAGS, args)
}

/// Parses `args` against `flags` with Firecracker's rules (its jailer's too). Everything after
/// a bare `--` is left alone.
pub fn parse_with(flags: &'static [Flag], args: &[String]) -> Result<FcArgs, ArgError> {
    let args = match args.iter().position(|a| a == "--") {
        Some(end) => &args[..end],
        None => args,
    };
    if args.iter().any(|a| a == "--help") {
        return Ok(FcArgs {
            flags,
            help: true,
            ..FcArgs::default()
        });
    }
    if args.iter().any(|a| a == "--version") {
        return Ok(FcArgs {
            flags,
            version: true,
            ..FcArgs::default()
        });
    }
    let mut out = FcArgs {
        flags,
        ..FcArgs::default()
    };
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let name = word
            .strip_prefix("--")
            .ok_or_else(|| ArgError::UnexpectedArgument(word.clone()))?;
        let flag = flags
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| ArgError::UnexpectedArgument(name.to_string()))?;
        if out.given.contains_key(flag.name) && !flag.multiple {
            return Err(ArgError::DuplicateArgument(flag.name.to_string()));
        }
        let value = match flag.takes_value {
            true => Some(
                words
                    .next()
                    .filter(|v| !v.starts_with("--"))
                    .ok_or_else(|| ArgError::MissingValue(flag.name.to_string()))?
                    .clone(),
            ),
            false => None,
        };
        out.given.entry(flag.name).or_default().push(value);
    }
    if let Some(missing) = flags
        .iter()
        .find(|f| f.required && !out.given.contains_key(f.name))
    {
        return Err(ArgError::MissingArgument(missing.name.to_string()));
    }
    for flag in flags.iter().filter(|f| out.given.contains_key(f.name)) {
        if let Some(needed) = flag.requires.filter(|n| !out.given.contains_key(n)) {
            return Err(ArgError::MissingArgument(needed.to_string()));
        }
        if let Some(excluded) = flag.forbids.filter(|n| out.given.contains_key(n)) {
            return Err(ArgError::ForbiddenArgument(
                flag.name.to_string(),
                excluded.to_string(),
            ));
        }
    }
    Ok(out)
}

/// `--help`: every flag, one a line, as Firecracker lists them.
pub fn help() -> String {
    help_for(FLAGS)
}

/// `--help` for `flags`.
pub fn help_for(flags: &[Flag]) -> String {
    let mut out = String::new();
    for f in flags {
        out += &format!("--{}", f.name);
        if f.takes_value {
            out += &format!(" <{}>", f.name);
        }
        out += &format!(": {}\n", f.help);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn test_values_flags_and_defaults() {
        let a = parse(&args(&[
            "--api-sock",
            "/tmp/s",
            "--boot-timer",
            "--level",
            "Debug",
        ]))
        .unwrap();
        assert_eq!(a.value("api-sock"), Some("/tmp/s"));
        assert_eq!(a.value("id"), Some("anonymous-instance"));
        assert_eq!(a.value("http-api-max-payload-size"), Some("51200"));
        assert!(a.present("boot-timer") && !a.present("no-api"));
        assert_eq!(a.value("level"), Some("Debug"));
        assert_eq!(
            parse(&[]).unwrap().value("api-sock"),
            Some("/run/firecracker.socket")
        );
    }

    #[test]
    fn test_errors_read_as_firecrackers() {
        let err = |w: &[&str]| parse(&args(w)).unwrap_err().to_string();
        assert_eq!(
            err(&["--api-socket", "x"]),
            "Found argument 'api-socket' which wasn't expected, or isn't valid in this context."
        );
        assert_eq!(
            err(&["-v"]),
            "Found argument '-v' which wasn't expected, or isn't valid in this context."
        );
        assert_eq!(
            err(&["--id"]),
            "The argument 'id' requires a value, but none was supplied."
        );
        assert_eq!(
            err(&["--id", "--no-api"]),
            "The argument 'id' requires a value, but none was supplied."
        );
        assert_eq!(
            err(&["--id", "a", "--id", "b"]),
            "The argument 'id' was provided more than once."
        );
        assert_eq!(
            err(&["--no-api"]),
            "Argument 'config-file' required, but not found."
        );
        assert!(err(&["--no-seccomp", "--seccomp-filter", "f"]).contains("cannot be used together"));
        // `--api-sock=x` is not Firecracker's syntax either.
        assert!(err(&["--api-sock=/tmp/s"]).contains("'api-sock=/tmp/s'"));
    }

    #[test]
    fn test_help_and_version_win_over_everything() {
        let a = parse(&args(&["--nonsense", "--help"])).unwrap();
        assert!(a.help && !a.version);
        let a = parse(&args(&["--id", "--version"])).unwrap();
        assert!(a.version);
        assert!(help().contains("--api-sock <api-sock>: "));
        assert_eq!(help().lines().count(), FLAGS.len());
    }

    #[test]
    fn test_words_after_a_bare_separator_are_not_parsed() {
        let a = parse(&args(&["--id", "x", "--", "--whatever"])).unwrap();
        assert_eq!(a.value("id"), Some("x"));
    }
}
