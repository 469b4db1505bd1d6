//! [`VmHandle`]: a started VM as its users hold it (pause, resume, Ctrl-Alt-Del, shutdown,
//! stop, describe, metrics, wait), and the [`Lifecycle`] the controller thread publishes.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use vmm_sys_util::eventfd::EventFd;

use fennec_devices::legacy::boot_timer::BootTime;
use fennec_devices::legacy::i8042::I8042;
use fennec_devices::legacy::serial::SerialMetrics;
use fennec_devices::EventFdTrigger;

use super::command::{Command, CommandMsg, Reply};
use super::records::{DeviceMetrics, DeviceRecord};
use super::{Error, ExitReason};
use crate::config::VmConfig;
use crate::snapshot::MachineState;
use crate::vstate::vcpu::run::VcpuExits;
use vm_memory::GuestMemoryMmap;

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
pub(super) struct Lifecycle {
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
    pub fn set(&self, state: VmState) {
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
pub(super) struct ExitGuard {
    pub lifecycle: Arc<Lifecycle>,
    pub reason: ExitReason,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.lifecycle.set(VmState::Exited(self.reason.clone()));
    }
}

/// Stops a running VM, like [`VmHandle::stop`]; stopping a VM that already ended does nothing.
pub struct Stopper(pub(super) EventFd);

impl Stopper {
    /// Asks the VM to stop now.
    pub fn stop(&self) -> Result<(), Error> {
        self.0.write(1).map_err(Error::Stop)
    }
}

/// A device's counters as JSON: an object of numbers, serialised from the device's own
/// metrics type (counters serialise as numbers, so this cannot fail).
fn counters(metrics: &impl Serialize) -> Value {
    serde_json::to_value(metrics).unwrap_or_default()
}

/// A VM's counters, as the API serves them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VmMetrics {
    /// Milliseconds since the VM started.
    pub uptime_ms: u64,
    /// Microseconds from fennec's start to the guest's boot timer write; absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_time_us: Option<u64>,
    /// The serial console: bytes out, lost, in.
    pub serial: Value,
    /// Each vCPU's exits from `KVM_RUN`, by kind.
    pub vcpus: Vec<Value>,
    /// Each virtio device's counters, by device ID.
    pub devices: BTreeMap<String, DeviceMetrics>,
}

pub(super) struct HandleInner {
    pub thread: Mutex<Option<JoinHandle<ExitReason>>>,
    pub lifecycle: Arc<Lifecycle>,
    pub started: Instant,
    pub stopper: Stopper,
    pub commands: Mutex<mpsc::Sender<CommandMsg>>,
    pub command_evt: EventFd,
    pub i8042: Arc<Mutex<I8042<EventFdTrigger>>>,
    pub serial_metrics: Arc<SerialMetrics>,
    pub boot_time: Arc<BootTime>,
    pub vcpu_exits: Vec<Arc<VcpuExits>>,
    pub virtio: Vec<DeviceRecord>,
    pub config: VmConfig,
}

/// A running VM. Clones are handles to the same VM, for other threads.
#[derive(Clone)]
pub struct VmHandle(pub(super) Arc<HandleInner>);

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
        match self.ask(command)? {
            Reply::Text(text) => Ok(text),
            Reply::Snapshot(_) => Ok(String::new()),
        }
    }

    /// The whole state of the paused VM and its guest memory, for a snapshot; the VM must be
    /// paused ([`VmHandle::pause`]).
    pub fn snapshot(&self) -> Result<(MachineState, GuestMemoryMmap), Error> {
        match self.ask(Command::Snapshot)? {
            Reply::Snapshot(state) => Ok(*state),
            Reply::Text(_) => Err(super::SaveStateError::NoState.into()),
        }
    }

    fn ask(&self, command: Command) -> Result<Reply, Error> {
        let (reply, answer) = mpsc::channel();
        let sent = fennec_devices::lock(&self.0.commands)
            .send(CommandMsg { command, reply })
            .is_ok();
        if !sent || self.0.command_evt.write(1).is_err() {
            return Err(Error::NotRunning);
        }
        match answer.recv() {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => Err(e),
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
            .map_err(Error::CtrlAltDel)
    }

    /// Presses the guest's ACPI power button: a guest with ACPI (a distribution's systemd)
    /// powers off. Refused with [`Error::NoPowerButton`] when the VM has no ACPI or the guest
    /// does not listen to its events (fennec's microVM kernel).
    pub fn press_power_button(&self) -> Result<(), Error> {
        self.command(Command::PowerButton).map(drop)
    }

    /// Asks the guest to shut down, resuming it first if paused: through its ACPI power button
    /// if it listens to ACPI events, as a PC's power button asks; with Ctrl-Alt-Del otherwise.
    /// Waits up to `timeout` for it to end and stops it if it does not. Returns why it ended
    /// and whether it had to be stopped.
    pub fn shutdown(&self, timeout: Duration) -> Result<(ExitReason, bool), Error> {
        if self.state() == VmState::Paused {
            self.resume()?;
        }
        let asked = match self.press_power_button() {
            Err(Error::NoPowerButton(why)) => {
                log::info!("Shutting down with Ctrl-Alt-Del: {why}");
                self.send_ctrl_alt_del()
            }
            pressed => pressed,
        };
        match asked {
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

    /// Serial console counters; they stay readable after the guest ends.
    pub fn serial_metrics(&self) -> Arc<SerialMetrics> {
        self.0.serial_metrics.clone()
    }

    /// Every counter of the VM, by device.
    pub fn metrics(&self) -> VmMetrics {
        VmMetrics {
            uptime_ms: self.uptime().as_millis() as u64,
            boot_time_us: self.0.boot_time.micros(),
            serial: counters(&*self.0.serial_metrics),
            vcpus: self.0.vcpu_exits.iter().map(|e| counters(&**e)).collect(),
            devices: self.device_metrics(),
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

/// Logs a device's non-zero counters on one line.
pub(super) fn log_metrics(kind: &str, id: &str, metrics: &impl serde::Serialize) {
    let counters = match serde_json::to_value(metrics) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return,
    };
    let m: Vec<String> = counters
        .iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut name = kind.chars();
    let kind: String = name
        .next()
        .map(|c| c.to_uppercase().chain(name).collect())
        .unwrap_or_default();
    log::info!("{kind} {id:?}: {}", m.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
