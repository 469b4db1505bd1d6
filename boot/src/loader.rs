//! Loading a kernel, an initrd and a command line into guest memory with linux-loader.
//!
//! Kernel formats, tried in this order:
//! - ELF with a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`): entered through PVH;
//! - ELF without one (a 64-bit `vmlinux`): entered at `e_entry` through the Linux 64-bit protocol;
//! - bzImage (`HdrS` setup header): protected-mode code at its `code32_start`, entered at the
//!   64-bit entry point 0x200 bytes in.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

pub use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{GuestAddress, GuestMemoryMmap, ReadVolatile};

use crate::layout;
use crate::x86_64::regs::EntryMode;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_HDR_OFFSET: u64 = 0x202;
const BZIMAGE_HDR_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Boot protocol 2.12 introduced `xloadflags`.
const BOOT_PROTOCOL_XLOADFLAGS: u16 = 0x20c;
const XLF_KERNEL_64: u16 = 1 << 0;
const PAGE_SIZE: u64 = 0x1000;

/// Errors while loading the kernel, the initrd or the command line.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file could not be read.
    #[error("Failed to read the kernel image")]
    ReadKernel(#[source] io::Error),
    /// Neither ELF nor bzImage.
    #[error("The kernel image is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat,
    /// linux-loader rejected the image.
    #[error("Failed to load the {format} kernel: {source}; is it an x86_64 kernel that fits in guest memory?")]
    Load {
        /// "ELF" or "bzImage".
        format: &'static str,
        /// What linux-loader said.
        source: linux_loader::loader::Error,
    },
    /// The kernel's end lies beyond the RAM below the MMIO hole.
    #[error(
        "The kernel ends at {end:#x}, beyond guest RAM (which ends at {ram_end:#x} below 4 GiB)"
    )]
    KernelTooLarge {
        /// End of the loaded kernel.
        end: u64,
        /// End of low RAM.
        ram_end: u64,
    },
    /// A bzImage without a 64-bit entry point.
    #[error(
        "The bzImage does not support the 64-bit boot protocol (boot protocol version {0:#x})"
    )]
    NoBoot64(u16),
    /// The initrd file could not be read.
    #[error("Failed to read the initrd")]
    ReadInitrd(#[source] io::Error),
    /// The initrd does not fit between the kernel and the top of low RAM.
    #[error("The initrd ({size} bytes) does not fit in guest memory between the kernel's end ({kernel_end:#x}) and {top:#x}; give the guest more memory")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest address the initrd may reach.
        top: u64,
    },
    /// The command line is not acceptable to the kernel.
    #[error("Invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing the command line failed.
    #[error("Failed to write the command line into guest memory")]
    WriteCmdline(#[source] linux_loader::loader::Error),
}

/// The kernel's format, as detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF with a PVH entry note.
    ElfPvh,
    /// ELF without a PVH note.
    Elf,
    /// bzImage.
    BzImage,
}

/// A kernel loaded into guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Detected format.
    pub format: KernelFormat,
    /// How to enter it.
    pub mode: EntryMode,
    /// Guest address of the entry point.
    pub entry: u64,
    /// First guest address after the kernel image.
    pub end: u64,
    /// The bzImage's setup header, to become part of the zero page.
    pub setup_header: Option<setup_header>,
}

fn peek(image: &mut File, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
    image.seek(SeekFrom::Start(offset))?;
    match image.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Detects the kernel's format and loads it.
pub fn load_kernel(mem: &GuestMemoryMmap, image: &mut File) -> Result<LoadedKernel, LoaderError> {
    let mut magic = [0u8; 4];
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let ram_end = mem_low_end(mem);
    let kernel = if peek(image, 0, &mut magic).map_err(LoaderError::ReadKernel)?
        && &magic == ELF_MAGIC
    {
        let loaded = Elf::load(mem, None, image, himem).map_err(|source| LoaderError::Load {
            format: "ELF",
            source,
        })?;
        let (format, mode, entry) = match loaded.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => {
                (KernelFormat::ElfPvh, EntryMode::Pvh, addr.0)
            }
            _ => (KernelFormat::Elf, EntryMode::Linux64, loaded.kernel_load.0),
        };
        LoadedKernel {
            format,
            mode,
            entry,
            end: loaded.kernel_end,
            setup_header: None,
        }
    } else if peek(image, BZIMAGE_HDR_OFFSET, &mut magic).map_err(LoaderError::ReadKernel)?
        && &magic == BZIMAGE_HDR_MAGIC
    {
        let loaded =
            BzImage::load(mem, None, image, himem).map_err(|source| LoaderError::Load {
                format: "bzImage",
                source,
            })?;
        // `setup_header` is always set by the bzImage loader.
        let header = loaded.setup_header.unwrap_or_default();
        let version = header.version;
        if version < BOOT_PROTOCOL_XLOADFLAGS || header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LoaderError::NoBoot64(version));
        }
        LoadedKernel {
            format: KernelFormat::BzImage,
            mode: EntryMode::Linux64,
            entry: loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
            end: loaded.kernel_end,
            setup_header: Some(header),
        }
    } else {
        return Err(LoaderError::UnknownFormat);
    };
    if kernel.end > ram_end {
        return Err(LoaderError::KernelTooLarge {
            end: kernel.end,
            ram_end,
        });
    }
    Ok(kernel)
}

fn mem_low_end(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
    mem.iter()
        .map(|r| r.last_addr().unchecked_add(1).0)
        .filter(|end| *end <= layout::MMIO_GAP_START)
        .max()
        .unwrap_or(0)
}

