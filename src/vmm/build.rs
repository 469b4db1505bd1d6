//! Building a VM: create the machine, attach its devices, describe it to the guest, boot a
//! kernel into it.

use fennec_boot::layout;
use fennec_boot::loader::{self, LoadedKernel};
use fennec_boot::x86_64::bootparams::{self, BootInfo};
use fennec_boot::x86_64::regs::{self, EntryMode};
use fennec_boot::x86_64::{acpi, mptable};
use vm_memory::GuestMemoryMmap;

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::Error;
use crate::config::{ConfigError, VmConfig};
use crate::console::Console;
use crate::device_manager::DeviceManager;
use crate::mmds::Mmds;
use crate::vstate::kvm::KvmContext;
use crate::vstate::memory;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::KvmVm;

/// A VM that is built and ready to start.
pub struct Vm {
    pub(super) mem: GuestMemoryMmap,
    pub(super) kvm_vm: KvmVm,
    pub(super) vcpus: Vec<Vcpu>,
    pub(super) devices: DeviceManager,
    /// The configuration it was built from.
    pub(super) config: VmConfig,
    /// Start with every vCPU parked (a restored VM not resumed yet).
    pub(super) paused: bool,
    /// The host's XSAVE area fits a snapshot's.
    pub(super) snapshots: bool,
}

impl Vm {
    /// Builds a VM from `config`, with `console` as its serial console: create, attach,
    /// describe, boot.
    pub fn new(config: &VmConfig, console: Console) -> Result<Self, Error> {
        Self::with_mmds(config, console, &Mmds::default())
    }

    /// [`Vm::new`], the guest's metadata service (if `config` has one) answering from `mmds`,
    /// which the caller keeps to change the metadata while the VM runs.
    ///
    /// This is the gate every booted VM passes: the configuration is checked here, once
    /// ([`VmConfig::validate`]); a drive still naming a template is refused when its device is
    /// made ([`ConfigError::Unprovisioned`]).
    pub fn with_mmds(config: &VmConfig, console: Console, mmds: &Mmds) -> Result<Self, Error> {
        config.validate()?;
        // Open the files first: a typo costs no KVM setup.
        let boot = config.boot_source.as_ref().ok_or(ConfigError::NoKernel)?;
        let mut kernel_file = open("kernel", &boot.kernel_image_path)?;
        let mut initrd_file = boot
            .initrd_path
            .as_deref()
            .map(|p| open("initrd", p))
            .transpose()?;

        let (kvm, mem, kvm_vm, vcpus) = Self::create(config)?;
        let devices = DeviceManager::new(&kvm_vm, &mem, console, config, (mmds, None))?;
        let (cmdline, rsdp) = Self::describe(config, &mem, &devices)?;

        // Boot: the kernel, the initrd, the boot protocol's tables, the vCPUs' registers.
        let kernel = loader::load_kernel(&mem, &mut kernel_file)?;
        let initrd_max = kernel
            .setup_header
            .map(|h| u64::from(h.initrd_addr_max))
            .filter(|max| *max != 0);
        let initrd = initrd_file
            .as_mut()
            .map(|f| loader::load_initrd(&mem, f, kernel.end, initrd_max))
            .transpose()?;
        let cmdline_size = loader::write_cmdline(&mem, &cmdline)?;
        let info = BootInfo {
            mem_size: config.machine_config.mem_size_bytes(),
            cmdline_addr: layout::CMDLINE_START,
            cmdline_size,
            initrd,
            rsdp,
        };
        match kernel.mode {
            EntryMode::Pvh => bootparams::write_pvh_start_info(&mem, &info)?,
            EntryMode::Linux64 => bootparams::write_zero_page(&mem, kernel.setup_header, &info)?,
        }
        regs::write_boot_tables(&mem, kernel.mode).map_err(Error::BootTables)?;
        let cpuid = kvm.supported_cpuid()?;
        let count = config.machine_config.vcpu_count;
        for vcpu in &vcpus {
            let entry = (vcpu.index() == 0).then_some((kernel.mode, kernel.entry));
            vcpu.configure(&cpuid, count, entry)?;
        }
        log_boot(config, &boot.kernel_image_path, &kernel, initrd, &cmdline);
        let snapshots = kvm.xsave_size() <= crate::snapshot::XSAVE_AREA;
        Ok(Vm {
            mem,
            kvm_vm,
            vcpus,
            devices,
            // Each interface's MAC as the guest has it, so a snapshot keeps it (a bridge's is
            // new each start).
            config: config.with_macs_pinned(),
            paused: false,
            snapshots,
        })
    }

