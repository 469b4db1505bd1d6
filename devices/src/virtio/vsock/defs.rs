//! What the vsock device's parts share: the host's CID, the timeouts, and counting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The host's context ID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;
/// How long the guest has to answer a host connection's REQUEST.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a closing connection waits for the guest's last word.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
