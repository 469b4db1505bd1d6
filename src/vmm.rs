//! Building, starting and ending a VM.
//!
//! [`Vm::new`] does all the work that can fail because of the configuration: it opens KVM, maps
//! memory, loads the kernel, initrd and command line, writes the boot tables and creates vCPUs
//! and devices. [`Vm::start`] only spawns threads: one per vCPU, and one controller thread that
//! runs the event loop (console input, guest resets, stop requests) and, when the guest is done,
//! stops and joins the vCPUs and reports an [`ExitReason`]. The [`VmHandle`] pauses, resumes,
//! shuts down and stops the VM and reads its counters; pause and resume are commands to the
//! controller thread over a channel and an eventfd.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

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
use fennec_devices::legacy::i8042::I8042;
use fennec_devices::legacy::serial::{SerialDevice, SerialMetrics};
use fennec_devices::virtio::block::Block;
use fennec_devices::EventFdTrigger;

use crate::config::{BlockConfig, ConfigError, VmConfig};
use crate::device_manager::{
    self, Console, DeviceError, DeviceManager, DriveInfo, NetInfo, Subscriber,
};
use crate::vstate::kvm::{KvmContext, KvmError};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{
    self, ExitSignal, PauseGate, ProbedState, RunContext, Vcpu, VcpuError, VcpuShared,
};
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

impl ExitReason {
    /// A stable one-word name: `reset`, `power_off`, `halted`, `stopped`, `vcpu_failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::Reset => "reset",
            ExitReason::PowerOff => "power_off",
            ExitReason::Halted => "halted",
            ExitReason::Stopped => "stopped",
            ExitReason::VcpuFailed { .. } => "vcpu_failed",
        }
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
    /// The VM has exited, so it cannot do what was asked.
    #[error("The VM is not running")]
    NotRunning,
    /// A pause or resume failed.
    #[error("{0}")]
    Lifecycle(String),
    /// No drive has the given ID.
    #[error("No drive has the ID {0:?}")]
    NoSuchDrive(String),
}

