//! The metadata document and the V2 sessions ([`Mmds`]), shared between the control socket's
//! service and the VMM thread.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::config::MmdsVersion;
use super::error::MmdsError;
use super::guest_http;

/// The largest document, in bytes of its JSON, unless `--mmds-size-limit` says otherwise
/// (Firecracker's default: that of an API request body).
pub const DEFAULT_SIZE_LIMIT: usize = 51_200;

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
    pub(super) fn answer(&self, request: &guest_http::Request) -> guest_http::Response {
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
