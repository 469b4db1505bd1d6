//! Network interfaces: on a TAP that exists (`host_dev_name`, Firecracker's), on a TAP fennec
//! makes on a bridge (`bridge`), or on user-mode networking through passt (`user`).

use serde::{Deserialize, Serialize};

use fennec_devices::rate_limiter::RateLimiter;
use fennec_devices::virtio::net::{tap, FrameService, MacAddr, Net, NetBackend, NetSpec, Tap};

use super::device::{valid_id, DeviceEnv, VirtioDeviceConfig};
use super::error::ConfigError;
use super::net_user::{self, PortForward, UserNetConfig};
use super::options::{buckets, RateLimiterConfig};
use crate::device_manager::DeviceError;
use crate::mmds::MmdsStack;
use crate::seccomp::{Role, SyscallNeed};

/// A virtio-net interface. Field names are Firecracker's (`iface_id`, `host_dev_name`,
/// `guest_mac`); `bridge` and `user` are fennec's, each instead of `host_dev_name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The interface's name.
    #[serde(rename = "iface_id")]
    pub id: String,
    /// The TAP interface on the host; it must exist. Empty with `bridge` or `user`.
    #[serde(
        rename = "host_dev_name",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tap: String,
    /// A bridge on the host: fennec makes a TAP on it for the VM, gone with the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// User-mode networking through passt: no TAP, no root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserNetConfig>,
    /// The guest's MAC address. When absent: derived from the TAP's name (stable), from the
    /// interface ID with `user` (each VM has its own passt), a new one each start on a bridge.
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

/// What an interface is connected to on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetHost<'a> {
    /// A TAP that exists.
    Tap(&'a str),
    /// A TAP fennec makes on this bridge.
    Bridge(&'a str),
    /// passt.
    User(&'a UserNetConfig),
}

impl NetConfig {
    /// Parses a `--net` argument: `tap=NAME`, `bridge=BR` or `user[,hostfwd=..]...`, then
    /// `[,mac=MAC][,id=ID]`; `default_id` names the interface when `id=` is missing.
    pub fn from_cli(arg: &str, default_id: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::NetArg {
            arg: arg.to_string(),
            why,
        };
        let (mut tap, mut bridge, mut mac, mut id) = (None, None, None, None);
        let mut user: Option<UserNetConfig> = None;
        for part in arg.split(',') {
            let (slot, value) = match part.split_once('=') {
                None if part == "user" => {
                    if user.replace(UserNetConfig::default()).is_some() {
                        return Err(bad("\"user\" given twice".into()));
                    }
                    continue;
                }
                Some(("hostfwd", v)) => {
                    let Some(user) = user.as_mut() else {
                        return Err(bad("hostfwd= needs user first (user,hostfwd=...)".into()));
                    };
                    user.hostfwd.push(PortForward::parse(v).map_err(bad)?);
                    continue;
                }
                Some(("tap", v)) => (&mut tap, v),
                Some(("bridge", v)) => (&mut bridge, v),
                Some(("mac", v)) => (&mut mac, v),
                Some(("id", v)) => (&mut id, v),
                _ => return Err(bad(format!("unknown option {part:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("{part:?} given twice")));
            }
        }
        if tap == Some("") || bridge == Some("") {
            return Err(bad("tap= and bridge= need a name".into()));
        }
        let backends = usize::from(tap.is_some()) + usize::from(bridge.is_some());
        if backends + usize::from(user.is_some()) != 1 {
            return Err(bad("give exactly one of tap=NAME, bridge=BR, user".into()));
        }
        Ok(NetConfig {
            id: id.unwrap_or(default_id).to_string(),
            tap: tap.unwrap_or_default().to_string(),
            bridge: bridge.map(str::to_string),
            user,
            mac: mac.map(str::parse).transpose().map_err(bad)?,
            ..NetConfig::default()
        })
    }

    /// What the interface is connected to (checked by `validate`: exactly one).
    pub fn host(&self) -> NetHost<'_> {
        match (&self.bridge, &self.user) {
            (Some(bridge), _) => NetHost::Bridge(bridge),
            (None, Some(user)) => NetHost::User(user),
            (None, None) => NetHost::Tap(&self.tap),
        }
    }

    /// Connects the interface to `host` instead (a snapshot's `network_overrides`).
    pub fn set_host(&mut self, host: NetHost<'_>) {
        self.tap.clear();
        self.bridge = None;
        self.user = None;
        match host {
            NetHost::Tap(tap) => self.tap = tap.to_string(),
            NetHost::Bridge(bridge) => self.bridge = Some(bridge.to_string()),
            NetHost::User(user) => self.user = Some(user.clone()),
        }
    }

    /// The guest's MAC: the configured one, or one derived from the TAP's name, the interface
    /// ID (user mode), or the bridge, the ID and this process (a bridge's VMs must differ).
    pub fn guest_mac(&self) -> MacAddr {
        self.mac.unwrap_or_else(|| match self.host() {
            NetHost::Tap(tap) => MacAddr::stable(tap),
            NetHost::User(_) => MacAddr::stable(&format!("user/{}", self.id)),
            NetHost::Bridge(bridge) => {
                MacAddr::stable(&format!("{bridge}/{}/{}", self.id, std::process::id()))
            }
        })
    }

    /// Checks the ID and the host side: exactly one, with a usable name or forwards.
    pub fn validate_host(&self) -> Result<(), ConfigError> {
        if !valid_id(&self.id) {
            return Err(ConfigError::IfaceId(self.id.clone()));
        }
        let given = usize::from(!self.tap.is_empty())
            + usize::from(self.bridge.is_some())
            + usize::from(self.user.is_some());
        if given != 1 {
            return Err(ConfigError::NetHost(self.id.clone()));
        }
        match self.host() {
            NetHost::Tap(name) | NetHost::Bridge(name) if !tap::valid_name(name) => {
                Err(ConfigError::TapName {
                    id: self.id.clone(),
                    name: name.to_string(),
                })
            }
            NetHost::User(user) => user.check(&self.id),
            NetHost::Tap(_) | NetHost::Bridge(_) => Ok(()),
        }
    }

    /// Checks the ID, the host side and the MAC.
    fn check(&self) -> Result<(), ConfigError> {
        self.validate_host()?;
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
        // passt's socket (user mode) is read and written with read(2) and write(2), which
        // every role has.
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
        let tap_error = |source| DeviceError::Tap {
            id: self.id.clone(),
            source,
        };
        let backend: Box<dyn NetBackend> = match self.host() {
            NetHost::Tap(tap) => Box::new(Tap::open(tap).map_err(tap_error)?),
            NetHost::Bridge(bridge) => Box::new(Tap::on_bridge(bridge).map_err(tap_error)?),
            NetHost::User(user) => {
                Box::new(
                    net_user::start_passt(user).map_err(|source| DeviceError::Passt {
                        id: self.id.clone(),
                        source,
                    })?,
                )
            }
        };
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
            backend,
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
        let host = match self.host() {
            NetHost::Tap(tap) => format!("TAP {tap}"),
            NetHost::Bridge(bridge) => format!("a TAP of its own on bridge {bridge}"),
            NetHost::User(_) => "user-mode networking (passt)".to_string(),
        };
        format!(
            "{host}, MAC {}, guest eth{}{service}",
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
