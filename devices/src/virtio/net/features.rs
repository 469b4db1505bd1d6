//! The network device's feature bits, and the combinations of them a driver may accept.

/// Network feature bits (virtio 1.2, 5.1.3).
pub mod feature {
    /// The device takes frames with partial checksums.
    pub const CSUM: u64 = 1 << 0;
    /// The driver takes frames with partial checksums.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// The driver takes TSOv4.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// The driver takes TSOv6.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// The driver takes TSO with ECN.
    pub const GUEST_ECN: u64 = 1 << 9;
    /// The driver takes UFO.
    pub const GUEST_UFO: u64 = 1 << 10;
    /// The device takes TSOv4.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// The device takes TSOv6.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// The device takes TSO with ECN.
    pub const HOST_ECN: u64 = 1 << 13;
    /// The device takes UFO.
    pub const HOST_UFO: u64 = 1 << 14;
    /// The driver can merge receive buffers.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// The configuration has a link status.
    pub const STATUS: u64 = 1 << 16;
}

/// Refuses a set of accepted features in which one lacks a feature it depends on (virtio 1.2,
/// 5.1.3.1): the offloads need checksumming, ECN needs TSO. A driver that accepts such a set
/// is refused at FEATURES_OK instead of leaving the device to guess.
pub fn check(acked: u64) -> Result<(), String> {
    use feature::*;
    let rules: [(u64, u64, &str); 8] = [
        (GUEST_TSO4, GUEST_CSUM, "GUEST_TSO4 needs GUEST_CSUM"),
        (GUEST_TSO6, GUEST_CSUM, "GUEST_TSO6 needs GUEST_CSUM"),
        (GUEST_UFO, GUEST_CSUM, "GUEST_UFO needs GUEST_CSUM"),
        (
            GUEST_ECN,
            GUEST_TSO4 | GUEST_TSO6,
            "GUEST_ECN needs GUEST_TSO4 or GUEST_TSO6",
        ),
        (HOST_TSO4, CSUM, "HOST_TSO4 needs CSUM"),
        (HOST_TSO6, CSUM, "HOST_TSO6 needs CSUM"),
        (HOST_UFO, CSUM, "HOST_UFO needs CSUM"),
        (
            HOST_ECN,
            HOST_TSO4 | HOST_TSO6,
            "HOST_ECN needs HOST_TSO4 or HOST_TSO6",
        ),
    ];
    match rules
        .iter()
        .find(|(feature, needs, _)| acked & feature != 0 && acked & needs == 0)
    {
        Some((_, _, why)) => Err(format!("virtio-net features {acked:#x}: {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::feature::*;
    use super::*;

    #[test]
    fn test_each_offload_needs_what_it_depends_on() {
        assert!(check(0).is_ok());
        assert!(check(CSUM | HOST_TSO4 | HOST_TSO6 | HOST_ECN | HOST_UFO).is_ok());
        assert!(check(GUEST_CSUM | GUEST_TSO4 | GUEST_ECN | GUEST_UFO).is_ok());
        for bad in [
            GUEST_TSO4,
            GUEST_TSO6,
            GUEST_UFO,
            GUEST_CSUM | GUEST_ECN,
            HOST_TSO4,
            HOST_TSO6,
            HOST_UFO,
            CSUM | HOST_ECN,
        ] {
            assert!(check(bad).is_err(), "{bad:#x} accepted");
        }
    }
}
