//! The vCPU thread: a small state machine, running or paused, driven by [`Command`]s.
//!
//! The VMM sends a command on the vCPU's channel and kicks the thread with a signal whose
//! handler sets `immediate_exit` in the vCPU's `kvm_run`, so `KVM_RUN` returns (or, if the
//! thread was elsewhere, the next one returns at once). The thread takes its commands after
//! every exit. A paused thread blocks on its channel and still answers: it can describe itself,
//! and save its state for a snapshot. Nothing polls: an idle guest's vCPU sleeps in KVM until
//! the guest or the VMM has something for it.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_run, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuExit;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use fennec_devices::bus::Bus;

use super::state::VcpuState;
use super::{ProbedState, Vcpu, VcpuError, KICK_SIGNAL_OFFSET};
use crate::seccomp::Role;
use crate::threads;
use crate::vstate::exit::ExitReason;

/// What the VMM asks of a vCPU thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Leave `KVM_RUN` and wait for the next command; answers [`Answer::Paused`].
    Pause,
    /// Run the guest again; answers [`Answer::Resumed`].
    Resume,
    /// Answer with [`Vcpu::describe`].
    Describe,
    /// Answer with [`Vcpu::probe`].
    Probe,
    /// Answer with [`Vcpu::save_state`]; only a parked vCPU does.
    SaveState,
    /// End the thread.
    Stop,
}

/// A vCPU thread's answer to a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The vCPU is parked.
    Paused,
    /// The vCPU runs.
    Resumed,
    /// Where the vCPU stands, in words.
    Description(String),
    /// Whether the vCPU can run again.
    Probed(ProbedState),
    /// The vCPU's whole state, or why it could not be read.
    State(SavedVcpu),
}

/// A vCPU's saved state, as a [`Answer::State`] carries it.
#[derive(Clone)]
pub struct SavedVcpu(u8, Arc<Mutex<Option<Result<VcpuState, VcpuError>>>>);

impl SavedVcpu {
    /// Takes the state out (once).
    pub fn take(&self) -> Result<VcpuState, VcpuError> {
        fennec_devices::lock(&self.1)
            .take()
            .unwrap_or(Err(VcpuError::StateTaken(self.0)))
    }
}

impl std::fmt::Debug for SavedVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedVcpu")
    }
}

impl PartialEq for SavedVcpu {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.1, &other.1)
    }
}

impl Eq for SavedVcpu {}

impl Answer {
    fn answers(&self, command: Command) -> bool {
        matches!(
            (self, command),
            (Answer::Paused, Command::Pause)
                | (Answer::Resumed, Command::Resume)
                | (Answer::Description(_), Command::Describe)
                | (Answer::Probed(_), Command::Probe)
                | (Answer::State(_), Command::SaveState)
        )
    }
}

/// Counts of a vCPU's exits from `KVM_RUN`, by kind.
#[derive(Debug, Default, serde::Serialize)]
pub struct VcpuExits {
    /// Port reads.
    pub io_in: AtomicU64,
    /// Port writes.
    pub io_out: AtomicU64,
    /// MMIO reads.
    pub mmio_read: AtomicU64,
    /// MMIO writes.
    pub mmio_write: AtomicU64,
    /// Kicks by the VMM (commands).
    pub kicked: AtomicU64,
    /// Every other exit.
    pub other: AtomicU64,
}

/// How vCPU threads report the end of the guest: the first reason wins, then `evt` fires.
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    /// A signal firing `evt`.
    pub fn new(evt: EventFd) -> Self {
        ExitSignal {
            reason: Mutex::new(None),
            evt,
        }
    }

    /// Records `reason` unless one is recorded already, and wakes the VMM.
    pub fn report(&self, reason: ExitReason) {
        fennec_devices::lock(&self.reason).get_or_insert(reason);
        if let Err(e) = self.evt.write(1) {
            log::error!("Failed to signal the end of the guest: {e}");
        }
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        fennec_devices::lock(&self.reason).clone()
    }
}

/// What a running vCPU needs from the VMM.
pub struct RunContext {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Where the vCPU reports resets and failures.
    pub exit: Arc<ExitSignal>,
}

thread_local! {
    /// The running vCPU's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: a non-null KVM_RUN is this thread's vCPU `kvm_run` mapping, set by the run
        // loop and cleared before the VcpuFd owning the mapping is dropped; the signal runs on
        // this same thread, so the mapping is live. A volatile byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the kick handler (once per process).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let signum = kick_signal();
    INSTALLED
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(signum, handle_kick)
                .map_err(|e| e.errno())
        })
        .map_err(|errno| VcpuError::SignalHandler(vmm_sys_util::errno::Error::new(errno)))
}

