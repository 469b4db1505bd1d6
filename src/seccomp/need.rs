//! A syscall a device needs in a thread role, beyond the role's base allowlist: each device
//! lists its own next to its configuration ([`crate::config::VirtioDeviceConfig::SYSCALLS`]),
//! and [`super::rules`] adds them to the roles.

use super::role::Role;

/// What is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// The syscall, whatever its arguments.
    Any(i64),
    /// `ioctl` with this request number.
    Ioctl(u64),
    /// The syscall with its first two arguments exactly these (`socket`'s domain and type).
    Args2(i64, u64, u64),
}

/// A syscall a device makes in a thread of `role`, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallNeed {
    /// The thread role that makes it.
    pub role: Role,
    /// The call.
    pub call: Call,
    /// Who needs it, for a reader of the allowlist.
    pub why: &'static str,
}

impl SyscallNeed {
    /// `nr`, any arguments, in `role`.
    pub const fn any(role: Role, nr: i64, why: &'static str) -> Self {
        SyscallNeed {
            role,
            call: Call::Any(nr),
            why,
        }
    }

    /// `nr(a0, a1, ...)` in `role`: only with these first two arguments.
    pub const fn args2(role: Role, nr: i64, a0: u64, a1: u64, why: &'static str) -> Self {
        SyscallNeed {
            role,
            call: Call::Args2(nr, a0, a1),
            why,
        }
    }

    /// `ioctl(_, request, ...)` in `role`.
    pub const fn ioctl(role: Role, request: u64, why: &'static str) -> Self {
        SyscallNeed {
            role,
            call: Call::Ioctl(request),
            why,
        }
    }
}
