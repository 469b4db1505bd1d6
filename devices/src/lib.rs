//! The device model of fennec: the buses the vCPUs dispatch port and MMIO accesses to, and the
//! devices behind them.
//!
//! - [`bus`]: [`bus::BusDevice`] and the address-range [`bus::Bus`].
//! - [`legacy`]: the 16550 serial console (on vm-superio) and the i8042 (reset, Ctrl-Alt-Del).
//! - [`virtio`]: the virtio-mmio transport and the virtio devices (block).
//! - [`guest_log`]: warnings a guest can repeat at will, logged a few times per call site.
//!
//! Devices raise interrupts through [`vm_superio::Trigger`] implementations such as
//! [`EventFdTrigger`]; the VMM connects those eventfds to KVM irqfds. This crate never sees a
//! KVM file descriptor.
//!
//! The crate has no `unsafe` code except `virtio::block::disk`, which moves data between disk
//! images and guest memory with `preadv`/`pwritev`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::io;

use vmm_sys_util::eventfd::EventFd;

pub mod bounded;
pub mod bus;
pub mod guest_log;
pub mod legacy;
pub mod rate_limiter;
pub mod virtio;

pub use vm_superio::Trigger;

/// A [`Trigger`] that signals an eventfd: an irqfd's, or one the VMM polls.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        EventFdTrigger(evt)
    }

    /// The underlying eventfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Locks `m`, recovering the guard if another thread panicked while holding it: device state
/// stays usable, and the panic itself is reported where it happened.
pub fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
