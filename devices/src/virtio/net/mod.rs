//! virtio-net: a Linux TAP interface as a virtio network device.
//!
//! - [`frame`]: moving frames between descriptor chains and host buffers (no file descriptors;
//!   every hostile case is unit-tested);
//! - [`tap`]: the TAP backend (`/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, offloads
//!   through `TUNSETOFFLOAD`);
//! - [`service`]: a service the VMM answers on the guest's link (instance metadata), whose
//!   frames bypass the TAP;
//! - [`device`]: the [`Net`] device (features, configuration space, the rx and tx queues);
//! - `event_handler`: its event-loop subscriber, which watches the TAP only while the guest has
//!   room for what it would read;
//! - `fuzzing`: arbitrary guest memory and frames through the device (fuzz target and property
//!   test).
//!
//! Frames carry the 12-byte `virtio_net_hdr_v1` in both directions, and the TAP is told to use
//! the same header, so checksum and segmentation offloads pass between guest and host untouched.

mod bridge;
pub mod device;
mod event_handler;
pub mod features;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod mac;
mod metrics;
pub mod offload;
pub mod service;
pub mod stream;
pub mod tap;

pub use device::{Net, NetSpec};
pub use mac::MacAddr;
pub use metrics::NetMetrics;
pub use service::FrameService;
pub use stream::FrameStream;
pub use tap::{NetBackend, Tap, TapError};
