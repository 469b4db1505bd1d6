//! Register, MSR, FPU and local-APIC state of a vCPU at kernel entry.
//!
//! Pure functions that produce or adjust `kvm-bindings` structures; the VMM hands them to KVM.
//! The boot protocols:
//! - Linux 64-bit: long mode, paging on with the identity map, `%rsi` = zero page.
//! - PVH: 32-bit protected mode, paging off, `%ebx` = `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{self, CodeMode};
use crate::layout;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 0x1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE: u64 = 0x800;
const MTRR_MEM_TYPE_WB: u64 = 0x6;

const APIC_TPR: usize = 0x80;
const APIC_ISR: usize = 0x100;
const APIC_IRR: usize = 0x200;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Which protocol the kernel is entered through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol (bzImage, or an ELF without a PVH note).
    Linux64,
    /// PVH: 32-bit protected mode.
    Pvh,
}

impl EntryMode {
    fn code_mode(self) -> CodeMode {
        match self {
            EntryMode::Linux64 => CodeMode::Long,
            EntryMode::Pvh => CodeMode::Protected,
        }
    }
}

/// General-purpose registers at entry for the boot vCPU.
pub fn boot_regs(mode: EntryMode, entry: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_START;
        }
        EntryMode::Pvh => regs.rbx = layout::PVH_INFO_START,
    }
    regs
}

/// Writes the GDT and an empty IDT to guest memory, and for long mode the identity page tables.
pub fn write_boot_tables(
    mem: &GuestMemoryMmap,
    mode: EntryMode,
) -> vm_memory::GuestMemoryResult<()> {
    for (i, entry) in gdt::gdt(mode.code_mode()).iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT_START))?;
    if mode == EntryMode::Linux64 {
        super::paging::write_identity_tables(mem)?;
    }
    Ok(())
}

/// Adjusts the special registers KVM reports for a fresh vCPU to the protocol's entry state.
pub fn configure_sregs(sregs: &mut kvm_sregs, mode: EntryMode) {
    let table = gdt::gdt(mode.code_mode());
    let code = gdt::segment_from_entry(table[1], gdt::CODE_SELECTOR);
    let data = gdt::segment_from_entry(table[2], gdt::DATA_SELECTOR);
    let tss = gdt::segment_from_entry(table[3], gdt::TSS_SELECTOR);

    sregs.gdt.base = layout::GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = layout::IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Linux64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

/// The FPU state Linux expects: x87 control word and MXCSR at their reset values.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs set at boot: syscall MSRs cleared, TSC at 0, fast strings on, MTRRs on with
/// write-back as the default memory type.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_TSC, 0),
        msr(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        msr(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

/// The vectors set in the 256-bit register array at `base` (ISR, TMR or IRR: eight 32-bit
/// registers, 16 bytes apart).
fn lapic_vectors(lapic: &kvm_lapic_state, base: usize) -> Vec<u8> {
    (0..8u8)
        .flat_map(|word| {
            let bits = lapic_reg(lapic, base + usize::from(word) * 0x10);
            (0..32u8)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| word * 32 + bit)
        })
        .collect()
}

/// The local APIC's interrupt state in one line: the task priority, the vectors in service
/// (delivered, not yet acknowledged with an EOI) and the vectors requested (waiting to be
/// delivered). A vector stuck in service blocks every vector of its priority class and below.
pub fn describe_lapic(lapic: &kvm_lapic_state) -> String {
    let list = |v: Vec<u8>| {
        let items: Vec<String> = v.iter().map(|x| format!("{x:#x}")).collect();
        format!("[{}]", items.join(" "))
    };
    format!(
        "lapic tpr={:#x} in-service={} requested={}",
        lapic_reg(lapic, APIC_TPR),
        list(lapic_vectors(lapic, APIC_ISR)),
        list(lapic_vectors(lapic, APIC_IRR))
    )
}

/// Routes LINT0 as ExtINT (the PIC, in virtual-wire mode) and LINT1 as NMI, as a BIOS leaves
/// the local APIC for an OS that reads the MP table.
pub fn configure_lint(lapic: &mut kvm_lapic_state) {
    let delivery = |reg: u32, mode: u32| (reg & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, delivery(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, delivery(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_boot_regs_linux64_points_rsi_at_zero_page() {
        let regs = boot_regs(EntryMode::Linux64, 0x100_0200);
        assert_eq!(regs.rip, 0x100_0200);
        assert_eq!(regs.rsi, layout::ZERO_PAGE_START);
        assert_eq!(regs.rsp, layout::BOOT_STACK_POINTER);
        assert_eq!(regs.rflags, 0x2);
    }

    #[test]
    fn test_describe_lapic_lists_vectors_in_service_and_requested() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_ISR + 0x10, 1 << 4); // vector 0x24
        set_lapic_reg(&mut lapic, APIC_IRR + 0x70, 1 << 12); // vector 0xec
        set_lapic_reg(&mut lapic, APIC_IRR, 1); // vector 0
        assert_eq!(
            describe_lapic(&lapic),
            "lapic tpr=0x0 in-service=[0x24] requested=[0x0 0xec]"
        );
    }

    #[test]
    fn test_boot_regs_pvh_points_rbx_at_start_info() {
        let regs = boot_regs(EntryMode::Pvh, 0x100_0000);
        assert_eq!(regs.rbx, layout::PVH_INFO_START);
    }

    #[test]
    fn test_configure_sregs_long_mode_enables_paging_and_lma() {
        let mut sregs = kvm_sregs::default();
        configure_sregs(&mut sregs, EntryMode::Linux64);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.cr3, layout::PML4_START);
        assert_eq!(sregs.efer & EFER_LMA, EFER_LMA);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.gdt.limit, 31);
    }

    #[test]
    fn test_configure_sregs_pvh_is_protected_mode_without_paging() {
        let mut sregs = kvm_sregs::default();
        configure_sregs(&mut sregs, EntryMode::Pvh);
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, X86_CR0_PE);
        assert_eq!(sregs.efer, 0);
        assert_eq!((sregs.cs.l, sregs.cs.db), (0, 1));
    }

    #[test]
    fn test_write_boot_tables_gdt_matches_sregs_segments() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&mem, EntryMode::Linux64).unwrap();
        let mut sregs = kvm_sregs::default();
        configure_sregs(&mut sregs, EntryMode::Linux64);
        let code: u64 = mem
            .read_obj(GuestAddress(
                layout::GDT_START + u64::from(gdt::CODE_SELECTOR),
            ))
            .unwrap();
        assert_eq!(gdt::segment_from_entry(code, gdt::CODE_SELECTOR), sregs.cs);
    }

    #[test]
    fn test_configure_lint_sets_extint_and_nmi_keeping_other_bits() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x1_0000 | 0x700);
        configure_lint(&mut lapic);
        assert_eq!(
            lapic_reg(&lapic, APIC_LVT0),
            0x1_0000 | (APIC_MODE_EXTINT << 8)
        );
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), APIC_MODE_NMI << 8);
    }

    #[test]
    fn test_boot_msrs_enable_mtrr_write_back() {
        let msrs = boot_msrs();
        let mtrr = msrs.iter().find(|m| m.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(mtrr.data, MTRR_ENABLE | MTRR_MEM_TYPE_WB);
    }
}
