//! Network interfaces on TAPs.

use serde::{Deserialize, Serialize};

use fennec_devices::rate_limiter::RateLimiter;
use fennec_devices::virtio::net::{tap, FrameService, MacAddr, Net, NetSpec, Tap};

use super::device::{valid_id, DeviceEnv, VirtioDeviceConfig};
use super::error::ConfigError;
use super::options::{buckets, RateLimiterConfig};
use crate::device_manager::DeviceError;
use crate::mmds::MmdsStack;
use crate::seccomp::{Role, SyscallNeed};

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
    fn check(&self) -> Result<(), ConfigError> {
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

impl VirtioDeviceConfig for NetConfig {
    const KIND: &'static str = "network interface";
    const SYSCALLS: &'static [SyscallNeed] = &[
        SyscallNeed::any(Role::Vmm, libc::SYS_readv, "frames from the TAP"),
        SyscallNeed::any(Role::Vmm, libc::SYS_writev, "frames to the TAP"),
        SyscallNeed::ioctl(
            Role::Vcpu,
            libc::TUNSETOFFLOAD,
            "the guest's DRIVER_OK sets the TAP's offloads to what its driver accepted",
        ),
    ];
    type Device = Net;

    fn id(&self) -> &str {
        &self.id
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.check()
    }

    fn build(&self, env: &DeviceEnv<'_>) -> Result<Net, DeviceError> {
        let tap = Tap::open(&self.tap).map_err(|source| DeviceError::Tap {
            id: self.id.clone(),
            source,
        })?;
        let limiter = |c: &Option<RateLimiterConfig>| {
            let (bandwidth, ops) = buckets(c.as_ref());
            RateLimiter::new(bandwidth, ops)
                .map_err(|e| DeviceError::EventFd("a rate limiter's timer", e))
        };
        // The metadata service on the links its configuration names.
        let service = env
            .mmds_config
            .filter(|c| c.network_interfaces.contains(&self.id))
            .map(|c| {
                Box::new(MmdsStack::new(env.mmds.clone(), c.address())) as Box<dyn FrameService>
            });
        Net::new(NetSpec {
            backend: Box::new(tap),
            mac: self.guest_mac(),
            rx_rate_limiter: limiter(&self.rx_rate_limiter)?,
            tx_rate_limiter: limiter(&self.tx_rate_limiter)?,
            service,
        })
        .map_err(|e| DeviceError::EventFd("a network device", e))
    }

    fn describe(&self, _device: &Net, env: &DeviceEnv<'_>) -> String {
        let service = env
            .mmds_config
            .filter(|c| c.network_interfaces.contains(&self.id))
            .map(|c| format!(", metadata service at {}", c.address()))
            .unwrap_or_default();
        format!(
            "TAP {}, MAC {}, guest eth{}{service}",
            self.tap,
            self.guest_mac(),
            env.index
        )
    }
}

/// `MacAddr` as the `"02:fc:00:00:00:01"` strings of the JSON API.
mod mac_string {
    use fennec_devices::virtio::net::MacAddr;
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
