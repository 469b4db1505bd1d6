//! Starting a built VM and running it: one thread per vCPU, and the controller thread with the
//! event loop (console input, queue notifications, the guest's reset, stop requests, commands
//! from [`VmHandle`]s) until the guest ends; then the vCPUs are stopped and joined and the
//! [`ExitReason`] reported.
//!
//! Two event managers share the [`Controller`] subscriber: one with every device, used while
//! the guest runs, and one with the controller alone, used while it is paused, so a paused VM's
//! queues, TAPs and console input are not served at all.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use fennec_boot::layout;
use fennec_devices::legacy::acpi::AcpiPower;
use fennec_devices::legacy::serial::{SerialDevice, SerialInput};
use fennec_devices::EventFdTrigger;

use super::command::{Command, CommandMsg, Reply};
use super::handle::{ExitGuard, HandleInner, Lifecycle, Stopper, VmHandle, VmState};
use super::records::DeviceRecord;
use super::{Error, ExitReason, SaveStateError, Vm};
use crate::device_manager::{DeviceHandles, DeviceManager, Subscriber};
use crate::seccomp::Role;
use crate::snapshot::MachineState;
use crate::threads;
use crate::vstate::vcpu::idle::{self, IdleWatch};
use crate::vstate::vcpu::run::{self as vcpu_run, Answer, Command as VcpuCommand, ExitSignal};
use crate::vstate::vcpu::run::{RunContext, VcpuThread};
use crate::vstate::vcpu::{ProbedState, VcpuError};
use crate::vstate::vm::KvmVm;

/// How often the controller looks at the vCPUs' CPU clocks (reading them, which
/// does not disturb them) to notice a guest that can never run again.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// How long a vCPU gets to answer a probe; the event loop waits meanwhile.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);
/// How long vCPUs get to describe themselves: a person is asking, and a loaded host may not
/// run the vCPU threads at once.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pause waits for every vCPU to park.
const PARK_TIMEOUT: Duration = Duration::from_secs(2);

const EVENT_EXIT: u32 = 0;
const EVENT_RESET: u32 = 1;
const EVENT_STOP: u32 = 2;
const EVENT_COMMAND: u32 = 3;
const EVENT_POWER_OFF: u32 = 4;
const EVENT_PANIC: u32 = 5;

/// Event-loop subscriber for the VM's lifecycle events.
struct Controller {
    exit_evt: EventFd,
    stop_evt: EventFd,
    reset_evt: EventFd,
    power_off_evt: EventFd,
    panic_evt: EventFd,
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
            EVENT_POWER_OFF => {
                let _ = self.power_off_evt.read();
                Some(ExitReason::PowerOff)
            }
            EVENT_PANIC => {
                let _ = self.panic_evt.read();
                Some(ExitReason::Panicked)
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
            (&self.power_off_evt, EVENT_POWER_OFF),
            (&self.panic_evt, EVENT_PANIC),
            (&self.command_evt, EVENT_COMMAND),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd, data, EventSet::IN)) {
                log::error!("Failed to register a lifecycle eventfd: {e:?}");
            }
        }
    }
}

/// Everything the controller thread owns besides its event subscriber.
struct ControllerRun {
    serial_input: Option<SerialInput>,
    subscribers: Vec<Subscriber>,
    vcpus: Vec<VcpuThread>,
    commands: mpsc::Receiver<CommandMsg>,
    lifecycle: Arc<Lifecycle>,
    /// The VM, for its interrupt controller state; dropped after the vCPUs are joined.
    kvm_vm: KvmVm,
    serial: Arc<Mutex<SerialDevice>>,
    /// The IOAPIC pins in use, with their devices' names.
    irq_pins: Vec<(u32, String)>,
    /// The ACPI power registers, with the power button; `None` without ACPI.
    acpi: Option<Arc<Mutex<AcpiPower<EventFdTrigger>>>>,
    /// The devices a snapshot saves.
    devices: DeviceHandles,
    /// Guest memory, for a snapshot's memory file.
    mem: GuestMemoryMmap,
    /// Whether this host's vCPUs can be snapshotted.
    snapshots: bool,
    /// Start with the vCPUs parked.
    start_paused: bool,
}

impl ControllerRun {
    /// Presses the ACPI power button if the guest listens: its generic event device's
    /// interrupt is unmasked (the pin starts masked; an OS with ACPI unmasks it when its GED
    /// driver binds). A guest without ACPI (fennec's microVM kernel) never does.
    fn press_power_button(&self) -> Result<String, Error> {
        let acpi = self
            .acpi
            .as_ref()
            .ok_or(Error::NoPowerButton("the VM has no ACPI"))?;
        if self.kvm_vm.ioapic_pin_unmasked(layout::GED_IRQ) != Some(true) {
            return Err(Error::NoPowerButton(
                "the guest does not listen to ACPI events",
            ));
        }
        fennec_devices::lock(acpi)
            .press_power_button()
            .map_err(Error::PowerButton)?;
        log::info!("Pressed the ACPI power button");
        Ok(String::new())
    }

