//! x86_64 boot structures: each module builds one kind of state a kernel finds at entry.

pub mod acpi;
pub mod bootparams;
pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod paging;
pub mod regs;