/// A running vCPU thread, as the VMM holds it.
pub struct VcpuThread {
    index: u8,
    thread: JoinHandle<()>,
    commands: Sender<Command>,
    answers: Receiver<Answer>,
    /// The thread's kernel thread ID, once it runs (0 before).
    tid: Arc<AtomicI32>,
    exits: Arc<VcpuExits>,
}

impl VcpuThread {
    /// Starts `vcpu` on a thread of its own, running the guest at once.
    /// Starts the thread for `vcpu`: running, or parked until a [`Command::Resume`] when
    /// `paused` (a VM restored without being resumed).
    pub fn spawn(vcpu: Vcpu, ctx: RunContext, paused: bool) -> std::io::Result<VcpuThread> {
        let index = vcpu.index();
        let (commands, command_rx) = mpsc::channel();
        let (answer_tx, answers) = mpsc::channel();
        let tid = Arc::new(AtomicI32::new(0));
        let exits = Arc::new(VcpuExits::default());
        let run = Runner {
            vcpu,
            ctx,
            commands: command_rx,
            answers: answer_tx,
            tid: tid.clone(),
            exits: exits.clone(),
            paused,
        };
        let thread = threads::spawn(Role::Vcpu, &format!("vcpu{index}"), move || run.run())?;
        Ok(VcpuThread {
            index,
            thread,
            commands,
            answers,
            tid,
            exits,
        })
    }

    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The thread's kernel thread ID (0 until it has started).
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Acquire)
    }

    /// The thread's handle, for its CPU clock (halt detection).
    pub fn pthread(&self) -> libc::pthread_t {
        std::os::unix::thread::JoinHandleExt::as_pthread_t(&self.thread)
    }

    /// Exit counters, shared with the thread (they stay readable after it ends).
    pub fn exits(&self) -> Arc<VcpuExits> {
        self.exits.clone()
    }

    /// Whether the thread has ended (the guest reset, or a vCPU failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Hands the thread `command` and kicks it out of `KVM_RUN`; false if it has ended.
    pub fn send(&self, command: Command) -> bool {
        if self.commands.send(command).is_err() {
            return false;
        }
        if let Err(e) = self.thread.kill(kick_signal()) {
            log::debug!("Failed to kick vCPU {}: {e}", self.index);
        }
        true
    }

    /// Waits up to `timeout` for the answer to `command`, sent just before; `None` if the
    /// thread did not answer in time (it is busy outside `KVM_RUN`, or has ended).
    pub fn answer(&self, command: Command, timeout: Duration) -> Option<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                // An answer to an earlier question that came too late: skip it.
                Ok(answer) if !answer.answers(command) => continue,
                Ok(answer) => return Some(answer),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Sends `command` and waits up to `timeout` for its answer.
    pub fn ask(&self, command: Command, timeout: Duration) -> Option<Answer> {
        // Answers that came after their question timed out would be taken for this one's.
        while self.answers.try_recv().is_ok() {}
        if !self.send(command) {
            return None;
        }
        self.answer(command, timeout)
    }

    /// Stops the thread and waits for it to end.
    pub fn stop(self) {
        self.send(Command::Stop);
        if self.thread.join().is_err() {
            log::error!("vCPU {} thread panicked", self.index);
        }
    }
}

/// The vCPU thread's side.
struct Runner {
    vcpu: Vcpu,
    ctx: RunContext,
    commands: Receiver<Command>,
    answers: Sender<Answer>,
    tid: Arc<AtomicI32>,
    exits: Arc<VcpuExits>,
    paused: bool,
}

/// What the run loop does next.
enum Next {
    Run,
    Wait,
    End,
}

impl Runner {
    fn run(mut self) {
        // SAFETY: gettid has no preconditions and touches no memory.
        self.tid.store(unsafe { libc::gettid() }, Ordering::Release);
        let run_ptr: *mut kvm_run = self.vcpu.fd_mut().get_kvm_run();
        KVM_RUN.with(|p| p.set(run_ptr));
        if self.vcpu.index() == 0 {
            // fennec's own share of a boot: all that comes before the guest's first instruction.
            log::info!(
                "vCPU 0 enters the guest {:.3} ms after fennec started",
                crate::threads::process_start().elapsed().as_secs_f64() * 1000.0
            );
        }
        let mut next = match self.paused {
            true => Next::Wait,
            false => Next::Run,
        };
        loop {
            next = match next {
                Next::End => break,
                Next::Wait => match self.commands.recv() {
                    Ok(command) => self.obey(command, false),
                    Err(_) => Next::End,
                },
                Next::Run => match self.commands.try_recv() {
                    Ok(command) => self.obey(command, true),
                    Err(mpsc::TryRecvError::Disconnected) => Next::End,
                    Err(mpsc::TryRecvError::Empty) => self.run_once(),
                },
            };
        }
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    }

