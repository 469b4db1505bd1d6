//! Where a device's interrupt goes, and KVM's GSI routing table that takes it there.
//!
//! An interrupt names its source: a line on the IOAPIC (virtio-mmio, the legacy devices), or
//! an MSI message (a virtio-pci device's MSI-X vector). A line's GSI is its IOAPIC pin, which
//! KVM routes by default; an MSI gets a GSI of its own above the pins, routed to its message.
//! Setting KVM's table replaces all of it, so the table always holds the default routes of
//! the lines too: each GSI below 16 to its PIC pin and its IOAPIC pin, each GSI below 24 to
//! its IOAPIC pin, as `KVM_CREATE_IRQCHIP` set them up.

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_irq_routing_entry, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};

use fennec_boot::layout;

/// An MSI message: what a device writes, and where, to interrupt a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// The address written (0xfee..... for the local APICs).
    pub address: u64,
    /// The data written (the vector and delivery mode).
    pub data: u32,
}

/// Where a device's interrupt goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptSource {
    /// IOAPIC pin (and GSI) `n`.
    Line(u32),
    /// An MSI message, through a GSI of its own.
    Msi(MsiMessage),
}

/// Why a route could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GsiError {
    /// Every GSI KVM allows is taken.
    #[error("No GSI left for another MSI route (KVM allows {MAX_ROUTES})")]
    Exhausted,
    /// A line the IOAPIC does not have.
    #[error("IOAPIC pin {0} does not exist (the IOAPIC has {pins})", pins = layout::IOAPIC_PINS)]
    NoSuchLine(u32),
    /// A GSI that is not an MSI route of this table.
    #[error("GSI {0} is not an MSI route")]
    NotMsi(u32),
}

/// The most routes KVM takes (`KVM_MAX_IRQ_ROUTES`).
pub const MAX_ROUTES: u32 = 4096;

/// The routing table: the lines' default routes, and each MSI's.
#[derive(Debug, Default)]
pub struct GsiRoutes {
    msi: BTreeMap<u32, MsiMessage>,
}

impl GsiRoutes {
    /// The GSI that carries `source`: a line's own, or a new one routed to the message.
    pub fn route(&mut self, source: InterruptSource) -> Result<u32, GsiError> {
        match source {
            InterruptSource::Line(pin) if pin < layout::IOAPIC_PINS => Ok(pin),
            InterruptSource::Line(pin) => Err(GsiError::NoSuchLine(pin)),
            InterruptSource::Msi(message) => {
                let gsi = (layout::IOAPIC_PINS..MAX_ROUTES)
                    .find(|g| !self.msi.contains_key(g))
                    .ok_or(GsiError::Exhausted)?;
                self.msi.insert(gsi, message);
                Ok(gsi)
            }
        }
    }

    /// Points MSI route `gsi` at a new message (the guest reprogrammed the vector).
    pub fn update(&mut self, gsi: u32, message: MsiMessage) -> Result<(), GsiError> {
        let route = self.msi.get_mut(&gsi).ok_or(GsiError::NotMsi(gsi))?;
        *route = message;
        Ok(())
    }

    /// Whether the table has MSI routes, and so must be given to KVM.
    pub fn has_msi(&self) -> bool {
        !self.msi.is_empty()
    }

    /// The whole table, as `KVM_SET_GSI_ROUTING` takes it.
    pub fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        let irqchip = |gsi: u32, chip: u32, pin: u32| {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = chip;
            e.u.irqchip.pin = pin;
            e
        };
        let mut entries = Vec::new();
        for gsi in 0..layout::IOAPIC_PINS {
            if gsi < 16 {
                let (chip, pin) = match gsi {
                    0..=7 => (KVM_IRQCHIP_PIC_MASTER, gsi),
                    _ => (KVM_IRQCHIP_PIC_SLAVE, gsi - 8),
                };
                entries.push(irqchip(gsi, chip, pin));
            }
            entries.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        for (&gsi, message) in &self.msi {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = message.address as u32;
            e.u.msi.address_hi = (message.address >> 32) as u32;
            e.u.msi.data = message.data;
            entries.push(e);
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(vector: u32) -> InterruptSource {
        InterruptSource::Msi(MsiMessage {
            address: 0xfee0_0000,
            data: vector,
        })
    }

    #[test]
    fn test_gsi_lines_keep_their_pin_and_msis_get_gsis_above_the_pins() {
        let mut routes = GsiRoutes::default();
        assert_eq!(routes.route(InterruptSource::Line(5)), Ok(5));
        assert_eq!(
            routes.route(InterruptSource::Line(24)),
            Err(GsiError::NoSuchLine(24))
        );
        assert!(!routes.has_msi());
        assert_eq!(routes.route(msi(0x40)), Ok(24));
        assert_eq!(routes.route(msi(0x41)), Ok(25));
        assert!(routes.has_msi());
    }

    #[test]
    fn test_gsi_table_holds_the_default_line_routes_and_each_msi() {
        let mut routes = GsiRoutes::default();
        let gsi = routes.route(msi(0x40)).unwrap();
        routes
            .update(
                gsi,
                MsiMessage {
                    address: 0x1_fee0_1000,
                    data: 0x41,
                },
            )
            .unwrap();
        let entries = routes.entries();
        // 16 PIC routes, 24 IOAPIC routes, one MSI.
        assert_eq!(entries.len(), 16 + 24 + 1);
        let pic: Vec<_> = entries
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP)
            // SAFETY: irqchip entries carry the irqchip member.
            .map(|e| (e.gsi, unsafe { e.u.irqchip }))
            .filter(|(_, c)| c.irqchip != KVM_IRQCHIP_IOAPIC)
            .map(|(gsi, c)| (gsi, c.irqchip, c.pin))
            .collect();
        assert_eq!(pic[9], (9, KVM_IRQCHIP_PIC_SLAVE, 1));
        let last = entries.last().unwrap();
        assert_eq!((last.gsi, last.type_), (gsi, KVM_IRQ_ROUTING_MSI));
        // SAFETY: MSI entries carry the msi member.
        let m = unsafe { last.u.msi };
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_1000, 1, 0x41));
        assert_eq!(routes.update(3, msi_message()), Err(GsiError::NotMsi(3)));
    }

    fn msi_message() -> MsiMessage {
        MsiMessage {
            address: 0xfee0_0000,
            data: 0,
        }
    }

    #[test]
    fn test_gsi_routes_run_out_at_kvms_limit() {
        let mut routes = GsiRoutes::default();
        for _ in layout::IOAPIC_PINS..MAX_ROUTES {
            routes.route(msi(0x40)).unwrap();
        }
        assert_eq!(routes.route(msi(0x40)), Err(GsiError::Exhausted));
    }
}
