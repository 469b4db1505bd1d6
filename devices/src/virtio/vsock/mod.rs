//! virtio-vsock (virtio 1.2, 5.10): stream sockets between the guest and host programs, with
//! Firecracker's host side. The guest's ports map to Unix sockets, so the host needs no
//! `vhost_vsock`: a host program connects to `uds_path` and writes `CONNECT <port>\n` to reach
//! a guest listener (reading `OK <host port>\n` when it accepted), and a guest connection to
//! CID 2 port P reaches whatever listens at `<uds_path>_P`.
//!
//! - `defs`: what the parts share;
//! - `packet`: headers in and out of descriptor chains;
//! - `connection`: one stream, its handshake, credit and close;
//! - `muxer`: the listening socket and the connections, bounded;
//! - `device`: the [`Vsock`] device and its queues;
//! - `event_handler`: its event-loop subscriber;
//! - `metrics`: what it counts.

mod connection;
mod defs;
mod device;
mod event_handler;
mod metrics;
mod muxer;
pub mod packet;

pub use connection::TX_BUF_SIZE;
pub use defs::{CLOSE_TIMEOUT, HOST_CID, REQUEST_TIMEOUT};
pub use device::{Vsock, EVENT_TRANSPORT_RESET, QUEUE_SIZE, TYPE_VSOCK};
pub use metrics::VsockMetrics;
pub use muxer::{Muxer, MAX_CONNECTIONS, MAX_PENDING, MAX_RSTS};

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(test)]
mod tests;
