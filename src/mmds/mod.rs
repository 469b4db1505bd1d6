//! The microVM metadata service (MMDS), as Firecracker defines it: a JSON document the control
//! socket writes (`PUT`, `PATCH`, `GET /mmds`) and the guest reads over HTTP at a link-local
//! address on the network interfaces `PUT /mmds/config` names.
//!
//! - this file: the configuration and the document ([`Mmds`], shared between the control
//!   socket's service and the VMM thread);
//! - `guest_http`: the guest's HTTP requests and their answers, with V2's session tokens;
//! - `stack`: the TCP/IP endpoint on the guest's link ([`MmdsStack`], with `smoltcp`), which
//!   the network device hands the frames addressed to the service. Nothing the guest sends to
//!   the service reaches the TAP or the host's network.

mod guest_http;
mod stack;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use stack::MmdsStack;

/// The address the guest reaches the service at unless the configuration names another.
pub const DEFAULT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The largest document, in bytes of its JSON, unless `--mmds-size-limit` says otherwise
/// (Firecracker's default: that of an API request body).
pub const DEFAULT_SIZE_LIMIT: usize = 51_200;

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

/// The metadata document and the V2 sessions, shared by the control socket (which writes it)
/// and the VMM thread (which answers the guest). Cloning shares.
#[derive(Clone, Debug)]
pub struct Mmds(Arc<Mutex<Store>>);

#[derive(Debug)]
struct Store {
    data: Value,
    limit: usize,
    version: MmdsVersion,
    tokens: guest_http::Tokens,
}

impl Default for Mmds {
    fn default() -> Self {
        Mmds::new(DEFAULT_SIZE_LIMIT)
    }
}

impl Mmds {
    /// An empty document of at most `limit` bytes of JSON.
    pub fn new(limit: usize) -> Self {
        Mmds(Arc::new(Mutex::new(Store {
            data: Value::Object(Default::default()),
            limit,
            version: MmdsVersion::V1,
            tokens: guest_http::Tokens::default(),
        })))
    }

    /// A document of at most `limit` bytes, read from the JSON file at `path` if given
    /// (Firecracker's `--metadata`).
    pub fn from_file(path: Option<&std::path::Path>, limit: usize) -> Result<Self, String> {
        let mmds = Mmds::new(limit);
        if let Some(path) = path {
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read the metadata {}: {e}", path.display()))?;
            let data = serde_json::from_slice(&text)
                .map_err(|e| format!("the metadata {} is not JSON: {e}", path.display()))?;
            mmds.put(data)
                .map_err(|e| format!("the metadata {}: {e}", path.display()))?;
        }
        Ok(mmds)
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves a whole document: every write replaces it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The document.
    pub fn get(&self) -> Value {
        self.lock().data.clone()
    }

    /// Replaces the document (`PUT /mmds`).
    pub fn put(&self, data: Value) -> Result<(), MmdsError> {
        if !data.is_object() {
            return Err(MmdsError::NotObject);
        }
        let mut store = self.lock();
        check_size(&data, store.limit)?;
        store.data = data;
        Ok(())
    }

    /// Merges `patch` into the document as RFC 7396 says (`PATCH /mmds`): objects merge key by
    /// key, `null` removes a key, anything else replaces.
    pub fn patch(&self, patch: Value) -> Result<(), MmdsError> {
        let mut store = self.lock();
        let mut data = store.data.clone();
        merge_patch(&mut data, patch);
        if !data.is_object() {
            return Err(MmdsError::NotObject);
        }
        check_size(&data, store.limit)?;
        store.data = data;
        Ok(())
    }

    /// Sets the protocol the guest must speak.
    pub fn set_version(&self, version: MmdsVersion) {
        self.lock().version = version;
    }

    /// Answers one HTTP request from the guest (the bytes of a whole request).
    fn answer(&self, request: &guest_http::Request) -> guest_http::Response {
        let mut store = self.lock();
        let store = &mut *store;
        guest_http::answer(&store.data, store.version, &mut store.tokens, request)
    }
}

fn check_size(data: &Value, limit: usize) -> Result<(), MmdsError> {
    let size = serde_json::to_vec(data)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(MmdsError::TooLarge { size, limit });
    }
    Ok(())
}

/// RFC 7396's MergePatch.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above");
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_patch(map.entry(key).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_mmds_patch_follows_rfc_7396() {
        let mmds = Mmds::default();
        mmds.put(json!({"a": "b", "c": {"d": "e", "f": "g"}}))
            .unwrap();
        mmds.patch(json!({"a": "z", "c": {"f": null}, "n": [1]}))
            .unwrap();
        assert_eq!(mmds.get(), json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
        assert_eq!(mmds.patch(json!([1])), Err(MmdsError::NotObject));
        assert_eq!(mmds.put(json!("x")), Err(MmdsError::NotObject));
        assert_eq!(mmds.get()["a"], "z", "a refused write changes nothing");
    }

    #[test]
    fn test_mmds_size_limit_refuses_and_keeps_the_old_document() {
        let mmds = Mmds::new(32);
        mmds.put(json!({"k": "v"})).unwrap();
        let big = json!({"k": "x".repeat(40)});
        assert!(matches!(
            mmds.put(big.clone()),
            Err(MmdsError::TooLarge { limit: 32, .. })
        ));
        assert!(matches!(mmds.patch(big), Err(MmdsError::TooLarge { .. })));
        assert_eq!(mmds.get(), json!({"k": "v"}));
    }

    #[test]
    fn test_mmds_config_parses_firecracker_bodies_and_checks_them() {
        let c: MmdsConfig = serde_json::from_value(json!({
            "version": "V2", "network_interfaces": ["eth0"], "ipv4_address": "169.254.170.2"
        }))
        .unwrap();
        assert_eq!(c.version, MmdsVersion::V2);
        assert_eq!(c.address(), Ipv4Addr::new(169, 254, 170, 2));
        assert_eq!(c.validate(["eth0", "eth1"].into_iter()), Ok(()));
        assert_eq!(
            c.validate(["eth1"].into_iter()),
            Err(MmdsError::UnknownInterface("eth0".into()))
        );
        let c: MmdsConfig =
            serde_json::from_value(json!({"network_interfaces": ["eth0"]})).unwrap();
        assert_eq!((c.version, c.address()), (MmdsVersion::V1, DEFAULT_IPV4));
        for bad in ["10.0.0.1", "169.254.0.0", "169.254.3.255"] {
            let c = MmdsConfig {
                ipv4_address: Some(bad.parse().unwrap()),
                ..c.clone()
            };
            assert!(
                matches!(c.validate(["eth0"].into_iter()), Err(MmdsError::Address(_))),
                "{bad}"
            );
        }
        for bad in [
            json!({"network_interfaces": ["eth0"], "version": "V3"}),
            json!({"network_interfaces": ["eth0"], "ipv4_address": "x"}),
            json!({"version": "V1"}),
            json!({"network_interfaces": ["eth0"], "extra": 1}),
        ] {
            assert!(
                serde_json::from_value::<MmdsConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let twice = MmdsConfig {
            network_interfaces: vec!["eth0".into(), "eth0".into()],
            ..c
        };
        assert_eq!(
            twice.validate(["eth0"].into_iter()),
            Err(MmdsError::DuplicateInterface("eth0".into()))
        );
    }
}
