//! `fennec jail`: runs one `fennec run` confined the way Firecracker's jailer confines
//! Firecracker, as one command.
//!
//! As root, the jail:
//!
//! 1. makes the VM's directory `BASE/ID/root` (owned by the VM's uid, mode 0700) and puts the
//!    VM's files in it, each through a descriptor of the directory it goes in, never through a
//!    link an earlier VM's uid could have planted there: the kernel and initrd copied, each drive's image bind-mounted (never
//!    copied; the image is given to the VM's uid), `/dev/kvm` and, with network interfaces,
//!    `/dev/net/tun` as device nodes of that uid, and the configuration as `vm.json`;
//! 2. with limits, makes the cgroup `fennec/ID` (cgroup v2) with `cpu.max`, `memory.max`,
//!    `pids.max`;
//! 3. starts the VM's process in new mount and PID namespaces (and, with `--netns`, in an
//!    existing network namespace), which joins the cgroup, bind-mounts the drives (no `/proc`:
//!    the VM needs none), sets the rlimits, `pivot_root`s into the directory, drops every capability, the
//!    supplementary groups and root's uid and gid, sets `no_new_privs`, closes every inherited
//!    file descriptor but stdin, stdout and stderr, and executes this same fennec binary (the
//!    binary is static: nothing else of the host is needed) as
//!    `fennec run --config-file /vm.json`, with its own syscall filters and Landlock;
//! 4. waits for it, passes SIGTERM, SIGINT and SIGHUP on to it, and when it ends gives each
//!    drive's image back to its owner and removes the directory and the cgroup.
//!
//! Every step that can fail says which and why; the VM then never starts.
//!
//! As Firecracker's `jailer` ([`JailerMode`], `src/jailer_mode.rs`), the same steps follow
//! that program's contract instead: the directory is `BASE/EXEC/ID/root` and may exist already
//! (engines put the VM's files there first), the program run is the `--exec-file` (fennec as
//! `firecracker`, or any other) with the caller's arguments and `--id`, cgroup files are
//! written as given, and nothing is removed afterwards. Without `--new-pid-ns` the jailer's
//! own process becomes the program, so its PID is the VM's; with it, the program is PID 1 of
//! a new PID namespace, its PID goes to `root/EXEC.pid`, and the jailer exits.

mod cgroup;
mod child;
mod files;
mod root;
mod run;
mod spec;

pub use cgroup::CGROUP_ROOT;
pub use run::run;
pub use spec::{Ended, JailError, JailSpec, JailerMode, Limits, DEFAULT_BASE};

#[cfg(test)]
mod tests;
