//! The boot GDT and the `kvm_segment`s that match it.
//!
//! A vCPU's hidden segment state must agree with the descriptors in guest memory, or the first
//! segment reload in the guest changes the CPU mode under it; both come from the same table here.

use kvm_bindings::kvm_segment;

/// Access/flags for a 64-bit code segment (present, DPL 0, execute/read, L=1).
const CODE64: u16 = 0xa09b;
/// Access/flags for a 32-bit code segment (present, DPL 0, execute/read, D=1, G=1).
const CODE32: u16 = 0xc09b;
/// Access/flags for a data segment (present, DPL 0, read/write, D/B=1, G=1).
const DATA: u16 = 0xc093;
/// Access/flags for a 64-bit TSS (present, busy).
const TSS: u16 = 0x808b;

/// Selector of the code segment.
pub const CODE_SELECTOR: u16 = 1 << 3;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 2 << 3;
/// Selector of the TSS.
pub const TSS_SELECTOR: u16 = 3 << 3;

/// Which mode the boot GDT's code segment is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    /// 64-bit long mode (Linux 64-bit boot protocol).
    Long,
    /// 32-bit protected mode (PVH).
    Protected,
}

/// Encodes one GDT descriptor.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (((base as u64) & 0xff00_0000) << 32)
        | (((flags as u64) & 0x0000_f0ff) << 40)
        | (((limit as u64) & 0x000f_0000) << 32)
        | (((base as u64) & 0x00ff_ffff) << 16)
        | ((limit as u64) & 0x0000_ffff)
}

/// The boot GDT: null, code, data, TSS.
pub fn gdt(mode: CodeMode) -> [u64; 4] {
    let code = match mode {
        CodeMode::Long => CODE64,
        CodeMode::Protected => CODE32,
    };
    [
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(DATA, 0, 0xfffff),
        gdt_entry(TSS, 0, 0xfffff),
    ]
}

/// The `kvm_segment` a CPU holds after loading descriptor `entry` through `selector`.
pub fn segment_from_entry(entry: u64, selector: u16) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granular = bit(55);
    let limit = if granular == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: granular,
        avl: bit(52),
        unusable: 1 - bit(47),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_gdt_entry_long_mode_code_matches_known_encoding() {
        assert_eq!(gdt_entry(CODE64, 0, 0xfffff), 0x00af_9b00_0000_ffff);
    }

    #[test]
    fn test_segment_from_entry_long_code_has_l_bit_and_full_limit() {
        let seg = segment_from_entry(gdt(CodeMode::Long)[1], CODE_SELECTOR);
        assert_eq!((seg.l, seg.db, seg.g, seg.present), (1, 0, 1, 1));
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.type_, 0xb);
        assert_eq!(seg.selector, CODE_SELECTOR);
    }

    #[test]
    fn test_segment_from_entry_protected_code_is_32_bit() {
        let seg = segment_from_entry(gdt(CodeMode::Protected)[1], CODE_SELECTOR);
        assert_eq!((seg.l, seg.db), (0, 1));
    }

    #[test]
    fn test_segment_from_entry_round_trips_base_and_limit() {
        let seg = segment_from_entry(gdt_entry(0x0093, 0x1234_5678, 0xabcde), 0x10);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.g, 0);
    }

    #[test]
    fn test_segment_from_entry_null_descriptor_is_unusable() {
        assert_eq!(segment_from_entry(0, 0).unusable, 1);
    }
}
