//! What a network device counts.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a network device counts. Frames the guest or the host could not be given are drops;
/// failures of the TAP itself are errors.
#[derive(Debug, Default, serde::Serialize)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_packets: AtomicU64,
    /// Bytes delivered to the guest (without the virtio header).
    pub rx_bytes: AtomicU64,
    /// Frames read from the TAP and dropped: larger than every buffer the guest can post.
    pub rx_dropped: AtomicU64,
    /// Reads from the TAP that failed.
    pub rx_errors: AtomicU64,
    /// Times a frame had to wait for the guest to post receive buffers.
    pub rx_buffer_waits: AtomicU64,
    /// Frames sent to the TAP.
    pub tx_packets: AtomicU64,
    /// Bytes sent to the TAP (without the virtio header).
    pub tx_bytes: AtomicU64,
    /// Transmit chains dropped: malformed, too large, or refused by the TAP as invalid.
    pub tx_dropped: AtomicU64,
    /// Writes to the TAP that failed for a host reason (interface down, removed).
    pub tx_errors: AtomicU64,
    /// Chains returned unused: broken, outside memory, wrong direction, too small to use.
    pub bad_chains: AtomicU64,
    /// Receive-queue notifications from the guest.
    pub rx_notifications: AtomicU64,
    /// Transmit-queue notifications from the guest.
    pub tx_notifications: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
    /// Times a received frame waited for the receive rate limiter.
    pub rx_rate_limited: AtomicU64,
    /// Times a frame to send waited for the transmit rate limiter.
    pub tx_rate_limited: AtomicU64,
    /// Frames the guest sent to the link's service (instance metadata) instead of the TAP.
    pub service_tx_packets: AtomicU64,
    /// Frames from the link's service delivered to the guest.
    pub service_rx_packets: AtomicU64,
    /// Frames whose checksum or segmentation offload fennec did itself: a guest that
    /// negotiated offloads on a TAP, restored onto a backend that cannot carry them.
    pub tx_offloaded: AtomicU64,
}

impl NetMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
