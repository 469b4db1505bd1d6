//! virtio-rng (virtio 1.2, 5.4): the guest's entropy device. Each chain the driver posts is a
//! set of device-writable buffers; the device fills them from the host kernel's random source
//! (`getrandom(2)`) and returns them. Firecracker's `PUT /entropy` adds it, optionally with a
//! rate limiter on bytes and requests.
//!
//! The random bytes come from a [`RandomSource`] the VMM gives (the host's `getrandom(2)`).
//!
//! A chain is filled up to [`MAX_REQUEST`] bytes (the driver asks for what it wants; Linux asks
//! 64 bytes at a time). A chain with a device-readable buffer, or one outside guest memory, is
//! returned unused; a broken queue stops the device until the driver resets it.
//!
//! - `device`: the [`Rng`] device (features, the queue, filling chains);
//! - `event_handler`: its event-loop subscriber;
//! - `metrics`: what it counts.

mod device;
mod event_handler;
mod metrics;

pub use device::{RandomSource, Rng, MAX_REQUEST, QUEUE_SIZE, TYPE_RNG};
pub use metrics::RngMetrics;

#[cfg(test)]
mod tests;
