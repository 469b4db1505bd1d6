//! Address-range buses: the PIO bus and the MMIO bus a vCPU forwards its exits to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers reads and writes at an offset from its base address.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset`. Bytes the device does not implement read as 0.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset`. Writes the device does not implement are ignored.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// The register a byte-wide device decodes for an access of `len` bytes at `offset`: `None` for
/// wider accesses and offsets past 255, which such a device ignores (reads give 0).
pub fn byte_register(offset: u64, len: usize) -> Option<u8> {
    u8::try_from(offset).ok().filter(|_| len == 1)
}

/// Errors when inserting a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around.
    #[error("Invalid bus range {base:#x} + {len:#x}")]
    InvalidRange {
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("Bus range {base:#x} + {len:#x} overlaps another device")]
    Overlap {
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
}

/// A shared device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Devices keyed by the first address of their range.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `base..base + len`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let overlaps_before = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(b, (l, _))| b + l > base);
        if overlaps_before {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn resolve(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (base, (len, device)) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < *len).then_some((offset, device))
    }

    /// Forwards a read to the device at `addr`; false if there is none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, device)) => {
                crate::lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Forwards a write to the device at `addr`; false if there is none.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, device)) => {
                crate::lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and reads back the offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn test_bus_read_dispatches_with_offset() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Probe::default())), 0x3f8, 8)
            .unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
    }

    #[test]
    fn test_bus_write_reaches_device() {
        let mut bus = Bus::new();
        let probe = Arc::new(Mutex::new(Probe::default()));
        bus.insert(probe.clone(), 0x60, 5).unwrap();
        assert!(bus.write(0x64, &[0xfe]));
        assert_eq!(probe.lock().unwrap().last_write, Some((4, vec![0xfe])));
    }

    #[test]
    fn test_bus_unmapped_address_not_handled() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Probe::default())), 0x3f8, 8)
            .unwrap();
        assert!(!bus.read(0x400, &mut [0]));
        assert!(!bus.write(0x3f7, &[0]));
    }

    #[test]
    fn test_bus_overlapping_insert_refused() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Probe::default())), 0x100, 0x10)
            .unwrap();
        let dev = Arc::new(Mutex::new(Probe::default()));
        assert!(matches!(
            bus.insert(dev.clone(), 0x10f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0xf8, 0x10),
            Err(BusError::Overlap { .. })
        ));
        assert!(bus.insert(dev, 0x110, 1).is_ok());
    }

    #[test]
    fn test_byte_register_only_single_byte_low_offsets() {
        assert_eq!(byte_register(5, 1), Some(5));
        assert_eq!(byte_register(5, 2), None);
        assert_eq!(byte_register(256, 1), None);
    }

    #[test]
    fn test_bus_empty_or_wrapping_range_refused() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Probe::default()));
        assert!(bus.insert(dev.clone(), 0x10, 0).is_err());
        assert!(bus.insert(dev, u64::MAX, 2).is_err());
    }
}