/// Opens the kernel or initrd at `path`, naming it in the error.
pub(crate) fn open(what: &'static str, path: &Path) -> Result<File, Error> {
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
        if let Some(d) = config.drives.iter().find(|d| d.path.as_os_str().is_empty()) {
            return Err(ConfigError::Unprovisioned(d.id.clone()).into());
        }
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
        let eventfd = |what: &str| EventFd::new(EFD_NONBLOCK).map_err(|e| start_err(what, e));
        let clone = |evt: &EventFd, what: &str| evt.try_clone().map_err(|e| start_err(what, e));
        let exit_evt = eventfd("exit eventfd")?;
        let stop_evt = eventfd("stop eventfd")?;
        let command_evt = eventfd("command eventfd")?;
        let exit = Arc::new(ExitSignal::new(clone(&exit_evt, "exit eventfd")?));
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(PauseGate::default());
        let Vm {
            mem,
            kvm_vm,
            vcpus,
            mut devices,
        } = self;
        let pio = Arc::new(std::mem::take(&mut devices.pio));
        let mmio = Arc::new(std::mem::take(&mut devices.mmio));

        let mut threads = Vec::with_capacity(vcpus.len());
        let mut vcpu_shared = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let shared = Arc::new(VcpuShared::default());
            let ctx = RunContext {
                pio: pio.clone(),
                mmio: mmio.clone(),
                stop: stop.clone(),
                exit: exit.clone(),
                shared: shared.clone(),
                gate: gate.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("fennec-vcpu{}", vcpu.index()))
                .spawn(move || vcpu.run(ctx));
            match spawned {
                Ok(handle) => {
                    threads.push((handle, shared.clone()));
                    vcpu_shared.push(shared);
                }
                Err(e) => {
                    stop_vcpus(&stop, &gate, threads);
                    return Err(start_err("vCPU thread", e));
                }
            }
        }

        let (command_tx, command_rx) = mpsc::channel();
        let lifecycle = Arc::new(Lifecycle::default());
        let controller = Controller {
            exit_evt,
            stop_evt: clone(&stop_evt, "stop eventfd")?,
            reset_evt: devices.reset_evt,
            command_evt: clone(&command_evt, "command eventfd")?,
            exit,
            finished: None,
        };
        let drives = devices.drives;
        let nets = devices.nets;
        let mut irq_pins = vec![
            (layout::KEYBOARD_IRQ, "i8042".to_string()),
            (layout::SERIAL_IRQ, "serial".to_string()),
        ];
        irq_pins.extend(drives.iter().map(|d| (d.irq, format!("drive {}", d.id))));
        irq_pins.extend(
            nets.iter()
                .map(|n| (n.irq, format!("network interface {}", n.id))),
        );
        let run = ControllerRun {
            serial_input: devices.serial_input,
            subscribers: devices.subscribers,
            vcpus: threads,
            stop,
            gate,
            commands: command_rx,
            lifecycle: lifecycle.clone(),
            kvm_vm,
            serial: devices.serial,
            irq_pins,
        };
        let drives_at_exit = drives.clone();
        let nets_at_exit = nets.clone();
        let spawned = std::thread::Builder::new()
            .name("fennec-vmm".into())
            .spawn(move || {
                // Whatever happens below, waiters learn that the VM is gone.
                let mut guard = ExitGuard {
                    lifecycle: run.lifecycle.clone(),
                    reason: ExitReason::VcpuFailed {
                        index: 0,
                        message: "the VMM controller thread panicked".into(),
                    },
                };
                let reason = run_controller(controller, run);
                for d in &drives_at_exit {
                    log_metrics("Drive", &d.id, d.metrics.values());
                }
                for n in &nets_at_exit {
                    log_metrics("Network interface", &n.id, n.metrics.values());
                }
                // Guest memory outlives every vCPU thread and the VM (`run_controller` joined
                // the first and dropped the second).
                drop(mem);
                guard.reason = reason.clone();
                reason
            });
        match spawned {
            Ok(thread) => Ok(VmHandle(Arc::new(HandleInner {
                thread: Mutex::new(Some(thread)),
                lifecycle,
                started: Instant::now(),
                stopper: Stopper(stop_evt),
                commands: Mutex::new(command_tx),
                command_evt,
                i8042: devices.i8042,
                serial_metrics: devices.serial_metrics,
                vcpus: vcpu_shared,
                drives,
                block_devices: devices.block_devices,
                nets,
            }))),
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

type VcpuThreads = Vec<(JoinHandle<()>, Arc<VcpuShared>)>;

/// Kicks every vCPU still running out of `KVM_RUN`.
fn kick_vcpus(threads: &VcpuThreads) {
    for (thread, _) in threads.iter().filter(|(t, _)| !t.is_finished()) {
        if let Err(e) = thread.kill(vcpu::kick_signal()) {
            log::debug!("Failed to kick a vCPU thread: {e}");
        }
    }
}

/// Sets `stop`, releases paused vCPUs, kicks every vCPU out of `KVM_RUN` and joins it.
fn stop_vcpus(stop: &AtomicBool, gate: &PauseGate, threads: VcpuThreads) {
    stop.store(true, Ordering::SeqCst);
    gate.release_for_stop();
    kick_vcpus(&threads);
    for (thread, _) in threads {
        if thread.join().is_err() {
            log::error!("A vCPU thread panicked");
        }
    }
}

const EVENT_EXIT: u32 = 0;
const EVENT_RESET: u32 = 1;
const EVENT_STOP: u32 = 2;
const EVENT_COMMAND: u32 = 3;

/// How long a pause waits for every vCPU to park.
const PARK_TIMEOUT: Duration = Duration::from_secs(2);

/// Event-loop subscriber for the VM's lifecycle events.
struct Controller {
    exit_evt: EventFd,
    stop_evt: EventFd,
    reset_evt: EventFd,
    command_evt: EventFd,
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
            // The commands themselves are taken from the channel after every loop turn.
            EVENT_COMMAND => {
                let _ = self.command_evt.read();
                None
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
            (&self.command_evt, EVENT_COMMAND),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd, data, EventSet::IN)) {
                log::error!("Failed to register a lifecycle eventfd: {e:?}");
            }
        }
    }
}

/// A request to the controller thread, with where to send the answer: the text of a
/// [`Command::Describe`], empty for the others, or why it failed.
struct CommandMsg {
    command: Command,
    reply: mpsc::Sender<Result<String, String>>,
}

#[derive(Clone, Copy, Debug)]
enum Command {
    Pause,
    Resume,
    Describe,
}

/// How long a vCPU gets to answer a [`Command::Describe`].
const REPORT_TIMEOUT: Duration = Duration::from_millis(500);

