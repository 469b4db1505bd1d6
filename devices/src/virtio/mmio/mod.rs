//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2): the register block a driver uses to
//! negotiate features, set up queues and drive the device status, with the device's
//! configuration space at offset 0x100.
//!
//! Every register access is a guest action and so untrusted: wrong widths and unaligned offsets
//! read as 0 and are ignored, writes out of their phase (features after FEATURES_OK, queue
//! addresses after DRIVER_OK) are ignored, and a device that cannot start is marked
//! DEVICE_NEEDS_RESET rather than left half-running. Writing 0 to Status resets the device for
//! real: its queues, its interrupt status and everything negotiated are forgotten.
//!
//! - `transport`: the registers and what each access does ([`MmioTransport`]);
//! - `interrupt`: InterruptStatus and the transport's one line ([`MmioInterrupt`]);
//! - `state`: saving and restoring the transport for snapshots;
//! - `fuzzing`: arbitrary register accesses (fuzz target and property test).

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod interrupt;
mod saved;
mod state;
mod transport;

pub use interrupt::MmioInterrupt;
pub use saved::{MmioState, SavedQueue};
pub use transport::{reg, MmioTransport, MAGIC_VALUE, MMIO_LEN, VENDOR_ID, VERSION};

#[cfg(test)]
mod tests;
