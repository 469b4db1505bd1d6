//! Building, starting and ending a VM.
//!
//! [`Vm::new`] does all the work that can fail because of the configuration: it opens KVM, maps
//! memory, loads the kernel, initrd and command line, writes the boot tables and creates vCPUs
//! and devices. [`Vm::start`] only spawns threads: one per vCPU, and one controller thread that
//! runs the event loop (console input, guest resets, stop requests) and, when the guest is done,
//! stops and joins the vCPUs and reports an [`ExitReason`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use fennec_boot::layout;
use fennec_boot::loader::{self, LoadedKernel, LoaderError};
use fennec_boot::x86_64::bootparams::{self, BootInfo, BootParamsError};
use fennec_boot::x86_64::mptable::{self, MptableError};
use fennec_boot::x86_64::regs::{self, EntryMode};
use fennec_devices::legacy::serial::SerialMetrics;

use crate::config::{ConfigError, VmConfig};
use crate::device_manager::{Console, DeviceError, DeviceManager, DriveInfo, NetInfo, Subscriber};
use crate::vstate::kvm::{KvmContext, KvmError};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{self, ExitSignal, ProbedState, RunContext, Vcpu, VcpuError, VcpuShared};
use crate::vstate::vm::{KvmVm, VmError};

/// How often the controller checks whether every vCPU is stuck.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Consecutive stuck probes before the guest is declared halted.
const STUCK_PROBES: u32 = 2;

/// Why a guest stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine (i8042 reset, triple fault): Linux's `reboot`.
    Reset,
    /// The guest powered the machine off.
    PowerOff,
    /// Every vCPU halted with interrupts disabled: the guest can never run again.
    Halted,
    /// The host stopped the VM.
    Stopped,
    /// A vCPU failed.
    VcpuFailed {
        /// Which vCPU.
        index: u8,
        /// What happened.
        message: String,
    },
}

impl ExitReason {
    /// Whether the guest ended the way a guest should: reset, power-off, or stopped by the host.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::Reset | ExitReason::PowerOff | ExitReason::Stopped
        )
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reset => write!(f, "the guest reset"),
            ExitReason::PowerOff => write!(f, "the guest powered off"),
            ExitReason::Halted => write!(
                f,
                "the guest halted with interrupts disabled on every vCPU and can never run again"
            ),
            ExitReason::Stopped => write!(f, "stopped by the host"),
            ExitReason::VcpuFailed { index, message } => {
                write!(f, "vCPU {index} failed: {message}")
            }
        }
    }
}

