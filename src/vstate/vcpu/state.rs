//! A vCPU's state in a snapshot: everything KVM keeps for it, read while the vCPU is parked
//! and written back, in KVM's order, before the restored vCPU first runs.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use serde::{Deserialize, Serialize};

use super::{Vcpu, VcpuError};

/// The LAPIC timer's TSC deadline (`IA32_TSC_DEADLINE`).
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Entries of the CPUID table asked for.
const MAX_CPUID_ENTRIES: usize = 256;
/// MSRs read per `KVM_GET_MSRS`.
const MSR_CHUNK: usize = 64;

/// The most MSRs a saved vCPU may have: far more than KVM lists.
pub const MAX_SAVED_MSRS: usize = 1024;

fn cpuid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<kvm_cpuid_entry2>, D::Error> {
    fennec_devices::bounded::vec(d, MAX_CPUID_ENTRIES)
}

fn msrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<kvm_msr_entry>, D::Error> {
    fennec_devices::bounded::vec(d, MAX_SAVED_MSRS)
}

/// What a vCPU is.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// Its APIC ID.
    pub index: u8,
    /// The CPUID table it was given.
    #[serde(deserialize_with = "cpuid")]
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Every MSR KVM lets a VMM save (TSC and KVM clock included).
    #[serde(deserialize_with = "msrs")]
    pub msrs: Vec<kvm_msr_entry>,
    /// General registers.
    pub regs: kvm_regs,
    /// Segments, control registers, descriptor tables.
    pub sregs: kvm_sregs,
    /// FPU, SSE and AVX state.
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// Running, halted, waiting for INIT or SIPI.
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts and NMIs.
    pub events: kvm_vcpu_events,
}

impl Vcpu {
    /// Reads the whole state of this parked vCPU.
    pub fn save_state(&self) -> Result<VcpuState, VcpuError> {
        let get = |what: &'static str| {
            move |source| VcpuError::Configure {
                what,
                index: self.index,
                source,
            }
        };
        let cpuid = self
            .fd
            .get_cpuid2(MAX_CPUID_ENTRIES)
            .map_err(get("CPUID"))?;
        Ok(VcpuState {
            index: self.index,
            cpuid: cpuid.as_slice().to_vec(),
            msrs: self.save_msrs(&self.msr_list)?,
            regs: self.fd.get_regs().map_err(get("registers"))?,
            sregs: self.fd.get_sregs().map_err(get("special registers"))?,
            xsave: self.fd.get_xsave().map_err(get("XSAVE area"))?,
            xcrs: self.fd.get_xcrs().map_err(get("XCRs"))?,
            debugregs: self.fd.get_debug_regs().map_err(get("debug registers"))?,
            lapic: self.fd.get_lapic().map_err(get("LAPIC"))?,
            mp_state: self.fd.get_mp_state().map_err(get("MP state"))?,
            events: self.fd.get_vcpu_events().map_err(get("pending events"))?,
        })
    }

    /// Every MSR of `list` KVM reads for this vCPU; one it refuses is left out (KVM lists
    /// some a given CPU lacks), as `KVM_GET_MSRS` stops at the first it cannot read.
    fn save_msrs(&self, list: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuError> {
        let mut saved = Vec::with_capacity(list.len());
        let mut rest = list;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(MSR_CHUNK)];
            let entries: Vec<kvm_msr_entry> = chunk
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::Msrs {
                index: self.index,
                set: 0,
                wanted: entries.len(),
            })?;
            let read = self
                .fd
                .get_msrs(&mut msrs)
                .map_err(|source| VcpuError::Configure {
                    what: "MSRs",
                    index: self.index,
                    source,
                })?;
            saved.extend_from_slice(&msrs.as_slice()[..read]);
            // A whole chunk read: the next starts right after it. Otherwise the one at `read`
            // was refused: go on after it.
            let next = match read == chunk.len() {
                true => read,
                false => read + 1,
            };
            rest = &rest[next.min(rest.len())..];
        }
        Ok(saved)
    }

    /// Writes `msrs`, a chunk at a time (KVM takes at most 256 in one call); every one must
    /// be taken. The boot path writes its MSRs through this too.
    pub(super) fn put_msrs(&self, msrs: &[kvm_msr_entry]) -> Result<(), VcpuError> {
        for chunk in msrs.chunks(MSR_CHUNK) {
            let entries = Msrs::from_entries(chunk).map_err(|_| VcpuError::Msrs {
                index: self.index,
                set: 0,
                wanted: chunk.len(),
            })?;
            let set = self.set("MSRs", self.fd.set_msrs(&entries))?;
            if set != chunk.len() {
                return Err(VcpuError::Msrs {
                    index: self.index,
                    set,
                    wanted: chunk.len(),
                });
            }
        }
        Ok(())
    }

    /// Writes `state` into this new vCPU, in the order KVM needs (CPUID before MSRs, the
    /// special registers before the general ones, the LAPIC before the MP state and events).
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), VcpuError> {
        let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| VcpuError::Msrs {
            index: self.index,
            set: 0,
            wanted: state.cpuid.len(),
        })?;
        self.set("CPUID", self.fd.set_cpuid2(&cpuid))?;
        self.put_msrs(&state.msrs)?;
        self.set("special registers", self.fd.set_sregs(&state.sregs))?;
        self.set("registers", self.fd.set_regs(&state.regs))?;
        // SAFETY: the area is a 4096-byte `kvm_xsave`; KVM_SET_XSAVE reads as much of it as
        // this host's XSAVE state takes, and `Vm::restore` refuses a host whose state is larger
        // (`SnapshotError::XsaveArea`) before any vCPU is restored, so KVM reads nothing past
        // it.
        self.set("XSAVE area", unsafe { self.fd.set_xsave(&state.xsave) })?;
        self.set("XCRs", self.fd.set_xcrs(&state.xcrs))?;
        self.set("debug registers", self.fd.set_debug_regs(&state.debugregs))?;
        self.set("LAPIC", self.fd.set_lapic(&state.lapic))?;
        // KVM drops a TSC deadline written while the LAPIC timer is not in TSC-deadline mode,
        // as it was not yet when the MSRs went in above: write it again now that the LAPIC
        // is, or a guest whose next tick was armed that way would wait for it forever.
        if let Some(deadline) = state.msrs.iter().find(|m| m.index == MSR_IA32_TSC_DEADLINE) {
            let msrs = Msrs::from_entries(&[*deadline]).map_err(|_| VcpuError::Msrs {
                index: self.index,
                set: 0,
                wanted: 1,
            })?;
            self.set("TSC deadline", self.fd.set_msrs(&msrs))?;
        }
        self.set("MP state", self.fd.set_mp_state(state.mp_state))?;
        self.set("pending events", self.fd.set_vcpu_events(&state.events))?;
        Ok(())
    }
}
