//! `fennec run`'s flags, and the VM configuration they make.

use std::path::PathBuf;

use clap::{Args, FromArgMatches};

use fennec::config::{
    BlockConfig, BootSourceConfig, MachineConfig, NetConfig, VmConfig, VsockConfig, MAX_MEM_MIB,
    MIN_MEM_MIB,
};
use fennec::seccomp::SeccompLevel;

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(true)
    .args(["kernel", "config_file", "api_socket", "restore", "from_checkpoint"]))]
pub struct RunArgs {
    /// Kernel image: ELF vmlinux (entered through PVH if it has the note, else the 64-bit
    /// protocol) or bzImage.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Read the whole VM configuration from a JSON file in Firecracker's config-file format
    /// (boot-source, machine-config, drives, network-interfaces) instead of the flags.
    #[arg(long, value_name = "PATH",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "no_acpi", "disk", "net", "vsock"])]
    pub config_file: Option<PathBuf>,

    /// Restore the VM snapshotted in DIR (its `state` and `memory` files, written by `fennec
    /// ctl snapshot-vm` or PUT /snapshot/create) instead of booting one: it goes on where it
    /// was, with the drives and network interfaces it had.
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "no_acpi", "disk", "net", "vsock", "config_file"])]
    pub restore: Option<PathBuf>,

    /// Restore checkpoint NAME (taken with `fennec ctl checkpoint NAME`) as a new VM: every
    /// disk cloned from the checkpoint's snapshot as NEWNAME/DISK in the store (--store), then
    /// the VM goes on from the checkpoint on them. Each run with another --vm is another
    /// independent copy.
    #[arg(long, value_name = "NAME", requires = "vm",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "no_acpi", "disk", "net", "vsock", "config_file", "restore"])]
    pub from_checkpoint: Option<String>,

    /// The new VM's name for --from-checkpoint (its disks are NAME/DISK in the store).
    #[arg(long, value_name = "NAME", requires = "from_checkpoint")]
    pub vm: Option<String>,

    /// The image store of --from-checkpoint (default $FENNEC_STORE, else
    /// dir:/var/lib/fennec/images).
    #[arg(long, value_name = "SPEC", requires = "from_checkpoint")]
    pub store: Option<String>,

    /// Serve the control socket (HTTP + JSON, Firecracker's API) at PATH, mode 0600. A stale
    /// socket there is replaced; a live one is refused.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// The instance ID the control socket reports.
    #[arg(long, value_name = "ID", default_value = "fennec")]
    pub id: String,

    /// Initramfs to load.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line. fennec appends console=ttyS0 and reboot=k unless it names a
    /// console= or reboot= of its own.
    #[arg(long, value_name = "STR", default_value = fennec::config::DEFAULT_BOOT_ARGS)]
    pub cmdline: String,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = fennec::config::DEFAULT_VCPUS,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(fennec_boot::layout::MAX_VCPUS)))]
    pub vcpus: u8,

    /// Guest memory, in MiB, or with a suffix: 512M, 2G.
    #[arg(long, value_name = "MIB", default_value = "128", value_parser = parse_mib)]
    pub memory: usize,

    /// Describe the machine only in the MP table and on the kernel command line, without ACPI
    /// tables. By default the guest gets both: distribution kernels read ACPI (their CPUs,
    /// virtio devices, power button), kernels built without ACPI read the others.
    #[arg(long)]
    pub no_acpi: bool,

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
    pub disk: Vec<BlockConfig>,

    /// A virtio-net interface; repeat for more. The guest sees them as eth0, eth1, ... in the
    /// order given. Its host side is one of: `tap=NAME`, an existing TAP (`ip tuntap add tap0
    /// mode tap && ip link set tap0 up`); `bridge=BR`, a TAP fennec makes on bridge BR and
    /// removes with the VM (needs root); `user`, user-mode networking through passt (no root:
    /// DHCP, DNS and outbound connections through the host), with
    /// `hostfwd=tcp::HOSTPORT-:GUESTPORT` (or udp) for each host port forwarded to the guest.
    /// `mac=` sets the guest's MAC address (default: derived from the TAP name, or the ID in
    /// user mode, the same on every run; on a bridge a new one each start); `id=` names the
    /// interface (default net0, net1, ...).
    #[arg(long, value_name = "tap=NAME|bridge=BR|user[,hostfwd=..][,mac=MAC][,id=ID]",
          value_parser = |s: &str| NetConfig::from_cli(s, ""))]
    pub net: Vec<NetConfig>,

    /// A virtio-vsock device with guest context ID N (3 or more). Host programs reach guest
    /// port P by connecting to the Unix socket PATH and writing `CONNECT P\n` (the answer is
    /// `OK <host port>\n`, then the stream); the guest's connections to CID 2 port P reach
    /// whatever listens at `PATH_P`. Firecracker's protocol, so its tools work unchanged.
    #[arg(long, value_name = "cid=N,uds=PATH",
          value_parser = |s: &str| VsockConfig::from_cli(s))]
    pub vsock: Option<VsockConfig>,

    /// With --restore or --from-checkpoint: the restored VM's vsock device listens at PATH
    /// instead of the snapshot's socket (two copies of one snapshot cannot share one).
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: Option<PathBuf>,

    /// What fennec's syscall filters do with a syscall outside a thread's allowlist: `kill`
    /// ends fennec with SIGSYS; `log` lets the call through and has the kernel log it
    /// (`audit: type=1326 ... syscall=N` in dmesg), to find what a new code path needs; `off`
    /// installs no filters. Every thread has one allowlist per role (vCPU, VMM event loop,
    /// control socket, ...), installed before it runs anything a guest can reach.
    #[arg(long, value_name = "LEVEL", default_value_t = SeccompLevel::Kill)]
    pub seccomp_filter: SeccompLevel,

    /// No longer needed, and ignored (kept so that existing command lines run): the files
    /// the control socket's requests name open wherever they are; the VM's guest-facing
    /// threads open none.
    #[arg(long, value_name = "DIR", hide = true)]
    pub allow_path: Vec<PathBuf>,

    /// Write the VM's counters to this file or FIFO (made if missing), one JSON object a
    /// line: once the guest runs, and when it ends (Firecracker's --metrics-path).
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,

    /// A JSON object the guest's metadata service (MMDS) starts with. Which interfaces reach
    /// the service, at which address, is the configuration's `mmds-config` (--config-file or
    /// PUT /mmds/config); the control socket's PUT and PATCH /mmds change the document.
    #[arg(long, value_name = "PATH")]
    pub metadata: Option<PathBuf>,

    /// The largest metadata document, in bytes of JSON.
    #[arg(long, value_name = "BYTES", default_value_t = fennec::mmds::DEFAULT_SIZE_LIMIT)]
    pub mmds_size_limit: usize,

    /// The exit status when the guest resets (a reboot, a triple fault, or a kernel panic
    /// under panic=N) instead of powering off. Both end fennec with 0 by default, as they end
    /// Firecracker; give another status to tell them apart.
    #[arg(long, value_name = "STATUS", default_value_t = 0)]
    pub reset_status: u8,
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
    pub fn from_flags(flags: &[String]) -> Result<RunArgs, clap::Error> {
        let command = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
        RunArgs::from_arg_matches(&command.try_get_matches_from(flags)?)
    }

    /// The configuration from --config-file, or from the flags (without a kernel, an empty
    /// one the control socket fills in).
    pub fn config(&self) -> Result<VmConfig, String> {
        if self.vsock_uds.is_some() && self.restore.is_none() && self.from_checkpoint.is_none() {
            return Err(
                "--vsock-uds moves a restored VM's vsock socket: it goes with \
                        --restore or --from-checkpoint (a new VM takes --vsock cid=N,uds=PATH)"
                    .to_string(),
            );
        }
        if let Some(path) = &self.config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            return fennec::config::json::vm_config(&text)
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
            vsock: self.vsock.clone(),
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
}
