//! A configuration's defaults and limits.

/// Kernel command line used when the user gives none.
pub const DEFAULT_BOOT_ARGS: &str =
    "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd";

/// Default number of vCPUs.
pub const DEFAULT_VCPUS: u8 = 1;
/// Default guest memory in MiB.
pub const DEFAULT_MEM_MIB: usize = 128;
/// Smallest guest memory fennec accepts: the legacy area, the boot structures and a kernel.
pub const MIN_MEM_MIB: usize = 2;
/// Largest guest memory fennec accepts (1 TiB).
pub const MAX_MEM_MIB: usize = 1 << 20;