/// Everything the controller thread owns besides its event subscriber.
struct ControllerRun {
    serial_input: Option<fennec_devices::legacy::serial::SerialInput>,
    subscribers: Vec<Subscriber>,
    vcpus: VcpuThreads,
    stop: Arc<AtomicBool>,
    gate: Arc<PauseGate>,
    commands: mpsc::Receiver<CommandMsg>,
    lifecycle: Arc<Lifecycle>,
    /// The VM, for its interrupt controller state; dropped after the vCPUs are joined.
    kvm_vm: KvmVm,
    serial: Arc<Mutex<SerialDevice>>,
    /// The IOAPIC pins in use, with their devices' names.
    irq_pins: Vec<(u32, String)>,
}

impl ControllerRun {
    /// Where the VM stands, for a person diagnosing a stalled guest: each vCPU's registers
    /// and local APIC, its exit counts, the serial port's registers and the IOAPIC pins.
    fn describe(&self, paused: bool) -> String {
        let mut out = Vec::new();
        if paused {
            out.push("vCPUs: parked (the VM is paused; registers are read while it runs)".into());
        } else {
            for (_, shared) in &self.vcpus {
                shared.want_report();
            }
            kick_vcpus(&self.vcpus);
            for (i, (thread, shared)) in self.vcpus.iter().enumerate() {
                out.push(shared.take_report(REPORT_TIMEOUT).unwrap_or_else(|| {
                    let why = if thread.is_finished() {
                        "its thread has finished"
                    } else {
                        "busy outside KVM_RUN, in a device access"
                    };
                    format!("vCPU {i}: no answer within {REPORT_TIMEOUT:?}: {why}")
                }));
            }
        }
        for (i, (_, shared)) in self.vcpus.iter().enumerate() {
            let exits = serde_json::to_string(&shared.exits).unwrap_or_default();
            out.push(format!("vCPU {i} exits: {exits}"));
        }
        out.push(match self.serial.try_lock() {
            Ok(serial) => serial.describe(),
            Err(_) => "serial: locked by a vCPU (writing console output)".into(),
        });
        out.push(self.kvm_vm.describe_ioapic(&self.irq_pins));
        out.join("\n")
    }

    /// Parks every vCPU; the caller then stops serving devices.
    fn pause(&self) -> Result<(), String> {
        self.gate.close();
        kick_vcpus(&self.vcpus);
        let running = self.vcpus.iter().filter(|(t, _)| !t.is_finished()).count();
        if self.gate.wait_parked(running, PARK_TIMEOUT) {
            Ok(())
        } else {
            self.gate.open();
            Err(format!(
                "the vCPUs did not stop within {} s",
                PARK_TIMEOUT.as_secs()
            ))
        }
    }
}

/// Runs the event loop until the guest ends, stops the vCPUs, and returns why it ended.
///
/// Two event managers share the [`Controller`]: one with every device, used while the guest
/// runs, and one with the controller alone, used while it is paused, so a paused VM's queues,
/// TAPs and console input are not served at all.
fn run_controller(controller: Controller, mut run: ControllerRun) -> ExitReason {
    let reason = match event_loop(controller, &mut run) {
        Ok(reason) => reason,
        Err(e) => ExitReason::VcpuFailed {
            index: 0,
            message: format!("the event loop could not start: {e:?}"),
        },
    };
    let ControllerRun {
        vcpus, stop, gate, ..
    } = run;
    stop_vcpus(&stop, &gate, vcpus);
    reason
}

