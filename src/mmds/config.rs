//! Where the guest finds the service and which protocol it speaks (`PUT /mmds/config`).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::error::MmdsError;

/// The address the guest reaches the service at unless the configuration names another.
pub const DEFAULT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Which protocol the guest speaks: V1 answers any `GET`; V2 answers only requests that carry
/// a session token from `PUT /latest/api/token`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    /// Requests need no token.
    #[default]
    V1,
    /// Requests need a session token.
    V2,
}

/// `PUT /mmds/config` and `mmds-config` in a configuration file: Firecracker's `MmdsConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    /// V1 or V2.
    #[serde(default)]
    pub version: MmdsVersion,
    /// The network interfaces (`iface_id`) whose guest side reaches the service.
    pub network_interfaces: Vec<String>,
    /// The service's address on those links: link-local (169.254.0.0/16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
}

impl MmdsConfig {
    /// The service's address.
    pub fn address(&self) -> Ipv4Addr {
        self.ipv4_address.unwrap_or(DEFAULT_IPV4)
    }

    /// Checks the address and that the interfaces are named; `ifaces` are the VM's interface
    /// IDs.
    pub fn validate<'a>(
        &self,
        ifaces: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), MmdsError> {
        let ip = self.address();
        if !ip.is_link_local() || ip.octets()[3] == 0 || ip.octets()[3] == 255 {
            return Err(MmdsError::Address(ip));
        }
        if self.network_interfaces.is_empty() {
            return Err(MmdsError::NoInterfaces);
        }
        for (i, id) in self.network_interfaces.iter().enumerate() {
            if self.network_interfaces[..i].contains(id) {
                return Err(MmdsError::DuplicateInterface(id.clone()));
            }
            if !ifaces.clone().any(|known| known == id) {
                return Err(MmdsError::UnknownInterface(id.clone()));
            }
        }
        Ok(())
    }
}
