//! The information a kernel is handed at entry: the e820 memory map, and either the Linux zero
//! page (`struct boot_params`, 64-bit boot protocol) or the PVH `hvm_start_info`.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header, E820_MAX_ENTRIES_ZEROPAGE};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::layout;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// Errors while writing boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// The memory map has more entries than the zero page holds.
    #[error("The e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
    /// An address does not fit the 32-bit field the protocol gives it.
    #[error("{what} at {addr:#x} is above 4 GiB, out of reach of the boot protocol")]
    AddressAbove4G {
        /// The field's meaning.
        what: &'static str,
        /// The address.
        addr: u64,
    },
    /// linux-loader could not write the structures into guest memory.
    #[error("Failed to write boot parameters into guest memory")]
    Write(#[source] linux_loader::configurator::Error),
}

/// One entry of the guest's physical memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type ([`E820_RAM`] for RAM).
    pub kind: u32,
}

/// What the kernel is told besides the memory map.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Length of the command line including its NUL.
    pub cmdline_size: u32,
    /// Address and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// Address of the ACPI RSDP, if the machine has ACPI tables.
    pub rsdp: Option<u64>,
}

/// The guest's memory map: low RAM up to the EBDA, RAM from 1 MiB to the MMIO hole, and what
/// does not fit below the hole above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    };
    let mut map = vec![ram(0, layout::EBDA_START.min(mem_size))];
    let low_end = layout::low_ram_end(mem_size);
    if low_end > layout::HIMEM_START {
        map.push(ram(layout::HIMEM_START, low_end));
    }
    if mem_size > layout::MMIO_GAP_START {
        let above = mem_size - layout::MMIO_GAP_START;
        map.push(ram(layout::MMIO_GAP_END, layout::MMIO_GAP_END + above));
    }
    map
}

fn low_u32(what: &'static str, addr: u64) -> Result<u32, BootParamsError> {
    u32::try_from(addr).map_err(|_| BootParamsError::AddressAbove4G { what, addr })
}

/// Builds the zero page for the Linux 64-bit boot protocol. `header` is the bzImage's setup
/// header; an ELF kernel has none and gets a minimal one.
pub fn build_zero_page(
    header: Option<setup_header>,
    info: &BootInfo,
) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    match header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
        }
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = low_u32("The command line", info.cmdline_addr)?;
    params.hdr.cmdline_size = info.cmdline_size;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    let map = e820_map(info.mem_size);
    if map.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        slot.addr = entry.addr;
        slot.size = entry.size;
        slot.r#type = entry.kind;
    }
    params.e820_entries = map.len() as u8;
    params.acpi_rsdp_addr = info.rsdp.unwrap_or(0);
    Ok(params)
}

