//! MAC addresses.

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address derived from `seed` (FNV-1a): the same seed gives
    /// the same address on every run, so a guest keeps its DHCP lease across reboots.
    pub fn stable(seed: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        MacAddr([0x02, 0xfc, b[0], b[1], b[2], b[3]])
    }

    /// Whether the guest may use it as its own address: not multicast, not all zero.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{s:?} is not a MAC address (expected six hex pairs like 02:fc:00:00:00:01)")
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mac_parse_and_display_round_trip() {
        let mac: MacAddr = "02:FC:0a:0b:0c:0d".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0xfc, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(mac.to_string(), "02:fc:0a:0b:0c:0d");
    }

    #[test]
    fn test_mac_parse_rejects_bad_forms() {
        for bad in [
            "",
            "02:fc:0a:0b:0c",
            "02:fc:0a:0b:0c:0d:0e",
            "2:fc:0a:0b:0c:0d",
            "zz:fc:0a:0b:0c:0d",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn test_mac_stable_is_deterministic_local_unicast() {
        let a = MacAddr::stable("tap0");
        assert_eq!(a, MacAddr::stable("tap0"));
        assert_ne!(a, MacAddr::stable("tap1"));
        assert!(a.is_unicast());
        assert_eq!(a.0[0] & 2, 2, "locally administered");
    }

    #[test]
    fn test_mac_multicast_and_zero_not_unicast() {
        assert!(!MacAddr([1, 0, 0, 0, 0, 0]).is_unicast());
        assert!(!MacAddr([0; 6]).is_unicast());
    }
}
