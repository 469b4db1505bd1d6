//! What the entropy device counts.

use std::sync::atomic::AtomicU64;

/// What an entropy device counts.
#[derive(Debug, Default, serde::Serialize)]
pub struct RngMetrics {
    /// Chains filled.
    pub requests: AtomicU64,
    /// Random bytes given to the guest.
    pub bytes: AtomicU64,
    /// Chains returned unused: broken, outside memory, device-readable.
    pub bad_chains: AtomicU64,
    /// Times the host's random source failed.
    pub errors: AtomicU64,
    /// Times a request waited for the rate limiter.
    pub rate_limited: AtomicU64,
    /// Queue notifications from the guest.
    pub notifications: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
}