    /// Where the VM stands, for a person diagnosing a stalled guest: each vCPU's registers
    /// and local APIC (a parked vCPU answers too), its exit counts, the serial port's
    /// registers and the IOAPIC pins.
    fn describe(&self) -> String {
        let mut out = Vec::new();
        for v in &self.vcpus {
            v.send(VcpuCommand::Describe);
        }
        for v in &self.vcpus {
            out.push(match v.answer(VcpuCommand::Describe, DESCRIBE_TIMEOUT) {
                Some(Answer::Description(text)) => text,
                _ if v.is_finished() => format!("vCPU {}: its thread has ended", v.index()),
                _ => format!(
                    "vCPU {}: no answer within {DESCRIBE_TIMEOUT:?}: busy outside KVM_RUN, in a device access",
                    v.index()
                ),
            });
        }
        for v in &self.vcpus {
            let exits = serde_json::to_string(&*v.exits()).unwrap_or_default();
            out.push(format!("vCPU {} exits: {exits}", v.index()));
        }
        out.push(match self.serial.try_lock() {
            Ok(serial) => serial.describe(),
            Err(_) => "serial: locked by a vCPU (writing console output)".into(),
        });
        out.push(self.kvm_vm.describe_ioapic(&self.irq_pins));
        out.join("\n")
    }

    /// Parks every vCPU; the caller then stops serving devices. A vCPU that does not park in
    /// time is resumed with the others, and the pause fails.
    fn pause(&self) -> Result<(), Error> {
        let running: Vec<&VcpuThread> = self.vcpus.iter().filter(|v| !v.is_finished()).collect();
        for v in &running {
            v.send(VcpuCommand::Pause);
        }
        let deadline = Instant::now() + PARK_TIMEOUT;
        let parked = running.iter().all(|v| {
            let left = deadline.saturating_duration_since(Instant::now());
            v.answer(VcpuCommand::Pause, left) == Some(Answer::Paused)
        });
        if parked {
            return Ok(());
        }
        self.resume();
        Err(Error::PauseTimeout(PARK_TIMEOUT))
    }

    fn resume(&self) {
        for v in &self.vcpus {
            v.send(VcpuCommand::Resume);
        }
    }

    /// The whole state of the paused VM: every vCPU's (each reads its own), the interrupt
    /// controllers, PIT and clock, and the devices'.
    fn snapshot(&self) -> Result<Reply, SaveStateError> {
        if !self.snapshots {
            return Err(SaveStateError::XsaveTooLarge(crate::snapshot::XSAVE_AREA));
        }
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for v in &self.vcpus {
            match v.ask(VcpuCommand::SaveState, DESCRIBE_TIMEOUT) {
                Some(Answer::State(saved)) => vcpus.push(saved.take()?),
                _ => return Err(VcpuError::NoAnswer(v.index()).into()),
            }
        }
        let vm = self.kvm_vm.save_state().map_err(SaveStateError::Kvm)?;
        let devices = self.devices.save()?;
        let machine = MachineState { vcpus, vm, devices };
        Ok(Reply::Snapshot(Box::new((machine, self.mem.clone()))))
    }

    /// Probes the vCPUs that have been still long enough; true when none can run again.
    fn guest_halted(&self, watches: &mut [IdleWatch]) -> bool {
        let now = Instant::now();
        for (v, watch) in self.vcpus.iter().zip(watches.iter_mut()) {
            if !watch.observe(idle::activity(v.pthread()), now) {
                continue;
            }
            match v.ask(VcpuCommand::Probe, ANSWER_TIMEOUT) {
                Some(Answer::Probed(state)) => watch.probed(state, Instant::now()),
                // Busy in a device access: it is running.
                _ => watch.probed(ProbedState::Running, Instant::now()),
            }
        }
        idle::all_stuck(watches.iter())
    }
}