    /// Create: KVM, guest memory, the VM with its irqchip and PIT, and the vCPUs (configured
    /// when a kernel is booted into them, or restored).
    fn create(config: &VmConfig) -> Result<(KvmContext, GuestMemoryMmap, KvmVm, Vec<Vcpu>), Error> {
        Self::create_with(config, |size| Ok(memory::create_guest_memory(size)?))
    }

    /// [`Vm::create`] with guest memory from `memory` (given the RAM size).
    pub(super) fn create_with(
        config: &VmConfig,
        memory: impl FnOnce(u64) -> Result<GuestMemoryMmap, Error>,
    ) -> Result<(KvmContext, GuestMemoryMmap, KvmVm, Vec<Vcpu>), Error> {
        let machine = &config.machine_config;
        let kvm = KvmContext::open()?;
        if usize::from(machine.vcpu_count) > kvm.max_vcpus() {
            return Err(Error::TooManyVcpus {
                wanted: machine.vcpu_count,
                max: kvm.max_vcpus(),
            });
        }
        let mem = memory(machine.mem_size_bytes())?;
        let kvm_vm = KvmVm::new(&kvm, &mem)?;
        let msr_list: std::sync::Arc<[u32]> = kvm.msr_index_list()?.into();
        let vcpus = (0..machine.vcpu_count)
            .map(|index| Vcpu::new(&kvm_vm, index, msr_list.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((kvm, mem, kvm_vm, vcpus))
    }

    /// Describe: tells the guest what the machine has, from the devices attached: their
    /// entries on the kernel command line and the MP table (CPUs, IOAPIC, legacy IRQs), which
    /// fennec's microVM kernel reads, and the ACPI tables, which distribution kernels read.
    /// Returns the whole command line and the ACPI tables' root (RSDP) if there are tables.
    fn describe(
        config: &VmConfig,
        mem: &GuestMemoryMmap,
        devices: &DeviceManager,
    ) -> Result<(loader::Cmdline, Option<u64>), Error> {
        let (base, mut extra) = config.kernel_cmdline();
        extra.extend(devices.cmdline_entries());
        let cmdline = loader::build_cmdline(&base, &extra)?;
        let vcpus = config.machine_config.vcpu_count;
        mptable::write(mem, vcpus)?;
        let rsdp = match devices.legacy.acpi {
            Some(_) => Some(acpi::write(mem, &devices.acpi_description(vcpus))?),
            None => None,
        };
        Ok((cmdline, rsdp))
    }
}

fn log_boot(
    config: &VmConfig,
    path: &std::path::Path,
    kernel: &LoadedKernel,
    initrd: Option<(u64, u64)>,
    cmdline: &loader::Cmdline,
) {
    log::info!(
        "Loaded {:?} kernel {} (entry {:#x}, ends {:#x}); {} vCPUs, {} MiB",
        kernel.format,
        path.display(),
        kernel.entry,
        kernel.end,
        config.machine_config.vcpu_count,
        config.machine_config.mem_size_mib
    );
    if let Some((addr, size)) = initrd {
        log::info!("Loaded initrd at {addr:#x} ({size} bytes)");
    }
    if let Ok(c) = cmdline.as_cstring() {
        log::info!("Kernel command line: {}", c.to_string_lossy());
    }
}

/// Opens the kernel or initrd at `path`, which must be a regular file, naming it in the error.
/// The open does not block (a FIFO would wait for a writer, and the control socket with it),
/// and the check is on what was opened, not on the path. Reads of a regular file never block,
/// so the descriptor keeps `O_NONBLOCK`.
pub fn open(what: &'static str, path: &Path) -> Result<File, Error> {
    let open_error = |source| Error::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(open_error)?;
    let file_type = file.metadata().map_err(open_error)?.file_type();
    if !file_type.is_file() {
        return Err(Error::NotAFile {
            what,
            path: path.to_path_buf(),
            kind: fennec_devices::virtio::block::disk::file_kind(file_type),
        });
    }
    Ok(file)
}
