//! The KVM VM: memory slots, the in-kernel irqchip and PIT, irqfds.

use kvm_bindings::KvmIrqRouting;
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use fennec_boot::layout;

use super::gsi::{GsiError, GsiRoutes, InterruptSource, MsiMessage};
use super::kvm::KvmContext;

/// Errors creating or wiring up the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM_CREATE_VM failed.
    #[error("Failed to create the KVM VM")]
    Create(#[source] kvm_ioctls::Error),
    /// A memory slot was refused.
    #[error("Failed to register guest memory slot {slot} at {addr:#x}")]
    MemorySlot {
        /// Slot number.
        slot: u32,
        /// Guest address.
        addr: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR failed.
    #[error("Failed to place KVM's TSS and identity-map pages")]
    TssAddress(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("Failed to create the in-kernel irqchip")]
    Irqchip(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_PIT2 failed.
    #[error("Failed to create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    /// An ioeventfd could not be registered.
    #[error("Failed to register ioeventfd at {addr:#x} for queue {queue}")]
    RegisterIoeventfd {
        /// MMIO address.
        addr: u64,
        /// Queue index (the datamatch value).
        queue: u32,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// No route for an interrupt.
    #[error("Failed to route an interrupt")]
    Route(#[from] GsiError),
    /// KVM_SET_GSI_ROUTING failed.
    #[error("Failed to set KVM's GSI routing table")]
    SetRouting(#[source] kvm_ioctls::Error),
    /// KVM_IRQFD failed.
    #[error("Failed to register irqfd for GSI {gsi}")]
    RegisterIrqfd {
        /// The GSI.
        gsi: u32,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The VM-wide state KVM keeps, in a snapshot: the interrupt controllers, the PIT and the
/// KVM clock.
#[derive(Serialize, Deserialize)]
pub struct KvmVmState {
    /// The PICs and the IOAPIC (`KVM_GET_IRQCHIP` of each).
    #[serde(deserialize_with = "irqchips")]
    pub irqchips: Vec<kvm_irqchip>,
    /// The PIT's channels.
    pub pit: kvm_pit_state2,
    /// The guest's KVM clock.
    pub clock: kvm_clock_data,
}

/// The interrupt controllers a state holds: the two PICs and the IOAPIC.
pub const IRQCHIPS: usize = 3;

fn irqchips<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<kvm_irqchip>, D::Error> {
    fennec_devices::bounded::vec(d, IRQCHIPS)
}

/// The mask bit of an IOAPIC redirection entry.
const IOAPIC_MASKED: u64 = 1 << 16;

/// An IOAPIC redirection entry (82093AA layout) in words.
fn describe_redirection(bits: u64) -> String {
    let bit = |n: u32| bits & (1 << n) != 0;
    format!(
        "vector {:#x} {} {}{}{} dest {:#x}",
        bits & 0xff,
        if bit(15) { "level" } else { "edge" },
        if bits & IOAPIC_MASKED != 0 {
            "masked"
        } else {
            "unmasked"
        },
        if bit(14) { " remote-irr" } else { "" },
        if bit(12) { " delivery-pending" } else { "" },
        bits >> 56
    )
}

/// A VM with its memory registered and its interrupt controllers created.
pub struct KvmVm {
    fd: VmFd,
    routes: std::sync::Mutex<GsiRoutes>,
}

impl KvmVm {
    /// Creates the VM, registers `mem` as its RAM, and creates the irqchip (PIC + IOAPIC + LAPICs)
    /// and the PIT. vCPUs are created after this, as KVM requires for the irqchip.
    pub fn new(kvm: &KvmContext, mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        let fd = kvm.kvm().create_vm().map_err(VmError::Create)?;
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let addr = region.start_addr().raw_value();
            let host =
                mem.get_host_address(region.start_addr())
                    .map_err(|_| VmError::MemorySlot {
                        slot,
                        addr,
                        source: kvm_ioctls::Error::new(libc::EFAULT),
                    })?;
            let region_desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: addr,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host..host + len` is a live anonymous mapping owned by `mem`'s
            // GuestRegionMmap; the caller keeps `mem` alive for as long as this VM runs (both are
            // owned by the same `crate::Vm`), so KVM never sees the mapping go away under it.
            unsafe { fd.set_user_memory_region(region_desc) }
                .map_err(|source| VmError::MemorySlot { slot, addr, source })?;
        }
        fd.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
            .map_err(VmError::TssAddress)?;
        fd.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(VmError::TssAddress)?;
        fd.create_irq_chip().map_err(VmError::Irqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(VmError::Pit)?;
        Ok(KvmVm {
            fd,
            routes: Default::default(),
        })
    }

    /// The KVM VM fd.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Injects GSI `gsi` each time `evt` is signalled.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::RegisterIrqfd { gsi, source })
    }

    /// Delivers `source` each time `evt` is signalled: an IOAPIC line through its own GSI, an
    /// MSI through a GSI routed to its message. Returns the GSI.
    pub fn connect_irqfd(&self, evt: &EventFd, source: InterruptSource) -> Result<u32, VmError> {
        let gsi = {
            let mut routes = fennec_devices::lock(&self.routes);
            let gsi = routes.route(source)?;
            if matches!(source, InterruptSource::Msi(_)) {
                self.set_routing(&routes)?;
            }
            gsi
        };
        self.register_irqfd(evt, gsi)?;
        Ok(gsi)
    }

    /// Points MSI route `gsi` at `message` (the guest reprogrammed a vector).
    pub fn update_msi(&self, gsi: u32, message: MsiMessage) -> Result<(), VmError> {
        let mut routes = fennec_devices::lock(&self.routes);
        routes.update(gsi, message)?;
        self.set_routing(&routes)
    }

    fn set_routing(&self, routes: &GsiRoutes) -> Result<(), VmError> {
        let entries = routes.entries();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| VmError::Route(GsiError::Exhausted))?;
        self.fd.set_gsi_routing(&table).map_err(VmError::SetRouting)
    }

    /// The interrupt controllers, the PIT and the clock of the paused VM.
    pub fn save_state(&self) -> Result<KvmVmState, kvm_ioctls::Error> {
        let mut irqchips = Vec::with_capacity(IRQCHIPS);
        for chip_id in [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd.get_irqchip(&mut chip)?;
            irqchips.push(chip);
        }
        Ok(KvmVmState {
            irqchips,
            pit: self.fd.get_pit2()?,
            clock: self.fd.get_clock()?,
        })
    }

    /// Puts a snapshot's interrupt controllers, PIT and clock into this new VM.
    pub fn restore_state(&self, state: &KvmVmState) -> Result<(), kvm_ioctls::Error> {
        self.fd.set_pit2(&state.pit)?;
        let mut clock = state.clock;
        // Flags KVM reports (TSC_STABLE, REALTIME) are not flags it takes.
        clock.flags = 0;
        self.fd.set_clock(&clock)?;
        for chip in &state.irqchips {
            self.fd.set_irqchip(chip)?;
        }
        Ok(())
    }

    /// The IOAPIC as KVM holds it: its interrupt request register and its redirection
    /// entries, one `u64` per pin.
    fn ioapic(&self) -> Result<(u32, Vec<u64>), kvm_ioctls::Error> {
        let mut chip = kvm_irqchip {
            chip_id: KVM_IRQCHIP_IOAPIC,
            ..Default::default()
        };
        self.fd.get_irqchip(&mut chip)?;
        // SAFETY: KVM_GET_IRQCHIP with chip_id KVM_IRQCHIP_IOAPIC fills the `ioapic` member of
        // the union; it is plain data, read by value.
        let ioapic = unsafe { chip.chip.ioapic };
        let entries = ioapic
            .redirtbl
            .iter()
            // SAFETY: every bit pattern of the redirection entry union is a valid u64.
            .map(|entry| unsafe { entry.bits })
            .collect();
        Ok((ioapic.irr, entries))
    }

    /// The IOAPIC's redirection entries for `pins` (each with a name), in one line each: the
    /// vector, trigger mode, whether the pin is masked, and for level-triggered pins whether
    /// an EOI is outstanding. An edge that arrives while its pin is masked is lost.
    pub fn describe_ioapic(&self, pins: &[(u32, String)]) -> String {
        let (irr, entries) = match self.ioapic() {
            Ok(state) => state,
            Err(e) => return format!("ioapic: unreadable ({e})"),
        };
        let mut out = format!("ioapic: irr={irr:#x}");
        for (pin, name) in pins {
            if let Some(&bits) = entries.get(*pin as usize) {
                out += &format!("\n  pin {pin} ({name}): {}", describe_redirection(bits));
            }
        }
        out
    }

    /// Whether the guest has unmasked IOAPIC pin `pin`: a driver asked for its interrupt.
    /// `None` when the IOAPIC cannot be read.
    pub fn ioapic_pin_unmasked(&self, pin: u32) -> Option<bool> {
        let (_, entries) = self.ioapic().ok()?;
        entries
            .get(pin as usize)
            .map(|bits| bits & IOAPIC_MASKED == 0)
    }

    /// Makes 4-byte guest writes of `queue` to `addr` signal `evt` inside KVM, without a VM exit
    /// to userspace: how virtio queue notifications reach the event loop.
    pub fn register_ioevent(&self, evt: &EventFd, addr: u64, queue: u32) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), queue)
            .map_err(|source| VmError::RegisterIoeventfd {
                addr,
                queue,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_describe_redirection_names_each_field() {
        let level_masked = 0x21 | 1 << 15 | 1 << 16 | 1 << 14 | 1 << 56;
        assert_eq!(
            describe_redirection(level_masked),
            "vector 0x21 level masked remote-irr dest 0x1"
        );
        assert_eq!(
            describe_redirection(0x24),
            "vector 0x24 edge unmasked dest 0x0"
        );
    }
}
