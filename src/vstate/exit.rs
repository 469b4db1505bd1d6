//! How a guest stopped running.

/// Why a guest stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine (i8042 reset, triple fault): Linux's `reboot`.
    Reset,
    /// The guest powered the machine off.
    PowerOff,
    /// The guest's kernel said it panicked (through the pvpanic device, which ACPI describes):
    /// the VM ends there, before `panic=N` would reset it.
    Panicked,
    /// Every vCPU halted with interrupts disabled: the guest can never run again.
    Halted,
    /// The host stopped the VM.
    Stopped,
    /// A vCPU failed.
    VcpuFailed {
        /// Which vCPU.
        index: u8,
        /// What happened.
        message: String,
    },
}

impl ExitReason {
    /// Whether the guest ended the way a guest should: reset, power-off, or stopped by the host.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::Reset | ExitReason::PowerOff | ExitReason::Stopped
        )
    }
}

impl ExitReason {
    /// A stable one-word name: `reset`, `power_off`, `panicked`, `halted`, `stopped`,
    /// `vcpu_failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::Reset => "reset",
            ExitReason::PowerOff => "power_off",
            ExitReason::Panicked => "panicked",
            ExitReason::Halted => "halted",
            ExitReason::Stopped => "stopped",
            ExitReason::VcpuFailed { .. } => "vcpu_failed",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reset => write!(
                f,
                "the guest reset (a reboot, a triple fault, or a kernel panic under panic=N)"
            ),
            ExitReason::PowerOff => write!(f, "the guest powered off"),
            ExitReason::Panicked => write!(f, "the guest's kernel panicked"),
            ExitReason::Halted => write!(
                f,
                "the guest halted with interrupts disabled on every vCPU and can never run again"
            ),
            ExitReason::Stopped => write!(f, "stopped by the host"),
            ExitReason::VcpuFailed { index, message } => {
                write!(f, "vCPU {index} failed: {message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_reason_clean_only_for_reset_poweroff_stop() {
        assert!(ExitReason::Reset.is_clean());
        assert!(ExitReason::PowerOff.is_clean());
        assert!(ExitReason::Stopped.is_clean());
        assert!(!ExitReason::Halted.is_clean());
        assert!(!ExitReason::Panicked.is_clean());
    }
}