impl Vm {
    /// Starts the vCPUs and the controller; the guest runs until [`VmHandle::wait`] returns.
    pub fn start(self) -> Result<VmHandle, Error> {
        vcpu_run::install_kick_handler()?;
        let start_err = |what: &'static str, source| Error::Start { what, source };
        let eventfd =
            |what: &'static str| EventFd::new(EFD_NONBLOCK).map_err(|e| start_err(what, e));
        let clone =
            |evt: &EventFd, what: &'static str| evt.try_clone().map_err(|e| start_err(what, e));
        let exit_evt = eventfd("exit eventfd")?;
        let stop_evt = eventfd("stop eventfd")?;
        let command_evt = eventfd("command eventfd")?;
        let exit = Arc::new(ExitSignal::new(clone(&exit_evt, "exit eventfd")?));
        let Vm {
            mem,
            kvm_vm,
            vcpus,
            devices,
            config,
            paused,
            snapshots,
        } = self;
        let device_handles = devices.snapshot_handles();
        let irq_pins = devices.irq_pins();
        let DeviceManager { legacy, virtio } = devices;
        let pio = Arc::new(legacy.pio);
        let mmio = Arc::new(legacy.mmio);

        let mut threads = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let ctx = RunContext {
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: exit.clone(),
            };
            match VcpuThread::spawn(vcpu, ctx, paused) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    threads.into_iter().for_each(VcpuThread::stop);
                    return Err(start_err("vCPU thread", e));
                }
            }
        }
        let vcpu_exits = threads.iter().map(VcpuThread::exits).collect();

        let (command_tx, command_rx) = mpsc::channel();
        let lifecycle = Arc::new(Lifecycle::default());
        if paused {
            lifecycle.set(VmState::Paused);
        }
        let controller = Controller {
            exit_evt,
            stop_evt: clone(&stop_evt, "stop eventfd")?,
            reset_evt: legacy.exits.reset,
            power_off_evt: legacy.exits.power_off,
            panic_evt: legacy.exits.panic,
            command_evt: clone(&command_evt, "command eventfd")?,
            exit,
            finished: None,
        };
        let run = ControllerRun {
            serial_input: legacy.serial_input,
            subscribers: virtio.subscribers,
            vcpus: threads,
            commands: command_rx,
            lifecycle: lifecycle.clone(),
            kvm_vm,
            serial: legacy.serial,
            irq_pins,
            acpi: legacy.acpi,
            devices: device_handles,
            mem: mem.clone(),
            snapshots,
            start_paused: paused,
        };
        let slots_at_exit = virtio.slots.clone();
        let spawned = threads::spawn(Role::Vmm, "vmm", move || {
            // Whatever happens below, waiters learn that the VM is gone.
            let mut guard = ExitGuard {
                lifecycle: run.lifecycle.clone(),
                reason: ExitReason::VcpuFailed {
                    index: 0,
                    message: "the VMM controller thread panicked".into(),
                },
            };
            let reason = run_controller(controller, run);
            for slot in &slots_at_exit {
                super::handle::log_metrics(slot.kind, &slot.id, &slot.counters.to_json());
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
                i8042: legacy.i8042,
                serial_metrics: legacy.serial_metrics,
                boot_time: legacy.boot_time,
                vcpu_exits,
                virtio: virtio.slots.iter().map(DeviceRecord::of).collect(),
                config,
            }))),
            Err(e) => Err(start_err("controller thread", e)),
        }
    }
}

/// Runs the event loop until the guest ends, stops the vCPUs, and returns why it ended.
fn run_controller(controller: Controller, mut run: ControllerRun) -> ExitReason {
    let reason = match event_loop(controller, &mut run) {
        Ok(reason) => reason,
        Err(e) => ExitReason::VcpuFailed {
            index: 0,
            message: format!("the event loop could not start: {e:?}"),
        },
    };
    for v in run.vcpus.drain(..) {
        v.stop();
    }
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
    let mut paused = run.start_paused;
    let start = Instant::now();
    let mut watches: Vec<IdleWatch> = run.vcpus.iter().map(|_| IdleWatch::new(start)).collect();
    let mut next_check = start + IDLE_CHECK;
    loop {
        let timeout = next_check.saturating_duration_since(Instant::now());
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
                (Command::Describe, _) => Ok(Reply::Text(run.describe())),
                (Command::PowerButton, _) => run.press_power_button().map(Reply::Text),
                (Command::Snapshot, false) => Err(Error::NotPaused),
                (Command::Snapshot, true) => run.snapshot().map_err(Error::from),
                (Command::Pause, true) | (Command::Resume, false) => Ok(Reply::Text(String::new())),
                (Command::Pause, false) => run.pause().map(|()| {
                    paused = true;
                    run.lifecycle.set(VmState::Paused);
                    log::info!("VM paused");
                    Reply::Text(String::new())
                }),
                (Command::Resume, true) => {
                    paused = false;
                    run.resume();
                    // Time spent parked is not idleness.
                    let now = Instant::now();
                    watches.iter_mut().for_each(|w| *w = IdleWatch::new(now));
                    run.lifecycle.set(VmState::Running);
                    log::info!("VM resumed");
                    Ok(Reply::Text(String::new()))
                }
            };
            let _ = msg.reply.send(result);
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + IDLE_CHECK;
            if !paused && run.guest_halted(&mut watches) {
                log::info!("Guest finished: {}", ExitReason::Halted);
                return Ok(ExitReason::Halted);
            }
        }
    }
}
