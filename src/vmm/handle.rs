//! [`VmHandle`]: a started VM as its users hold it (pause, resume, Ctrl-Alt-Del, shutdown,
//! stop, describe, metrics, wait), and the [`Lifecycle`] the controller thread publishes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use vmm_sys_util::eventfd::EventFd;

use fennec_devices::legacy::boot_timer::BootTime;
use fennec_devices::legacy::i8042::I8042;
use fennec_devices::legacy::serial::SerialMetrics;
use fennec_devices::rate_limiter::{BucketSpec, Buckets};
use fennec_devices::virtio::block::Block;
use fennec_devices::EventFdTrigger;

use super::controller::{Command, CommandMsg, Reply};
use super::{Error, ExitReason};
use crate::device_manager::{self, DriveInfo, NetInfo};
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// Each drive's counters, by drive ID.
    pub drives: BTreeMap<String, Value>,
    /// Each network interface's counters, by interface ID.
    pub network_interfaces: BTreeMap<String, Value>,
    /// The entropy device's counters, when the VM has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy: Option<Value>,
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
    pub drives: Vec<DriveInfo>,
    pub nets: Vec<NetInfo>,
    pub entropy: Option<Arc<fennec_devices::virtio::rng::RngMetrics>>,
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
            Reply::Text(_) => Err(Error::SnapshotState("no state came back".into())),
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

    /// Drive `id` and its device, while the VM has it.
    fn drive_device(&self, id: &str) -> Result<(&DriveInfo, Arc<Mutex<Block>>), Error> {
        let drive = self
            .0
            .drives
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| Error::NoSuchDrive(id.to_string()))?;
        let device = drive.device.upgrade().ok_or(Error::NotRunning)?;
        Ok((drive, device))
    }

    /// Sets drive `id`'s rate limits (Firecracker's drive PATCH with `rate_limiter`); the
    /// buckets start full.
    pub fn set_drive_rate_limits(
        &self,
        id: &str,
        bandwidth: Option<BucketSpec>,
        ops: Option<BucketSpec>,
    ) -> Result<(), Error> {
        let (_, device) = self.drive_device(id)?;
        fennec_devices::lock(&device).set_rate_limits(bandwidth, ops);
        log::info!("Drive {id:?}: rate limits bandwidth {bandwidth:?}, ops {ops:?}");
        Ok(())
    }

    /// Sets network interface `id`'s rate limits on what the guest receives and sends
    /// (Firecracker's network interface PATCH); `None` keeps a direction's.
    pub fn set_net_rate_limits(
        &self,
        id: &str,
        rx: Option<Buckets>,
        tx: Option<Buckets>,
    ) -> Result<(), Error> {
        let net = self
            .0
            .nets
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| Error::NoSuchNet(id.to_string()))?;
        let device = net.device.upgrade().ok_or(Error::NotRunning)?;
        fennec_devices::lock(&device).set_rate_limits(rx, tx);
        log::info!("Network interface {id:?}: rate limits rx {rx:?}, tx {tx:?}");
        Ok(())
    }

    /// Swaps the image behind drive `id` for the file at `path` (Firecracker's drive PATCH),
    /// keeping the drive's read-only setting; the guest sees the new capacity.
    pub fn replace_drive_image(&self, id: &str, path: &Path) -> Result<(), Error> {
        let (drive, device) = self.drive_device(id)?;
        let disk = device_manager::open_disk(id, path, drive.read_only)?;
        let size = disk.size();
        fennec_devices::lock(&device).replace_disk(Box::new(disk), size);
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
        let (_, device) = self.drive_device(id)?;
        let was_running = match self.state() {
            VmState::Running => true,
            VmState::Paused => false,
            VmState::Exited(_) => return Err(Error::NotRunning),
        };
        if was_running {
            self.pause()?;
        }
        let flushed = fennec_devices::lock(&device)
            .flush_disk()
            .map_err(|source| Error::Flush {
                id: id.to_string(),
                source,
            });
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
        VmMetrics {
            uptime_ms: self.uptime().as_millis() as u64,
            boot_time_us: self.0.boot_time.micros(),
            serial: counters(&*self.0.serial_metrics),
            vcpus: self.0.vcpu_exits.iter().map(|e| counters(&**e)).collect(),
            drives: self
                .0
                .drives
                .iter()
                .map(|d| (d.id.clone(), counters(&*d.metrics)))
                .collect(),
            network_interfaces: self
                .0
                .nets
                .iter()
                .map(|n| (n.id.clone(), counters(&*n.metrics)))
                .collect(),
            entropy: self.0.entropy.as_ref().map(|m| counters(&**m)),
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