/// Errors building or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("Invalid configuration")]
    Config(#[from] ConfigError),
    /// KVM is unusable.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// More vCPUs than KVM allows.
    #[error("{wanted} vCPUs asked for, but KVM allows at most {max}")]
    TooManyVcpus {
        /// vCPUs configured.
        wanted: u8,
        /// KVM's limit.
        max: usize,
    },
    /// A file could not be opened.
    #[error("Cannot open {what} {path}")]
    Open {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Boot parameters could not be written.
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
    /// The MP table could not be written.
    #[error(transparent)]
    Mptable(#[from] MptableError),
    /// Boot page tables or GDT could not be written.
    #[error("Failed to write the boot page tables and GDT")]
    BootTables(#[source] vm_memory::GuestMemoryError),
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A vCPU could not be created or configured.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A device could not be set up.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A thread or the event loop could not be started.
    #[error("Failed to start the VM: {0}")]
    Start(String),
    /// The stop request could not be sent.
    #[error("Failed to ask the VM to stop")]
    Stop(#[source] std::io::Error),
    /// The controller thread panicked.
    #[error("The VMM controller thread panicked")]
    ControllerPanicked,
}

fn open(what: &'static str, path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Open {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A VM that is built and ready to start.
pub struct Vm {
    mem: GuestMemoryMmap,
    kvm_vm: KvmVm,
    vcpus: Vec<Vcpu>,
    devices: DeviceManager,
}

impl Vm {
    /// Builds a VM from `config`, with `console` as its serial console.
    pub fn new(config: &VmConfig, console: Console) -> Result<Self, Error> {
        config.validate()?;
        let machine = &config.machine_config;
        let kvm = KvmContext::open()?;
        if usize::from(machine.vcpu_count) > kvm.max_vcpus() {
            return Err(Error::TooManyVcpus {
                wanted: machine.vcpu_count,
                max: kvm.max_vcpus(),
            });
        }
        let boot = &config.boot_source;
        let mut kernel_file = open("kernel", &boot.kernel_image_path)?;
        let mut initrd_file = boot
            .initrd_path
            .as_deref()
            .map(|p| open("initrd", p))
            .transpose()?;

        let mem_size = machine.mem_size_bytes();
        let mem = memory::create_guest_memory(mem_size)?;
        let kernel = loader::load_kernel(&mem, &mut kernel_file)?;
        let initrd_max = kernel
            .setup_header
            .map(|h| u64::from(h.initrd_addr_max))
            .filter(|max| *max != 0);
        let initrd = initrd_file
            .as_mut()
            .map(|f| loader::load_initrd(&mem, f, kernel.end, initrd_max))
            .transpose()?;
        let drives = config.drives_in_guest_order();
        let (base, mut extra) = config.kernel_cmdline();
        // Virtio slots hold the drives, then the network interfaces; the guest learns of each
        // device from the command line and probes them in this order.
        for i in 0..drives.len() + config.net.len() {
            let (addr, irq) = layout::virtio_slot(i);
            extra.push(format!("virtio_mmio.device=4K@{addr:#x}:{irq}"));
        }
        let cmdline = loader::build_cmdline(&base, &extra)?;
        let cmdline_size = loader::write_cmdline(&mem, &cmdline)?;
        let info = BootInfo {
            mem_size,
            cmdline_addr: layout::CMDLINE_START,
            cmdline_size,
            initrd,
        };
        match kernel.mode {
            EntryMode::Pvh => bootparams::write_pvh_start_info(&mem, &info)?,
            EntryMode::Linux64 => bootparams::write_zero_page(&mem, kernel.setup_header, &info)?,
        }
        mptable::write(&mem, machine.vcpu_count)?;
        regs::write_boot_tables(&mem, kernel.mode).map_err(Error::BootTables)?;
        log_boot(config, &kernel, initrd, &cmdline);

        let kvm_vm = KvmVm::new(&kvm, &mem)?;
        let cpuid = kvm.supported_cpuid()?;
        let vcpus = (0..machine.vcpu_count)
            .map(|index| {
                let vcpu = Vcpu::new(&kvm_vm, index)?;
                let entry = (index == 0).then_some((kernel.mode, kernel.entry));
                vcpu.configure(&cpuid, machine.vcpu_count, entry)?;
                Ok(vcpu)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let devices = DeviceManager::new(&kvm_vm, &mem, console, &drives, &config.net)?;
        Ok(Vm {
            mem,
            kvm_vm,
            vcpus,
            devices,
        })
    }

    /// Starts the vCPUs and the controller; the guest runs until [`VmHandle::wait`] returns.
    pub fn start(self) -> Result<VmHandle, Error> {
        vcpu::install_kick_handler()?;
        let start_err = |what: &str, e: std::io::Error| Error::Start(format!("{what}: {e}"));
        let exit_evt = EventFd::new(EFD_NONBLOCK).map_err(|e| start_err("exit eventfd", e))?;
        let stop_evt = EventFd::new(EFD_NONBLOCK).map_err(|e| start_err("stop eventfd", e))?;
        let exit = Arc::new(ExitSignal::new(
            exit_evt
                .try_clone()
                .map_err(|e| start_err("exit eventfd", e))?,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let Vm {
            mem,
            kvm_vm,
            vcpus,
            mut devices,
        } = self;
        let pio = Arc::new(std::mem::take(&mut devices.pio));
        let mmio = Arc::new(std::mem::take(&mut devices.mmio));

        let mut threads = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let shared = Arc::new(VcpuShared::default());
            let ctx = RunContext {
                pio: pio.clone(),
                mmio: mmio.clone(),
                stop: stop.clone(),
                exit: exit.clone(),
                shared: shared.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("fennec-vcpu{}", vcpu.index()))
                .spawn(move || vcpu.run(ctx));
            match spawned {
                Ok(handle) => threads.push((handle, shared)),
                Err(e) => {
                    stop_vcpus(&stop, threads);
                    return Err(start_err("vCPU thread", e));
                }
            }
        }

        let controller = Controller {
            exit_evt,
            stop_evt: stop_evt
                .try_clone()
                .map_err(|e| start_err("stop eventfd", e))?,
            reset_evt: devices.reset_evt,
            exit,
            finished: None,
        };
        let serial_input = devices.serial_input;
        let serial_metrics = devices.serial_metrics;
        let subscribers = devices.subscribers;
        let drives = devices.drives;
        let nets = devices.nets;
        let drives_at_exit = drives.clone();
        let nets_at_exit = nets.clone();
        let vcpu_stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("fennec-vmm".into())
            .spawn(move || {
                let reason = run_controller(controller, serial_input, subscribers, &threads);
                stop_vcpus(&vcpu_stop, threads);
                for d in &drives_at_exit {
                    log_metrics("Drive", &d.id, d.metrics.values());
                }
                for n in &nets_at_exit {
                    log_metrics("Network interface", &n.id, n.metrics.values());
                }
                // Guest memory and the VM outlive every vCPU thread.
                drop(kvm_vm);
                drop(mem);
                reason
            });
        match spawned {
            Ok(thread) => Ok(VmHandle {
                thread,
                stopper: Stopper(stop_evt),
                serial_metrics,
                drives,
                nets,
            }),
            Err(e) => Err(start_err("controller thread", e)),
        }
    }
}

/// Logs a device's non-zero counters on one line.
fn log_metrics(kind: &str, id: &str, values: Vec<(&'static str, u64)>) {
    let m: Vec<String> = values
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    log::info!("{kind} {id:?}: {}", m.join(" "));
}

fn log_boot(
    config: &VmConfig,
    kernel: &LoadedKernel,
    initrd: Option<(u64, u64)>,
    cmdline: &loader::Cmdline,
) {
    log::info!(
        "Loaded {:?} kernel {} (entry {:#x}, ends {:#x}); {} vCPUs, {} MiB",
        kernel.format,
        config.boot_source.kernel_image_path.display(),
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

/// Sets `stop`, kicks every vCPU out of `KVM_RUN` and joins it.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<(JoinHandle<()>, Arc<VcpuShared>)>) {
    stop.store(true, Ordering::SeqCst);
    let signum = vmm_sys_util::signal::SIGRTMIN() + vcpu::KICK_SIGNAL_OFFSET;
    for (thread, _) in &threads {
        if let Err(e) = thread.kill(signum) {
            log::debug!("Failed to kick a vCPU thread: {e}");
        }
    }
    for (thread, _) in threads {
        if thread.join().is_err() {
            log::error!("A vCPU thread panicked");
        }
    }
}

const EVENT_EXIT: u32 = 0;
const EVENT_RESET: u32 = 1;
const EVENT_STOP: u32 = 2;

/// Event-loop subscriber for the VM's lifecycle events.
struct Controller {
    exit_evt: EventFd,
    stop_evt: EventFd,
    reset_evt: EventFd,
    exit: Arc<ExitSignal>,
    finished: Option<ExitReason>,
}

impl MutEventSubscriber for Controller {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let reason = match events.data() {
            EVENT_EXIT => {
                let _ = self.exit_evt.read();
                self.exit.reason()
            }
            EVENT_RESET => {
                let _ = self.reset_evt.read();
                Some(ExitReason::Reset)
            }
            EVENT_STOP => {
                let _ = self.stop_evt.read();
                Some(ExitReason::Stopped)
            }
            _ => None,
        };
        if self.finished.is_none() {
            self.finished = reason;
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [
            (&self.exit_evt, EVENT_EXIT),
            (&self.reset_evt, EVENT_RESET),
            (&self.stop_evt, EVENT_STOP),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd, data, EventSet::IN)) {
                log::error!("Failed to register a lifecycle eventfd: {e:?}");
            }
        }
    }
}

/// Runs the event loop until the guest ends; returns why it ended.
fn run_controller(
    controller: Controller,
    serial_input: Option<fennec_devices::legacy::serial::SerialInput>,
    subscribers: Vec<Subscriber>,
    vcpus: &[(JoinHandle<()>, Arc<VcpuShared>)],
) -> ExitReason {
    let mut manager = match EventManager::<Subscriber>::new() {
        Ok(m) => m,
        Err(e) => {
            return ExitReason::VcpuFailed {
                index: 0,
                message: format!("the event loop could not start: {e:?}"),
            }
        }
    };
    let controller = Arc::new(Mutex::new(controller));
    manager.add_subscriber(controller.clone());
    if let Some(input) = serial_input {
        manager.add_subscriber(Arc::new(Mutex::new(input)));
    }
    for subscriber in subscribers {
        manager.add_subscriber(subscriber);
    }
    let signum = vmm_sys_util::signal::SIGRTMIN() + vcpu::KICK_SIGNAL_OFFSET;
    let mut stuck_probes = 0;
    let mut next_probe = Instant::now() + PROBE_INTERVAL;
    loop {
        let timeout = next_probe.saturating_duration_since(Instant::now());
        if let Err(e) = manager.run_with_timeout(timeout.as_millis() as i32) {
            log::error!("Event loop failed: {e:?}");
        }
        if let Some(reason) = fennec_devices::lock(&controller).finished.take() {
            log::info!("Guest finished: {reason}");
            return reason;
        }
        if Instant::now() >= next_probe {
            next_probe += PROBE_INTERVAL;
            if all_stuck(vcpus.iter().map(|(_, s)| s.probed())) {
                stuck_probes += 1;
            } else {
                stuck_probes = 0;
            }
            if stuck_probes >= STUCK_PROBES {
                log::info!("Guest finished: {}", ExitReason::Halted);
                return ExitReason::Halted;
            }
            for (thread, _) in vcpus {
                let _ = thread.kill(signum);
            }
        }
    }
}

/// True when no vCPU can run again: each is halted with interrupts off or was never started, and
/// at least one halted.
fn all_stuck(states: impl Iterator<Item = ProbedState> + Clone) -> bool {
    states.clone().all(|s| s != ProbedState::Running)
        && states.into_iter().any(|s| s == ProbedState::HaltedIrqsOff)
}

/// Stops a running VM, like [`VmHandle::stop`]; stopping a VM that already ended does nothing.
pub struct Stopper(EventFd);

impl Stopper {
    /// Asks the VM to stop now.
    pub fn stop(&self) -> Result<(), Error> {
        self.0.write(1).map_err(Error::Stop)
    }
}

/// A running VM.
pub struct VmHandle {
    thread: JoinHandle<ExitReason>,
    stopper: Stopper,
    serial_metrics: Arc<SerialMetrics>,
    drives: Vec<DriveInfo>,
    nets: Vec<NetInfo>,
}

impl VmHandle {
    /// Asks the VM to stop now, as pulling the plug would; [`VmHandle::wait`] then returns
    /// [`ExitReason::Stopped`].
    pub fn stop(&self) -> Result<(), Error> {
        self.stopper.stop()
    }

    /// A handle that stops this VM from another thread, also after [`VmHandle::wait`] took the
    /// handle itself.
    pub fn stopper(&self) -> Result<Stopper, Error> {
        self.stopper.0.try_clone().map(Stopper).map_err(Error::Stop)
    }

    /// Serial console counters; they stay readable after the guest ends.
    pub fn serial_metrics(&self) -> Arc<SerialMetrics> {
        self.serial_metrics.clone()
    }

    /// The VM's drives in slot order (the guest's `/dev/vda`, `/dev/vdb`, ...), with their
    /// counters; they stay readable after the guest ends.
    pub fn drives(&self) -> &[DriveInfo] {
        &self.drives
    }

    /// The VM's network interfaces in slot order (the guest's eth0, eth1, ...), with their
    /// counters; they stay readable after the guest ends.
    pub fn nets(&self) -> &[NetInfo] {
        &self.nets
    }

    /// Waits for the guest to end; every VM thread has exited when this returns.
    pub fn wait(self) -> Result<ExitReason, Error> {
        self.thread.join().map_err(|_| Error::ControllerPanicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbedState::*;

    #[test]
    fn test_all_stuck_halted_bsp_and_unstarted_aps() {
        assert!(all_stuck(
            [HaltedIrqsOff, NotStarted, NotStarted].into_iter()
        ));
    }

    #[test]
    fn test_all_stuck_one_running_vcpu_keeps_guest_alive() {
        assert!(!all_stuck([HaltedIrqsOff, Running].into_iter()));
    }

    #[test]
    fn test_all_stuck_nothing_halted_is_not_stuck() {
        assert!(!all_stuck([NotStarted].into_iter()));
    }

    #[test]
    fn test_exit_reason_clean_only_for_reset_poweroff_stop() {
        assert!(ExitReason::Reset.is_clean());
        assert!(ExitReason::Stopped.is_clean());
        assert!(!ExitReason::Halted.is_clean());
    }
}
