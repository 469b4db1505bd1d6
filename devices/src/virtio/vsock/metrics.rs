//! What the vsock device counts.

use std::sync::atomic::AtomicU64;

/// What a vsock device counts.
#[derive(Debug, Default, serde::Serialize)]
pub struct VsockMetrics {
    /// Packets given to the guest.
    pub rx_packets: AtomicU64,
    /// Stream bytes given to the guest.
    pub rx_bytes: AtomicU64,
    /// Packets the guest sent.
    pub tx_packets: AtomicU64,
    /// Stream bytes the guest sent.
    pub tx_bytes: AtomicU64,
    /// Guest packets dropped or refused: another CID, another socket type, no connection.
    pub tx_dropped: AtomicU64,
    /// Chains returned unused: broken, outside memory, wrong direction, bad lengths.
    pub bad_chains: AtomicU64,
    /// Connections made, either way.
    pub conns_added: AtomicU64,
    /// Connections reset by fennec: a guest over its credit or out of turn, a host socket
    /// that failed, a handshake or close that timed out.
    pub conns_killed: AtomicU64,
    /// Host connections closed unserved: no `CONNECT <port>`, no driver, too many.
    pub host_refused: AtomicU64,
    /// Guest connection requests refused: nothing listens at `<uds_path>_<port>`, too many.
    pub guest_refused: AtomicU64,
    /// RSTs dropped because too many waited for receive buffers.
    pub rsts_dropped: AtomicU64,
    /// Transport-reset events given to the guest.
    pub transport_resets: AtomicU64,
    /// Queue notifications from the guest.
    pub notifications: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
}
