//! What a [`super::VmHandle`] asks of the VM's controller thread, and what it answers.

use std::sync::mpsc;

use vm_memory::GuestMemoryMmap;

use super::Error;
use crate::snapshot::MachineState;

/// A request to the controller thread, with where to send the answer: the text of a
/// [`Command::Describe`], the state of a [`Command::Snapshot`], empty for the others, or why it
/// failed.
pub(super) struct CommandMsg {
    pub command: Command,
    pub reply: mpsc::Sender<Result<Reply, Error>>,
}

/// What the controller answers.
pub(super) enum Reply {
    Text(String),
    /// The machine's state and guest memory (which the caller writes to the memory file).
    Snapshot(Box<(MachineState, GuestMemoryMmap)>),
}

/// What a [`super::VmHandle`] asks of the controller.
#[derive(Clone, Copy, Debug)]
pub(super) enum Command {
    Pause,
    Resume,
    Describe,
    /// Press the ACPI power button, if the guest listens to it.
    PowerButton,
    /// Read the paused VM's whole state.
    Snapshot,
}
