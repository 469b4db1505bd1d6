//! Boot-time state of a fennec guest on x86_64: what is in guest memory and in the vCPUs' registers
//! when the kernel's first instruction runs.
//!
//! - [`layout`]: every guest-physical address used at boot.
//! - [`loader`]: kernel (ELF/PVH, bzImage), initrd and command line, via linux-loader.
//! - [`x86_64`]: zero page / PVH start info and e820, MP table, GDT, page tables, registers,
//!   MSRs, LAPIC and CPUID.
//!
//! This crate knows nothing about devices, the event loop or the API; it fills guest memory and
//! returns `kvm-bindings` structures for the VMM to apply.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod layout;
pub mod loader;
pub mod x86_64;
