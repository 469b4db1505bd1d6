//! virtio-blk: a disk image as a virtio block device.
//!
//! - [`request`]: parsing descriptor chains into requests and executing them on a
//!   [`DiskBackend`] (no file descriptors; every hostile case is unit-tested and fuzzed);
//! - [`disk`]: the file backend (`preadv`/`pwritev` straight into guest memory, `fdatasync`,
//!   `fallocate`, `flock`);
//! - [`device`]: the [`Block`] device (features, config space, queue processing);
//! - `event_handler`: its event-loop subscriber.

pub mod device;
pub mod disk;
mod event_handler;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod metrics;
pub mod request;

pub use device::{Block, BlockSpec};
pub use disk::{DiskError, DiskFile};
pub use metrics::BlockMetrics;
pub use request::DiskBackend;
