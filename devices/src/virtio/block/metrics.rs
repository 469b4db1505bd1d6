//! What a block device counts.

use std::sync::atomic::AtomicU64;

/// What a block device counts. Guest-caused problems are `invalid_requests` (answered IOERR) and
/// `dropped_chains` (no status byte to answer with); host-side failures are `io_errors`.
#[derive(Debug, Default, serde::Serialize)]
pub struct BlockMetrics {
    /// Completed reads.
    pub read_count: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Completed writes.
    pub write_count: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// Completed flushes.
    pub flush_count: AtomicU64,
    /// GET_ID requests.
    pub get_id_count: AtomicU64,
    /// Completed discards.
    pub discard_count: AtomicU64,
    /// Completed write-zeroes.
    pub write_zeroes_count: AtomicU64,
    /// Requests of an unknown type (answered UNSUPP).
    pub unsupported_requests: AtomicU64,
    /// Malformed or forbidden requests (answered IOERR).
    pub invalid_requests: AtomicU64,
    /// Chains returned unused: no status byte, a broken chain, a corrupted queue.
    pub dropped_chains: AtomicU64,
    /// Requests the image failed (answered IOERR).
    pub io_errors: AtomicU64,
    /// Queue notifications from the guest.
    pub notifications: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
    /// Times a request waited for the rate limiter.
    pub rate_limited: AtomicU64,
}
