//! The CPUID a guest vCPU sees: KVM's supported CPUID, adjusted for this vCPU's place in the
//! guest's topology.
//!
//! Topology: one socket, `count` cores, one thread per core; APIC ID = vCPU index. Leaves that
//! name the APIC ID or count CPUs (1, 4, 0xB, 0x1F, and AMD's 0x8000_0008, 0x8000_001D and
//! 0x8000_001E) are rewritten; the hypervisor bit is set so the guest looks for KVM's
//! paravirtual leaves at 0x4000_0000 (clock, PV EOI, PV unhalt, PV TLB flush, async page
//! faults), which KVM reports as supported.
//!
//! Some features KVM emulates for every guest but reports only as capabilities, not in its
//! supported CPUID; [`add_emulated`] sets those. The TSC-deadline timer is the one that
//! matters for boot time: without it Linux calibrates its local APIC timer against the PIT,
//! which takes a tenth of a second of ticks and many exits.
//!
//! XSAVE (leaf 0xD, sub-leaf 0): the size of the save area for every supported feature (ECX)
//! is recomputed from the features' own sub-leaves, and the size for the enabled ones (EBX)
//! is that of the reset state, x87 and SSE only; KVM updates EBX as the guest enables more.

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_AMD_SIZE: u32 = 0x8000_0008;
const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;
/// The legacy (x87 and SSE) region and the header: the XSAVE area of the reset state.
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;

/// The CPU's vendor, from leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD".
    Amd,
    /// Anything else.
    Other,
}

/// Reads the vendor from leaf 0 of `entries`.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    match entries.iter().find(|e| e.function == 0) {
        Some(e) => {
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&e.ebx.to_le_bytes());
            id[4..8].copy_from_slice(&e.edx.to_le_bytes());
            id[8..].copy_from_slice(&e.ecx.to_le_bytes());
            match &id {
                b"GenuineIntel" => Vendor::Intel,
                b"AuthenticAMD" => Vendor::Amd,
                _ => Vendor::Other,
            }
        }
        None => Vendor::Other,
    }
}

/// Bits needed to number `count` items (the "shift" of a topology level).
fn bits_for(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Features KVM emulates for any guest but reports as capabilities rather than in its
/// supported CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emulated {
    /// `KVM_CAP_TSC_DEADLINE_TIMER`: the local APIC timer's TSC-deadline mode.
    pub tsc_deadline: bool,
}

