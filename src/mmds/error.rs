//! Why a metadata request or configuration was refused.

use std::net::Ipv4Addr;

/// Why a metadata request or configuration was refused; the API answers 400 with the text.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MmdsError {
    /// Not a usable service address.
    #[error(
        "The MMDS address {0} is not a link-local unicast address (169.254.0.1 to \
         169.254.255.254, not .0 or .255)"
    )]
    Address(Ipv4Addr),
    /// `network_interfaces` is empty.
    #[error("The MMDS configuration names no network interface (network_interfaces is empty)")]
    NoInterfaces,
    /// An interface is named twice.
    #[error("The MMDS configuration names network interface {0:?} twice")]
    DuplicateInterface(String),
    /// An interface the VM does not have.
    #[error(
        "The MMDS configuration names network interface {0:?}, which the VM does not have; \
         add it first (PUT /network-interfaces/{0})"
    )]
    UnknownInterface(String),
    /// The document would be larger than the limit.
    #[error(
        "The MMDS data would be {size} bytes of JSON, more than the limit of {limit} \
         (--mmds-size-limit)"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// `PUT /mmds` with something other than an object.
    #[error("The MMDS data must be a JSON object")]
    NotObject,
}
