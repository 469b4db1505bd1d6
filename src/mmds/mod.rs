//! The microVM metadata service (MMDS), as Firecracker defines it: a JSON document the control
//! socket writes (`PUT`, `PATCH`, `GET /mmds`) and the guest reads over HTTP at a link-local
//! address on the network interfaces `PUT /mmds/config` names.
//!
//! - `config`: where the guest finds the service, V1 or V2 ([`MmdsConfig`]);
//! - `document`: the document ([`Mmds`], shared between the control socket's service and
//!   the VMM thread);
//! - `guest_http`: the guest's HTTP requests and their answers, with V2's session tokens;
//! - `stack`: the TCP/IP endpoint on the guest's link ([`MmdsStack`], with `smoltcp`), which
//!   the network device hands the frames addressed to the service. Nothing the guest sends to
//!   the service reaches the TAP or the host's network.

mod config;
mod document;
mod error;
mod guest_http;
mod stack;

pub use config::{MmdsConfig, MmdsVersion, DEFAULT_IPV4};
pub use document::{Mmds, DEFAULT_SIZE_LIMIT};
pub use error::MmdsError;
pub use stack::MmdsStack;

#[cfg(test)]
mod tests;
