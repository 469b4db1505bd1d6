//! Building, starting and ending a VM.
//!
//! A VM is built in four steps ([`Vm::new`], in `build.rs`): **create** the machine (KVM VM,
//! guest memory, irqchip, vCPUs), **attach** its devices (the device manager assigns their
//! slots, ports and interrupts), **describe** it to the guest from what was attached (the
//! command line's virtio-mmio entries, the MP table), then **boot** a kernel into it. Every step
//! that can fail because of the configuration happens there. [`Vm::start`]
//! (`controller.rs`) only starts threads: one per vCPU, and the controller thread with the
//! event loop, which runs until the guest ends and reports an [`ExitReason`]. A [`VmHandle`]
//! (`handle.rs`) pauses, resumes, describes, shuts down and stops the VM and reads its
//! counters.

mod build;
mod command;
mod controller;
mod devices;
mod error;
mod handle;
mod records;
mod restore;

pub use crate::vstate::exit::ExitReason;
pub use build::{open, Vm};
pub use devices::{DriveInfo, NetInfo};
pub use error::{Error, SaveStateError};
pub use handle::{Stopper, VmHandle, VmMetrics, VmState};
pub use records::DeviceMetrics;