fn event_loop(
    controller: Controller,
    run: &mut ControllerRun,
) -> Result<ExitReason, event_manager::Error> {
    let mut running = EventManager::<Subscriber>::new()?;
    let mut paused_loop = EventManager::<Subscriber>::new()?;
    let controller = Arc::new(Mutex::new(controller));
    running.add_subscriber(controller.clone());
    paused_loop.add_subscriber(controller.clone());
    if let Some(input) = run.serial_input.take() {
        running.add_subscriber(Arc::new(Mutex::new(input)));
    }
    for subscriber in run.subscribers.drain(..) {
        running.add_subscriber(subscriber);
    }
    let mut paused = false;
    let mut stuck_probes = 0;
    let mut next_probe = Instant::now() + PROBE_INTERVAL;
    loop {
        let timeout = next_probe.saturating_duration_since(Instant::now());
        let manager = if paused {
            &mut paused_loop
        } else {
            &mut running
        };
        if let Err(e) = manager.run_with_timeout(timeout.as_millis() as i32) {
            log::error!("Event loop failed: {e:?}");
        }
        if let Some(reason) = fennec_devices::lock(&controller).finished.take() {
            log::info!("Guest finished: {reason}");
            return Ok(reason);
        }
        while let Ok(msg) = run.commands.try_recv() {
            let result = match (msg.command, paused) {
                (Command::Describe, _) => Ok(run.describe(paused)),
                (Command::Pause, true) | (Command::Resume, false) => Ok(String::new()),
                (Command::Pause, false) => run.pause().map(|()| {
                    paused = true;
                    run.lifecycle.set(VmState::Paused);
                    log::info!("VM paused");
                    String::new()
                }),
                (Command::Resume, true) => {
                    paused = false;
                    run.gate.open();
                    run.lifecycle.set(VmState::Running);
                    log::info!("VM resumed");
                    Ok(String::new())
                }
            };
            let _ = msg.reply.send(result);
        }
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + PROBE_INTERVAL;
            if paused {
                stuck_probes = 0;
                continue;
            }
            if all_stuck(run.vcpus.iter().map(|(_, s)| s.probed())) {
                stuck_probes += 1;
            } else {
                stuck_probes = 0;
            }
            if stuck_probes >= STUCK_PROBES {
                log::info!("Guest finished: {}", ExitReason::Halted);
                return Ok(ExitReason::Halted);
            }
            kick_vcpus(&run.vcpus);
        }
    }
}

/// True when no vCPU can run again: each is halted with interrupts off or was never started, and
/// at least one halted.
fn all_stuck(states: impl Iterator<Item = ProbedState> + Clone) -> bool {
    states.clone().all(|s| s != ProbedState::Running)
        && states.into_iter().any(|s| s == ProbedState::HaltedIrqsOff)
}

/// Where a started VM stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    /// The guest runs.
    Running,
    /// Every vCPU is parked and no device is served.
    Paused,
    /// The guest ended; every VM thread has finished or is finishing.
    Exited(ExitReason),
}

/// The VM's state, shared by the controller thread and the handles.
#[derive(Debug)]
struct Lifecycle {
    state: Mutex<VmState>,
    changed: Condvar,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: Mutex::new(VmState::Running),
            changed: Condvar::new(),
        }
    }
}

impl Lifecycle {
    fn set(&self, state: VmState) {
        *fennec_devices::lock(&self.state) = state;
        self.changed.notify_all();
    }

    fn get(&self) -> VmState {
        fennec_devices::lock(&self.state).clone()
    }