/// Loads the initrd at the highest page-aligned address below both the top of low RAM and
/// `max_addr` (the kernel's `initrd_addr_max`, if it has one). Returns `(address, size)`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    image: &mut File,
    kernel_end: u64,
    max_addr: Option<u64>,
) -> Result<(u64, u64), LoaderError> {
    let size = image
        .seek(SeekFrom::End(0))
        .and_then(|size| image.rewind().map(|()| size))
        .map_err(LoaderError::ReadInitrd)?;
    let top = max_addr.map_or(mem_low_end(mem), |max| {
        max.saturating_add(1).min(mem_low_end(mem))
    });
    let kernel_end_page = kernel_end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let addr = top
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= kernel_end_page)
        .ok_or(LoaderError::InitrdTooLarge {
            size,
            kernel_end,
            top,
        })?;
    let mut slice = mem_slice(mem, addr, size)?;
    image
        .read_exact_volatile(&mut slice)
        .map_err(|e| LoaderError::ReadInitrd(io::Error::other(e.to_string())))?;
    Ok((addr, size))
}

fn mem_slice(
    mem: &GuestMemoryMmap,
    addr: u64,
    size: u64,
) -> Result<vm_memory::VolatileSlice<'_, vm_memory::bitmap::MS<'_, GuestMemoryMmap>>, LoaderError> {
    use vm_memory::GuestMemoryBackend;
    mem.get_slice(GuestAddress(addr), size as usize)
        .map_err(|e| LoaderError::ReadInitrd(io::Error::other(e.to_string())))
}

/// Parses `raw` as a kernel command line and appends `extra` parameters.
pub fn build_cmdline(raw: &str, extra: &[String]) -> Result<Cmdline, LoaderError> {
    let mut cmdline =
        Cmdline::try_from(raw, layout::CMDLINE_MAX_SIZE).map_err(LoaderError::Cmdline)?;
    for param in extra {
        cmdline.insert_str(param).map_err(LoaderError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Writes the command line to [`layout::CMDLINE_START`]; returns its size including the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<u32, LoaderError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), cmdline)
        .map_err(LoaderError::WriteCmdline)?;
    let size = cmdline
        .as_cstring()
        .map_err(LoaderError::Cmdline)?
        .as_bytes_with_nul()
        .len();
    Ok(size as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::Bytes;

    const MIB: u64 = 1 << 20;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile_in_tmp();
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    fn tempfile_in_tmp() -> File {
        let path = std::env::temp_dir().join(format!(
            "fennec-boot-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn test_load_kernel_garbage_is_unknown_format() {
        let mut f = file_with(&[0x55; 4096]);
        assert!(matches!(
            load_kernel(&mem(16 * MIB), &mut f),
            Err(LoaderError::UnknownFormat)
        ));
    }

    #[test]
    fn test_load_kernel_empty_file_is_unknown_format() {
        let mut f = file_with(&[]);
        assert!(matches!(
            load_kernel(&mem(16 * MIB), &mut f),
            Err(LoaderError::UnknownFormat)
        ));
    }

    #[test]
    fn test_load_kernel_truncated_elf_is_load_error() {
        let mut f = file_with(b"\x7fELF\x02\x01\x01");
        assert!(matches!(
            load_kernel(&mem(16 * MIB), &mut f),
            Err(LoaderError::Load { format: "ELF", .. })
        ));
    }

    #[test]
    fn test_load_initrd_placed_page_aligned_at_top_of_ram() {
        let m = mem(16 * MIB);
        let mut f = file_with(&[0xab; 5000]);
        let (addr, size) = load_initrd(&m, &mut f, 2 * MIB, None).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr % PAGE_SIZE, 0);
        assert!(addr + size <= 16 * MIB && addr + size > 16 * MIB - PAGE_SIZE - 5000);
        assert_eq!(m.read_obj::<u8>(GuestAddress(addr + 4999)).unwrap(), 0xab);
    }

    #[test]
    fn test_load_initrd_respects_initrd_addr_max() {
        let mut f = file_with(&[1; 100]);
        let (addr, _) = load_initrd(&mem(64 * MIB), &mut f, 2 * MIB, Some(8 * MIB - 1)).unwrap();
        assert!(addr + 100 <= 8 * MIB);
    }

    #[test]
    fn test_load_initrd_overlapping_kernel_is_too_large() {
        let mut f = file_with(&[0; 3 * MIB as usize]);
        assert!(matches!(
            load_initrd(&mem(4 * MIB), &mut f, 2 * MIB, None),
            Err(LoaderError::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn test_build_cmdline_appends_extra_params() {
        let cmdline = build_cmdline("quiet", &["console=ttyS0".to_string()]).unwrap();
        assert_eq!(
            cmdline.as_cstring().unwrap().to_str().unwrap(),
            "quiet console=ttyS0"
        );
    }

    #[test]
    fn test_build_cmdline_too_long_is_refused() {
        let long = "x".repeat(layout::CMDLINE_MAX_SIZE + 1);
        assert!(matches!(
            build_cmdline(&long, &[]),
            Err(LoaderError::Cmdline(_))
        ));
    }

    #[test]
    fn test_write_cmdline_is_nul_terminated() {
        let m = mem(MIB);
        let size = write_cmdline(&m, &build_cmdline("a=b", &[]).unwrap()).unwrap();
        assert_eq!(size, 4);
        let mut buf = [0xffu8; 4];
        m.read_slice(&mut buf, GuestAddress(layout::CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"a=b\0");
    }
}
