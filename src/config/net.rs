//! Network interfaces on TAPs.

use serde::{Deserialize, Serialize};

use fennec_devices::virtio::net::{tap, MacAddr};

use super::options::RateLimiterConfig;
use super::{valid_id, ConfigError};

/// A virtio-net interface on a TAP. Field names are Firecracker's (`iface_id`,
/// `host_dev_name`, `guest_mac`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The interface's name.
    #[serde(rename = "iface_id")]
    pub id: String,
    /// The TAP interface on the host; it must exist.
    #[serde(rename = "host_dev_name")]
    pub tap: String,
    /// The guest's MAC address; derived from the TAP name when absent, so it is stable.
    #[serde(
        rename = "guest_mac",
        default,
        skip_serializing_if = "Option::is_none",
        with = "mac_string"
    )]
    pub mac: Option<MacAddr>,
    /// A rate limiter on what the guest receives (`rx_rate_limiter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// A rate limiter on what the guest sends (`tx_rate_limiter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetConfig {
    /// Parses a `--net` argument: `tap=NAME[,mac=MAC][,id=ID]`; `default_id` names the
    /// interface when `id=` is missing.
    pub fn from_cli(arg: &str, default_id: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::NetArg {
            arg: arg.to_string(),
            why,
        };
        let (mut tap, mut mac, mut id) = (None, None, None);
        for part in arg.split(',') {
            let (slot, value) = match part.split_once('=') {
                Some(("tap", v)) => (&mut tap, v),
                Some(("mac", v)) => (&mut mac, v),
                Some(("id", v)) => (&mut id, v),
                _ => return Err(bad(format!("unknown option {part:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("{part:?} given twice")));
            }
        }
        Ok(NetConfig {
            id: id.unwrap_or(default_id).to_string(),
            tap: tap
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("no tap".into()))?
                .to_string(),
            mac: mac.map(str::parse).transpose().map_err(bad)?,
            ..NetConfig::default()
        })
    }

    /// The guest's MAC: the configured one, or one derived from the TAP name.
    pub fn guest_mac(&self) -> MacAddr {
        self.mac.unwrap_or_else(|| MacAddr::stable(&self.tap))
    }

    /// Checks the ID, TAP name and MAC.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_id(&self.id) {
            return Err(ConfigError::IfaceId(self.id.clone()));
        }
        if !tap::valid_name(&self.tap) {
            return Err(ConfigError::TapName {
                id: self.id.clone(),
                name: self.tap.clone(),
            });
        }
        if let Some(mac) = self.mac.filter(|m| !m.is_unicast()) {
            return Err(ConfigError::Mac {
                id: self.id.clone(),
                mac,
            });
        }
        Ok(())
    }
}

/// `MacAddr` as the `"02:fc:00:00:00:01"` strings of the JSON API.
mod mac_string {
    use super::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => s.serialize_str(&m.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
