//! Opening a store by its spec.

use super::error::{Result, StorageError};
use super::store::{DiskStore, DEFAULT_STORE, STORE_ENV};
use super::{dir, zfs};

/// Opens the store named by `spec` (`zfs:DATASET`, `dir:PATH`, or a path), checking that it
/// exists.
pub fn open(spec: &str) -> Result<Box<dyn DiskStore>> {
    if let Some(dataset) = spec.strip_prefix("zfs:") {
        Ok(Box::new(zfs::ZfsStore::open(dataset)?))
    } else if let Some(path) = spec.strip_prefix("dir:") {
        Ok(Box::new(dir::DirStore::open(path)?))
    } else if spec.starts_with('/') || spec.starts_with('.') {
        Ok(Box::new(dir::DirStore::open(spec)?))
    } else {
        Err(StorageError::BadStore(spec.to_string()))
    }
}

/// The store spec to use: `explicit`, else `$FENNEC_STORE`, else [`DEFAULT_STORE`].
pub fn default_spec(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var(STORE_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_STORE.to_string())
}