    /// Waits up to `timeout` (forever if `None`, or if the deadline is past what an `Instant`
    /// holds: a client may ask for any timeout) for the guest to end.
    fn wait_exit(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = fennec_devices::lock(&self.state);
        loop {
            if let VmState::Exited(reason) = &*state {
                return Some(reason.clone());
            }
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// Marks the VM exited when the controller thread ends, also by a panic.
struct ExitGuard {
    lifecycle: Arc<Lifecycle>,
    reason: ExitReason,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.lifecycle.set(VmState::Exited(self.reason.clone()));
    }
}

/// Stops a running VM, like [`VmHandle::stop`]; stopping a VM that already ended does nothing.
pub struct Stopper(EventFd);

impl Stopper {
    /// Asks the VM to stop now.
    pub fn stop(&self) -> Result<(), Error> {
        self.0.write(1).map_err(Error::Stop)
    }
}

/// A VM's counters, as the API serves them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmMetrics {
    /// Milliseconds since the VM started.
    pub uptime_ms: u64,
    /// The serial console: bytes out, lost, in.
    pub serial: BTreeMap<&'static str, u64>,
    /// Each vCPU's exits from `KVM_RUN`, by kind.
    pub vcpus: Vec<BTreeMap<&'static str, u64>>,
    /// Each drive's counters, by drive ID.
    pub drives: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Each network interface's counters, by interface ID.
    pub network_interfaces: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

struct HandleInner {
    thread: Mutex<Option<JoinHandle<ExitReason>>>,
    lifecycle: Arc<Lifecycle>,
    started: Instant,
    stopper: Stopper,
    commands: Mutex<mpsc::Sender<CommandMsg>>,
    command_evt: EventFd,
    i8042: Arc<Mutex<I8042<EventFdTrigger>>>,
    serial_metrics: Arc<SerialMetrics>,
    vcpus: Vec<Arc<VcpuShared>>,
    drives: Vec<DriveInfo>,
    block_devices: Vec<Arc<Mutex<Block>>>,
    nets: Vec<NetInfo>,
}

/// A running VM. Clones are handles to the same VM, for other threads.
#[derive(Clone)]
pub struct VmHandle(Arc<HandleInner>);

impl VmHandle {
    /// Asks the VM to stop now, as pulling the plug would; [`VmHandle::wait`] then returns
    /// [`ExitReason::Stopped`]. Works on a paused VM too.
    pub fn stop(&self) -> Result<(), Error> {
        self.0.stopper.stop()
    }

    /// A handle that stops this VM from another thread or a signal handler's thread.
    pub fn stopper(&self) -> Result<Stopper, Error> {
        self.0
            .stopper
            .0
            .try_clone()
            .map(Stopper)
            .map_err(Error::Stop)
    }

    /// Where the VM stands now.
    pub fn state(&self) -> VmState {
        self.0.lifecycle.get()
    }

    /// How long ago the VM started.
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    fn command(&self, command: Command) -> Result<String, Error> {
        let (reply, answer) = mpsc::channel();
        let sent = fennec_devices::lock(&self.0.commands)
            .send(CommandMsg { command, reply })
            .is_ok();
        if !sent || self.0.command_evt.write(1).is_err() {
            return Err(Error::NotRunning);
        }
        match answer.recv() {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(why)) => Err(Error::Lifecycle(why)),
            // The controller ended (the guest exited) before it took the command.
            Err(_) => Err(Error::NotRunning),
        }
    }

    /// Pauses the guest: every vCPU parks and no device is served until [`VmHandle::resume`].
    /// Pausing a paused VM does nothing.
    pub fn pause(&self) -> Result<(), Error> {
        self.command(Command::Pause).map(drop)
    }

    /// Resumes a paused guest. Resuming a running VM does nothing.
    pub fn resume(&self) -> Result<(), Error> {
        self.command(Command::Resume).map(drop)
    }

    /// Describes where the VM stands, for diagnosing a guest that stalls: every vCPU's run
    /// state, instruction pointer, flags and local APIC interrupts (in service and requested),
    /// its exit counts, the serial port's registers and the IOAPIC entries of the devices.
    /// fennec logs it on SIGUSR1.
    pub fn describe(&self) -> Result<String, Error> {
        self.command(Command::Describe)
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard: a Linux guest with an i8042 keyboard driver
    /// signals its init, which usually reboots, and fennec then exits.
    pub fn send_ctrl_alt_del(&self) -> Result<(), Error> {
        if let VmState::Exited(_) = self.state() {
            return Err(Error::NotRunning);
        }
        fennec_devices::lock(&self.0.i8042)
            .ctrl_alt_del()
            .map_err(|e| Error::Lifecycle(format!("cannot raise the keyboard interrupt: {e}")))
    }

    /// Asks the guest to shut down (Ctrl-Alt-Del, resuming it first if paused) and waits up to
    /// `timeout` for it to end; stops it if it does not. Returns why it ended and whether it
    /// had to be stopped.
    pub fn shutdown(&self, timeout: Duration) -> Result<(ExitReason, bool), Error> {
        if self.state() == VmState::Paused {
            self.resume()?;
        }
        match self.send_ctrl_alt_del() {
            Ok(()) | Err(Error::NotRunning) => {}
            Err(e) => log::warn!("{e}; stopping the VM instead"),
        }
        if let Some(reason) = self.wait_timeout(timeout) {
            return Ok((reason, false));
        }
        log::info!(
            "The guest did not shut down within {} ms; stopping it",
            timeout.as_millis()
        );
        self.stop()?;
        Ok((self.wait()?, true))
    }

    /// Swaps the image behind drive `id` for the file at `path` (Firecracker's drive PATCH),
    /// keeping the drive's read-only setting; the guest sees the new capacity.
    pub fn replace_drive_image(&self, id: &str, path: &Path) -> Result<(), Error> {
        let i = self
            .0
            .drives
            .iter()
            .position(|d| d.id == id)
            .ok_or_else(|| Error::NoSuchDrive(id.to_string()))?;
        let cfg = BlockConfig {
            id: id.to_string(),
            path: path.to_path_buf(),
            read_only: self.0.drives[i].read_only,
            ..BlockConfig::default()
        };
        let disk = device_manager::open_disk(&cfg)?;
        let size = disk.size();
        fennec_devices::lock(&self.0.block_devices[i]).replace_disk(Box::new(disk), size);
        log::info!(
            "Drive {id:?}: now {} ({} sectors)",
            path.display(),
            size / 512
        );
        Ok(())
    }

    /// Runs `f` while drive `id`'s image is consistent: pauses the VM (unless it is paused
    /// already), makes the drive's completed writes durable, calls `f`, and resumes the VM if
    /// it was running. For snapshots of a running VM's disk.
    pub fn quiesce_drive<T, E>(
        &self,
        id: &str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, Error> {
        let i = self
            .0
            .drives
            .iter()
            .position(|d| d.id == id)
            .ok_or_else(|| Error::NoSuchDrive(id.to_string()))?;
        let was_running = match self.state() {
            VmState::Running => true,
            VmState::Paused => false,
            VmState::Exited(_) => return Err(Error::NotRunning),
        };
        if was_running {
            self.pause()?;
        }
        let flushed = fennec_devices::lock(&self.0.block_devices[i])
            .flush_disk()
            .map_err(|e| Error::Lifecycle(format!("cannot flush drive {id:?}: {e}")));
        let result = flushed.map(|()| f());
        if was_running {
            self.resume()?;
        }
        result
    }

    /// Serial console counters; they stay readable after the guest ends.
    pub fn serial_metrics(&self) -> Arc<SerialMetrics> {
        self.0.serial_metrics.clone()
    }

    /// The VM's drives in slot order (the guest's `/dev/vda`, `/dev/vdb`, ...), with their
    /// counters; they stay readable after the guest ends.
    pub fn drives(&self) -> &[DriveInfo] {
        &self.0.drives
    }

    /// The VM's network interfaces in slot order (the guest's eth0, eth1, ...), with their
    /// counters; they stay readable after the guest ends.
    pub fn nets(&self) -> &[NetInfo] {
        &self.0.nets
    }

    /// Every counter of the VM, by device.
    pub fn metrics(&self) -> VmMetrics {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let serial = &self.0.serial_metrics;
        VmMetrics {
            uptime_ms: self.uptime().as_millis() as u64,
            serial: BTreeMap::from([
                ("bytes_out", load(&serial.bytes_out)),
                ("bytes_lost", load(&serial.bytes_lost)),
                ("bytes_in", load(&serial.bytes_in)),
            ]),
            vcpus: self
                .0
                .vcpus
                .iter()
                .map(|v| {
                    let e = &v.exits;
                    BTreeMap::from([
                        ("io_in", load(&e.io_in)),
                        ("io_out", load(&e.io_out)),
                        ("mmio_read", load(&e.mmio_read)),
                        ("mmio_write", load(&e.mmio_write)),
                        ("kicked", load(&e.kicked)),
                        ("other", load(&e.other)),
                    ])
                })
                .collect(),
            drives: self
                .0
                .drives
                .iter()
                .map(|d| (d.id.clone(), d.metrics.values().into_iter().collect()))
                .collect(),
            network_interfaces: self
                .0
                .nets
                .iter()
                .map(|n| (n.id.clone(), n.metrics.values().into_iter().collect()))
                .collect(),
        }
    }

    /// Waits up to `timeout` for the guest to end; `None` if it still runs.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitReason> {
        self.0.lifecycle.wait_exit(Some(timeout))
    }

    /// Waits for the guest to end; every VM thread has exited when this returns. Any clone of
    /// the handle may wait, any number of times.
    pub fn wait(&self) -> Result<ExitReason, Error> {
        let reason = self.0.lifecycle.wait_exit(None);
        let thread = fennec_devices::lock(&self.0.thread).take();
        if let Some(thread) = thread {
            thread.join().map_err(|_| Error::ControllerPanicked)?;
        }
        reason.ok_or(Error::ControllerPanicked)
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
    fn test_lifecycle_wait_exit_takes_any_timeout() {
        let lifecycle = Lifecycle::default();
        lifecycle.set(VmState::Exited(ExitReason::Reset));
        assert_eq!(
            lifecycle.wait_exit(Some(Duration::MAX)),
            Some(ExitReason::Reset)
        );
    }

    #[test]
    fn test_lifecycle_wait_exit_times_out_while_running() {
        let lifecycle = Lifecycle::default();
        assert_eq!(lifecycle.wait_exit(Some(Duration::from_millis(10))), None);
    }

    #[test]
    fn test_exit_reason_clean_only_for_reset_poweroff_stop() {
        assert!(ExitReason::Reset.is_clean());
        assert!(ExitReason::Stopped.is_clean());
        assert!(!ExitReason::Halted.is_clean());
    }
}