/// Writes the zero page to [`layout::ZERO_PAGE_START`].
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    info: &BootInfo,
) -> Result<(), BootParamsError> {
    let params = build_zero_page(header, info)?;
    let boot = BootParams::new(&params, GuestAddress(layout::ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&boot, mem).map_err(BootParamsError::Write)
}

/// Writes the PVH start info, its memory map and (with an initrd) its module list.
pub fn write_pvh_start_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), BootParamsError> {
    let memmap: Vec<hvm_memmap_table_entry> = e820_map(info.mem_size)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: info.cmdline_addr,
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        rsdp_paddr: info.rsdp.unwrap_or(0),
        ..Default::default()
    };
    let modules: Vec<hvm_modlist_entry> = info
        .initrd
        .iter()
        .map(|&(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .collect();
    if !modules.is_empty() {
        start_info.nr_modules = modules.len() as u32;
        start_info.modlist_paddr = layout::PVH_MODLIST_START;
    }
    let mut boot = BootParams::new(&start_info, GuestAddress(layout::PVH_INFO_START));
    boot.set_sections(&memmap, GuestAddress(layout::PVH_MEMMAP_START));
    if !modules.is_empty() {
        boot.set_modules(&modules, GuestAddress(layout::PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams(&boot, mem).map_err(BootParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    const MIB: u64 = 1 << 20;

    fn info(mem_size: u64, initrd: Option<(u64, u64)>) -> BootInfo {
        BootInfo {
            mem_size,
            cmdline_addr: layout::CMDLINE_START,
            cmdline_size: 12,
            initrd,
            rsdp: Some(layout::ACPI_START),
        }
    }

    #[test]
    fn test_e820_map_without_hole_two_ram_entries() {
        let map = e820_map(256 * MIB);
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: layout::EBDA_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: MIB,
                    size: 255 * MIB,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn test_e820_map_with_hole_ram_continues_above_4g() {
        let map = e820_map(4096 * MIB);
        assert_eq!(map.len(), 3);
        assert_eq!(map[1].addr + map[1].size, layout::MMIO_GAP_START);
        assert_eq!(map[2].addr, layout::MMIO_GAP_END);
        assert_eq!(map[2].size, 4096 * MIB - layout::MMIO_GAP_START);
    }

    #[test]
    fn test_e820_map_total_excludes_only_legacy_area() {
        let total: u64 = e820_map(5000 * MIB).iter().map(|e| e.size).sum();
        assert_eq!(
            total,
            5000 * MIB - (layout::HIMEM_START - layout::EBDA_START)
        );
    }

    #[test]
    fn test_zero_page_without_header_has_magic_and_map() {
        let params = build_zero_page(None, &info(128 * MIB, Some((0x500_0000, 0x1234)))).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.type_of_loader }, KERNEL_LOADER_OTHER);
        assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ hdr.ramdisk_image }, 0x500_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!(params.e820_entries, 2);
        let second = params.e820_table[1];
        assert_eq!(({ second.addr }, { second.size }), (MIB, 127 * MIB));
    }

    #[test]
    fn test_zero_page_with_header_keeps_kernel_fields() {
        let header = setup_header {
            version: 0x20f,
            setup_sects: 27,
            xloadflags: 0x7f,
            ..Default::default()
        };
        let params = build_zero_page(Some(header), &info(64 * MIB, None)).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.version }, 0x20f);
        assert_eq!({ hdr.setup_sects }, 27);
        assert_eq!({ hdr.type_of_loader }, KERNEL_LOADER_OTHER);
        assert_eq!({ hdr.ramdisk_size }, 0);
    }

    #[test]
    fn test_zero_page_cmdline_above_4g_is_refused() {
        let mut bad = info(64 * MIB, None);
        bad.cmdline_addr = 1 << 33;
        assert!(matches!(
            build_zero_page(None, &bad),
            Err(BootParamsError::AddressAbove4G { .. })
        ));
    }

    #[test]
    fn test_pvh_start_info_written_with_memmap_and_module() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (64 * MIB) as usize)]).unwrap();
        write_pvh_start_info(&mem, &info(64 * MIB, Some((0x300_0000, 0x800)))).unwrap();
        let start: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(start.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(start.rsdp_paddr, layout::ACPI_START);
        assert_eq!(start.memmap_entries, 2);
        assert_eq!(start.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(start.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 0x800));
        let second: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(layout::PVH_MEMMAP_START + 24))
            .unwrap();
        assert_eq!(
            (second.addr, second.size, second.type_),
            (MIB, 63 * MIB, E820_RAM)
        );
    }

    #[test]
    fn test_zero_page_points_at_the_rsdp_or_not() {
        let with = build_zero_page(None, &info(64 * MIB, None)).unwrap();
        assert_eq!({ with.acpi_rsdp_addr }, layout::ACPI_START);
        let without = build_zero_page(
            None,
            &BootInfo {
                rsdp: None,
                ..info(64 * MIB, None)
            },
        )
        .unwrap();
        assert_eq!({ without.acpi_rsdp_addr }, 0);
    }
}