    /// Carries out `command`; `running` says whether the vCPU was running.
    fn obey(&mut self, command: Command, running: bool) -> Next {
        let (answer, next) = match command {
            Command::Pause => (Answer::Paused, Next::Wait),
            Command::Resume => (Answer::Resumed, Next::Run),
            Command::Describe => (Answer::Description(self.vcpu.describe()), keep(running)),
            Command::Probe => (Answer::Probed(self.vcpu.probe()), keep(running)),
            Command::SaveState => {
                let index = self.vcpu.index();
                let state = match running {
                    true => Err(VcpuError::Running(index)),
                    false => self.vcpu.save_state(),
                };
                let saved = SavedVcpu(index, Arc::new(Mutex::new(Some(state))));
                (Answer::State(saved), keep(running))
            }
            Command::Stop => return Next::End,
        };
        // The VMM may have stopped waiting; that is not the vCPU's concern.
        let _ = self.answers.send(answer);
        next
    }

    /// One `KVM_RUN`, and what its exit means.
    fn run_once(&mut self) -> Next {
        let index = self.vcpu.index();
        let outcome = match self.vcpu.fd_mut().run() {
            Ok(VcpuExit::InternalError) => Some(self.vcpu.internal_error()),
            Ok(exit) => handle_exit(index, exit, &self.ctx, &self.exits),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.vcpu.fd_mut().set_kvm_immediate_exit(0);
                self.exits.kicked.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => Some(ExitReason::VcpuFailed {
                index,
                message: format!("KVM_RUN failed: {e}"),
            }),
        };
        match outcome {
            Some(reason) => {
                self.ctx.exit.report(reason);
                Next::End
            }
            None => Next::Run,
        }
    }
}

fn keep(running: bool) -> Next {
    if running {
        Next::Run
    } else {
        Next::Wait
    }
}

/// Handles one `KVM_RUN` exit; `Some` ends the guest.
fn handle_exit(
    index: u8,
    exit: VcpuExit<'_>,
    ctx: &RunContext,
    exits: &VcpuExits,
) -> Option<ExitReason> {
    let counter = match exit {
        VcpuExit::IoIn(..) => &exits.io_in,
        VcpuExit::IoOut(..) => &exits.io_out,
        VcpuExit::MmioRead(..) => &exits.mmio_read,
        VcpuExit::MmioWrite(..) => &exits.mmio_write,
        _ => &exits.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio.read(port.into(), data) {
                data.fill(0xff);
                log::debug!("vCPU {index}: read from unhandled port {port:#x}");
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            if !ctx.pio.write(port.into(), data) {
                log::debug!("vCPU {index}: write to unhandled port {port:#x}");
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                data.fill(0xff);
                log::debug!("vCPU {index}: read from unhandled MMIO {addr:#x}");
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio.write(addr, data) {
                log::debug!("vCPU {index}: write to unhandled MMIO {addr:#x}");
            }
            None
        }
        // A triple fault: how Linux's `reboot=t` and any CPU reset end up here. fennec's
        // command line asks for `reboot=k`, so one here is worth saying at the default level.
        VcpuExit::Shutdown => {
            log::warn!("vCPU {index} triple-faulted (a KVM shutdown exit): the guest resets");
            Some(ExitReason::Reset)
        }
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET => Some(ExitReason::Reset),
            KVM_SYSTEM_EVENT_SHUTDOWN => Some(ExitReason::PowerOff),
            KVM_SYSTEM_EVENT_CRASH => Some(ExitReason::VcpuFailed {
                index,
                message: "the guest reported a crash".into(),
            }),
            other => {
                log::debug!("vCPU {index}: ignoring system event {other}");
                None
            }
        },
        VcpuExit::Hlt => Some(ExitReason::Halted),
        VcpuExit::FailEntry(reason, cpu) => Some(ExitReason::VcpuFailed {
            index,
            message: format!(
                "KVM could not enter the guest (hardware reason {reason:#x} on CPU {cpu})"
            ),
        }),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => None,
        // Anything else would come back on every re-entry: end the guest rather than spin.
        other => Some(ExitReason::VcpuFailed {
            index,
            message: format!("unexpected KVM exit {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_answer_matches_only_its_command() {
        assert!(Answer::Paused.answers(Command::Pause));
        assert!(!Answer::Paused.answers(Command::Describe));
        assert!(Answer::Probed(ProbedState::Running).answers(Command::Probe));
        assert!(!Answer::Description(String::new()).answers(Command::Probe));
    }
}