/// Adds the `emulated` features to KVM's supported CPUID `entries`.
pub fn add_emulated(entries: &mut [kvm_cpuid_entry2], emulated: Emulated) {
    for e in entries.iter_mut().filter(|e| e.function == LEAF_FEATURES) {
        if emulated.tsc_deadline {
            e.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

/// The XSAVE area's size with the state components in `mask` enabled (standard format), from
/// the components' sub-leaves of leaf 0xD in `entries`.
fn xsave_size(entries: &[kvm_cpuid_entry2], mask: u64) -> u32 {
    entries
        .iter()
        .filter(|e| e.function == LEAF_XSAVE && (2..64).contains(&e.index))
        .filter(|e| mask & (1 << e.index) != 0 && e.eax != 0)
        .map(|e| e.ebx.saturating_add(e.eax))
        .fold(XSAVE_LEGACY_AND_HEADER, u32::max)
}

/// Adjusts KVM's supported CPUID `entries` for vCPU `index` of `count`.
pub fn filter(entries: &mut [kvm_cpuid_entry2], index: u8, count: u8) {
    let vendor = vendor(entries);
    let (index, count) = (u32::from(index), u32::from(count.max(1)));
    let xsave_all = entries
        .iter()
        .find(|e| e.function == LEAF_XSAVE && e.index == 0)
        .map(|e| xsave_size(entries, u64::from(e.edx) << 32 | u64::from(e.eax)));
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | (count.min(255) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS if vendor == Vendor::Intel => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = index;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (TOPOLOGY_LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = bits_for(count);
                        e.ebx = count;
                        e.ecx = (TOPOLOGY_LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            LEAF_XSAVE if e.index == 0 => {
                e.ebx = XSAVE_LEGACY_AND_HEADER;
                e.ecx = xsave_all.unwrap_or(XSAVE_LEGACY_AND_HEADER);
            }
            LEAF_AMD_SIZE if vendor == Vendor::Amd => {
                // NC (cores - 1) and ApicIdCoreIdSize (bits of the APIC ID that number cores):
                // the guest's package, not the host's.
                e.ecx = (e.ecx & !0xf0ff) | (bits_for(count) << 12) | (count - 1);
            }
            LEAF_AMD_CACHE_TOPOLOGY if vendor == Vendor::Amd => {
                // NumSharingCache - 1: the L3 is the package's, the rest each core's own.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | ((sharing & 0xfff) << 14);
            }
            LEAF_AMD_EXT_APIC_ID if vendor == Vendor::Amd => {
                // Extended APIC ID; core ID with one thread per core; node 0 of 1.
                e.eax = index;
                e.ebx = index & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn intel_leaf0() -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function: 0,
            ebx: u32::from_le_bytes(*b"Genu"),
            edx: u32::from_le_bytes(*b"ineI"),
            ecx: u32::from_le_bytes(*b"ntel"),
            ..Default::default()
        }
    }

    #[test]
    fn test_vendor_intel_recognised() {
        assert_eq!(vendor(&[intel_leaf0()]), Vendor::Intel);
        assert_eq!(vendor(&[entry(0, 0)]), Vendor::Other);
    }

    #[test]
    fn test_filter_leaf1_sets_apic_id_hypervisor_and_htt() {
        let mut e = [entry(LEAF_FEATURES, 0)];
        e[0].ebx = 0x0008_0800;
        filter(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn test_filter_single_vcpu_clears_htt() {
        let mut e = [entry(LEAF_FEATURES, 0)];
        e[0].edx = EDX_HTT;
        filter(&mut e, 0, 1);
        assert_eq!(e[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn test_filter_leaf_b_describes_cores_and_x2apic_id() {
        let mut e = [
            entry(LEAF_TOPOLOGY, 0),
            entry(LEAF_TOPOLOGY, 1),
            entry(LEAF_TOPOLOGY, 2),
        ];
        filter(&mut e, 5, 6);
        assert_eq!(
            (e[0].eax, e[0].ebx, e[0].ecx >> 8),
            (0, 1, TOPOLOGY_LEVEL_SMT)
        );
        assert_eq!(
            (e[1].eax, e[1].ebx, e[1].ecx >> 8),
            (3, 6, TOPOLOGY_LEVEL_CORE)
        );
        assert_eq!((e[2].ebx, e[2].ecx >> 8), (0, 0));
        assert!(e.iter().all(|x| x.edx == 5));
    }

    #[test]
    fn test_filter_intel_leaf4_counts_cores() {
        let mut e = [
            intel_leaf0(),
            entry(LEAF_CACHE_PARAMS, 0),
            entry(LEAF_CACHE_PARAMS, 3),
        ];
        e[1].eax = 1 << 5 | 0x1; // L1 data
        e[2].eax = 3 << 5 | 0x3; // L3 unified
        filter(&mut e, 0, 8);
        assert_eq!(e[1].eax >> 26, 7);
        assert_eq!((e[1].eax >> 14) & 0xfff, 0);
        assert_eq!((e[2].eax >> 14) & 0xfff, 7);
        assert_eq!(e[2].eax & 0x3fff, 3 << 5 | 0x3);
    }

    #[test]
    fn test_add_emulated_sets_tsc_deadline_only_when_kvm_has_it() {
        let mut e = [entry(LEAF_FEATURES, 0), entry(LEAF_XSAVE, 0)];
        add_emulated(&mut e, Emulated::default());
        assert_eq!(e[0].ecx & ECX_TSC_DEADLINE, 0);
        add_emulated(&mut e, Emulated { tsc_deadline: true });
        assert_ne!(e[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(e[1].ecx, 0, "only leaf 1 changes");
    }

    #[test]
    fn test_xsave_size_without_extended_components_is_the_legacy_area() {
        let mut e = [entry(LEAF_XSAVE, 0)];
        e[0].eax = 0x3;
        filter(&mut e, 0, 1);
        assert_eq!((e[0].ebx, e[0].ecx), (576, 576));
    }

    #[test]
    fn test_bits_for_counts() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5)
            ],
            [0, 1, 2, 2, 3]
        );
    }

    /// What KVM reports on an Intel host with SMT and a shared L3, and on an AMD host: the
    /// leaves `filter` rewrites, with host topology in them that must not reach the guest.
    fn host(vendor: Vendor) -> Vec<kvm_cpuid_entry2> {
        let mut leaf0 = intel_leaf0();
        if vendor == Vendor::Amd {
            leaf0.ebx = u32::from_le_bytes(*b"Auth");
            leaf0.edx = u32::from_le_bytes(*b"enti");
            leaf0.ecx = u32::from_le_bytes(*b"cAMD");
        }
        let mut leaf1 = entry(LEAF_FEATURES, 0);
        leaf1.ebx = (7 << 24) | (16 << 16) | 0x0800;
        leaf1.edx = EDX_HTT;
        let mut l1 = entry(LEAF_CACHE_PARAMS, 0);
        l1.eax = (7 << 26) | (1 << 14) | (1 << 5) | 0x1;
        let mut l3 = entry(LEAF_CACHE_PARAMS, 3);
        l3.eax = (7 << 26) | (15 << 14) | (3 << 5) | 0x3;
        let mut amd = entry(LEAF_AMD_SIZE, 0);
        amd.ecx = 0x7007;
        // AMD's caches: L1 data shared by 2 threads, L3 by 16; its extended APIC ID leaf
        // names the host's APIC ID 9, core 4, 2 threads per core, node 1.
        let mut amd_l1 = entry(LEAF_AMD_CACHE_TOPOLOGY, 0);
        amd_l1.eax = (1 << 14) | (1 << 5) | 0x1;
        let mut amd_l3 = entry(LEAF_AMD_CACHE_TOPOLOGY, 3);
        amd_l3.eax = (15 << 14) | (3 << 5) | 0x3;
        let mut amd_ext = entry(LEAF_AMD_EXT_APIC_ID, 0);
        (amd_ext.eax, amd_ext.ebx, amd_ext.ecx) = (9, 0x104, 0x101);
        // XSAVE: x87, SSE and AVX (256 bytes at 576) supported, AVX-512's three components
        // described but not supported; the sizes as a host with all enabled reports them.
        let mut xsave = entry(LEAF_XSAVE, 0);
        (xsave.eax, xsave.ebx, xsave.ecx) = (0x7, 0xa88, 0xa88);
        let mut avx = entry(LEAF_XSAVE, 2);
        (avx.eax, avx.ebx) = (256, 576);
        let mut zmm_hi = entry(LEAF_XSAVE, 7);
        (zmm_hi.eax, zmm_hi.ebx) = (1024, 1664);
        vec![
            leaf0,
            leaf1,
            l1,
            l3,
            entry(LEAF_TOPOLOGY, 0),
            entry(LEAF_TOPOLOGY, 1),
            entry(LEAF_TOPOLOGY_V2, 0),
            entry(LEAF_TOPOLOGY_V2, 1),
            amd,
            amd_l1,
            amd_l3,
            amd_ext,
            xsave,
            entry(LEAF_XSAVE, 1),
            avx,
            zmm_hi,
        ]
    }

    fn leaf(e: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *e.iter()
            .find(|x| x.function == function && x.index == index)
            .unwrap()
    }

    /// For 1, 2, 3 and 8 vCPUs on both vendors, every vCPU's CPUID tells one consistent story:
    /// its APIC ID is its index everywhere the ID appears, the package holds exactly the
    /// configured vCPUs as cores of one thread each, HTT says whether there is more than one
    /// logical CPU, and no count of the host's leaks through.
    #[test]
    fn test_topology_invariants_for_1_2_3_and_8_vcpus() {
        for vendor in [Vendor::Intel, Vendor::Amd] {
            for count in [1u8, 2, 3, 8] {
                for index in 0..count {
                    let mut e = host(vendor);
                    filter(&mut e, index, count);
                    let (i, n) = (u32::from(index), u32::from(count));
                    let ctx = format!("{vendor:?}, vCPU {index} of {count}");
                    let l1 = leaf(&e, LEAF_FEATURES, 0);
                    assert_eq!(l1.ebx >> 24, i, "{ctx}: initial APIC ID");
                    assert_eq!((l1.ebx >> 16) & 0xff, n, "{ctx}: logical CPUs");
                    assert_eq!(l1.edx & EDX_HTT != 0, n > 1, "{ctx}: HTT");
                    assert_ne!(l1.ecx & ECX_HYPERVISOR, 0, "{ctx}: hypervisor bit");
                    for function in [LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2] {
                        let (smt, core) = (leaf(&e, function, 0), leaf(&e, function, 1));
                        assert_eq!((smt.ebx, smt.ecx >> 8), (1, TOPOLOGY_LEVEL_SMT), "{ctx}");
                        assert_eq!((core.ebx, core.ecx >> 8), (n, TOPOLOGY_LEVEL_CORE), "{ctx}");
                        // The shift leaves room for every APIC ID in the package.
                        assert!(n <= 1 << core.eax, "{ctx}: shift {}", core.eax);
                        assert_eq!((smt.edx, core.edx), (i, i), "{ctx}: x2APIC ID");
                    }
                    if vendor == Vendor::Intel {
                        for cache in [0, 3] {
                            let c = leaf(&e, LEAF_CACHE_PARAMS, cache);
                            assert_eq!((c.eax >> 26) + 1, n, "{ctx}: cores per package");
                            let sharing = ((c.eax >> 14) & 0xfff) + 1;
                            let want = if cache == 3 { n } else { 1 };
                            assert_eq!(sharing, want, "{ctx}: CPUs sharing cache {cache}");
                        }
                    } else {
                        let a = leaf(&e, LEAF_AMD_SIZE, 0);
                        assert_eq!((a.ecx & 0xff) + 1, n, "{ctx}: AMD core count");
                        let id_bits = (a.ecx >> 12) & 0xf;
                        assert!(
                            n <= 1 << id_bits && (id_bits == 0 || n > 1 << (id_bits - 1)),
                            "{ctx}: ApicIdCoreIdSize {id_bits} for {n} cores"
                        );
                        for (cache, level) in [(0, 1), (3, 3)] {
                            let c = leaf(&e, LEAF_AMD_CACHE_TOPOLOGY, cache);
                            let sharing = ((c.eax >> 14) & 0xfff) + 1;
                            let want = if level == 3 { n } else { 1 };
                            assert_eq!(sharing, want, "{ctx}: CPUs sharing AMD cache {cache}");
                            assert_eq!((c.eax >> 5) & 0x7, level, "{ctx}: cache level kept");
                        }
                        let x = leaf(&e, LEAF_AMD_EXT_APIC_ID, 0);
                        assert_eq!(x.eax, i, "{ctx}: extended APIC ID");
                        assert_eq!(x.ebx, i, "{ctx}: core ID, one thread per core");
                        assert_eq!(x.ecx, 0, "{ctx}: one node");
                    }
                    // XSAVE: room for every supported component (x87, SSE, AVX: 832 bytes),
                    // none for the unsupported AVX-512; the reset state's size enabled.
                    let x = leaf(&e, LEAF_XSAVE, 0);
                    assert_eq!((x.ebx, x.ecx), (576, 832), "{ctx}: XSAVE sizes");
                }
            }
        }
    }
}
