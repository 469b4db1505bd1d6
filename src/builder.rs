//! Building and running a VM in a few lines: [`VmBuilder`] → [`Instance`], with the serial
//! console as a byte stream ([`ConsoleStream`]).
//!
//! ```no_run
//! use std::io::Read;
//!
//! let mut vm = fennec::VmBuilder::new("vmlinux")
//!     .cmdline("console=ttyS0 panic=1")
//!     .vcpus(2)
//!     .memory_mib(256)
//!     .disk("rootfs.ext4")
//!     .root()
//!     .start()?;
//! let mut console = vm.take_console().expect("the builder made a console stream");
//! let reason = vm.wait()?;
//! let mut printed = String::new();
//! console.read_to_string(&mut printed)?;
//! println!("{printed}\nguest ended: {reason}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Nothing here is global: every [`Instance`] has its own KVM VM, threads, devices and console,
//! so one process can run many.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::{BlockConfig, BootSourceConfig, MachineConfig, NetConfig, VmConfig};
use crate::storage::{self, Provisioned};
use crate::{Console, Error, Vm, VmHandle};

/// How much guest output a [`ConsoleStream`] keeps for a reader that falls behind; older bytes
/// are dropped (and counted) rather than stalling the guest.
pub const CONSOLE_BUFFER: usize = 4 << 20;

/// Errors of [`VmBuilder::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Building or starting the VM failed.
    #[error(transparent)]
    Vm(#[from] Error),
    /// A template drive could not be cloned.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The console could not be set up.
    #[error("Cannot set up the console: {0}")]
    Console(#[source] io::Error),
}

enum ConsoleChoice {
    /// A [`ConsoleStream`] for the caller, optionally teeing output to a file.
    Stream { tee: Option<PathBuf> },
    /// The caller's own console.
    Given(Console),
}

/// A VM's configuration, built up a call at a time. [`VmBuilder::start`] boots it.
pub struct VmBuilder {
    config: VmConfig,
    console: ConsoleChoice,
}

impl VmBuilder {
    /// A VM booting `kernel` (ELF vmlinux or bzImage) with one vCPU, 128 MiB and the default
    /// command line, its console a [`ConsoleStream`].
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmBuilder {
            config: VmConfig {
                boot_source: BootSourceConfig {
                    kernel_image_path: kernel.into(),
                    initrd_path: None,
                    boot_args: None,
                },
                machine_config: MachineConfig::default(),
                drives: Vec::new(),
                net: Vec::new(),
            },
            console: ConsoleChoice::Stream { tee: None },
        }
    }

    /// A VM from a whole configuration (as the CLI's `--config-file` or the control socket
    /// make them).
    pub fn from_config(config: VmConfig) -> Self {
        VmBuilder {
            config,
            console: ConsoleChoice::Stream { tee: None },
        }
    }

    /// Loads `path` as the initramfs.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.boot_source.initrd_path = Some(path.into());
        self
    }

    /// Sets the kernel command line (fennec still adds `console=ttyS0` and `reboot=k` unless
    /// it names its own).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.config.boot_source.boot_args = Some(cmdline.into());
        self
    }

    /// Sets the number of vCPUs.
    pub fn vcpus(mut self, count: u8) -> Self {
        self.config.machine_config.vcpu_count = count;
        self
    }

    /// Sets guest memory in MiB.
    pub fn memory_mib(mut self, mib: usize) -> Self {
        self.config.machine_config.mem_size_mib = mib;
        self
    }

    /// Adds a writable drive backed by the raw image at `path`, named `disk0`, `disk1`, ...
    pub fn disk(self, path: impl Into<PathBuf>) -> Self {
        let id = format!("disk{}", self.config.drives.len());
        self.drive(BlockConfig {
            id,
            path: path.into(),
            ..BlockConfig::default()
        })
    }

    /// Adds a drive that gets a fresh clone of template `template` from the store `store`
    /// (see [`crate::storage`]); the clone is destroyed when the VM ends.
    pub fn disk_from_template(self, template: &str, store: &str) -> Self {
        let id = format!("disk{}", self.config.drives.len());
        self.drive(BlockConfig {
            id,
            template: Some(template.to_string()),
            store: Some(store.to_string()),
            ..BlockConfig::default()
        })
    }

    /// Adds a drive configured in full.
    pub fn drive(mut self, drive: BlockConfig) -> Self {
        self.config.drives.push(drive);
        self
    }

    /// Makes the drive added last read-only.
    pub fn read_only(mut self) -> Self {
        if let Some(d) = self.config.drives.last_mut() {
            d.read_only = true;
        }
        self
    }

    /// Makes the drive added last the root filesystem (`/dev/vda`, `root=/dev/vda`).
    pub fn root(mut self) -> Self {
        if let Some(d) = self.config.drives.last_mut() {
            d.root = true;
        }
        self
    }

    /// Adds a virtio-net interface on the existing TAP `tap`, named `net0`, `net1`, ...
    pub fn net(self, tap: &str) -> Self {
        let id = format!("net{}", self.config.net.len());
        self.net_config(NetConfig {
            id,
            tap: tap.to_string(),
            mac: None,
        })
    }

    /// Adds a network interface configured in full.
    pub fn net_config(mut self, net: NetConfig) -> Self {
        self.config.net.push(net);
        self
    }

    /// Also copies everything the guest prints to the file at `path` (created or truncated).
    pub fn tee_console(mut self, path: impl Into<PathBuf>) -> Self {
        self.console = ConsoleChoice::Stream {
            tee: Some(path.into()),
        };
        self
    }

    /// Uses `console` instead of a [`ConsoleStream`] (for example stdout and stdin);
    /// [`Instance::take_console`] then returns `None`.
    pub fn console(mut self, console: Console) -> Self {
        self.console = ConsoleChoice::Given(console);
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Clones the template drives, builds the VM and starts it.
    pub fn start(self) -> Result<Instance, StartError> {
        let mut config = self.config;
        config.validate().map_err(Error::from)?;
        let (console, stream) = match self.console {
            ConsoleChoice::Given(c) => (c, None),
            ConsoleChoice::Stream { tee } => {
                let tee = tee
                    .map(|p| File::create(&p))
                    .transpose()
                    .map_err(StartError::Console)?;
                let (console, stream) = ConsoleStream::new(tee).map_err(StartError::Console)?;
                (console, Some(stream))
            }
        };
        let disks = storage::provision(&mut config)?;
        let handle = Vm::new(&config, console)?.start()?;
        Ok(Instance {
            handle,
            console: stream,
            config,
            disks,
        })
    }
}

/// A started VM: everything [`VmHandle`] does (it derefs to one: `pause`, `resume`,
/// `shutdown`, `stop`, `wait`, `metrics`, ...), plus its console stream. Dropping it stops the
/// VM if it still runs, waits for it, and then destroys the template clones it was given.
pub struct Instance {
    handle: VmHandle,
    console: Option<ConsoleStream>,
    config: VmConfig,
    disks: Provisioned,
}

impl Instance {
    /// The handle, to clone and give to other threads.
    pub fn handle(&self) -> &VmHandle {
        &self.handle
    }

    /// The console stream, for the caller to keep (once).
    pub fn take_console(&mut self) -> Option<ConsoleStream> {
        self.console.take()
    }

    /// The configuration the VM runs with (template drives with their clones' paths).
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The store disk behind drive `id`, when it was cloned from a template.
    pub fn template_disk(&self, id: &str) -> Option<(&dyn storage::DiskStore, &storage::DiskRef)> {
        self.disks.disk_of(id)
    }
}

impl Deref for Instance {
    type Target = VmHandle;

    fn deref(&self) -> &VmHandle {
        &self.handle
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !matches!(self.handle.state(), crate::VmState::Exited(_)) {
            let _ = self.handle.stop();
        }
        let _ = self.handle.wait();
        self.disks.release();
    }
}

/// Guest output waiting for a reader.
#[derive(Default)]
struct Output {
    bytes: VecDeque<u8>,
    /// The guest's side is gone: the VM ended.
    closed: bool,
    /// Bytes dropped because the reader fell more than [`CONSOLE_BUFFER`] behind.
    dropped: u64,
}

impl Output {
    /// Moves as many waiting bytes as fit into `buf`; returns how many.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.bytes.len());
        for (dst, src) in buf.iter_mut().zip(self.bytes.drain(..n)) {
            *dst = src;
        }
        n
    }
}

#[derive(Default)]
struct Shared {
    output: Mutex<Output>,
    ready: Condvar,
}

/// The guest's side of a [`ConsoleStream`]: what the serial port writes to.
struct Sink {
    shared: Arc<Shared>,
    tee: Option<File>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.tee {
            if let Err(e) = f.write_all(buf) {
                log::warn!("Console tee failed, no longer copying: {e}");
                self.tee = None;
            }
        }
        let mut out = fennec_devices::lock(&self.shared.output);
        out.bytes.extend(buf);
        let excess = out.bytes.len().saturating_sub(CONSOLE_BUFFER);
        if excess > 0 {
            out.bytes.drain(..excess);
            out.dropped += excess as u64;
        }
        self.shared.ready.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tee {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        fennec_devices::lock(&self.shared.output).closed = true;
        self.shared.ready.notify_all();
    }
}

/// The guest's serial console as a byte stream: [`Read`] gives what the guest printed (and
/// end-of-file once the VM is gone), [`Write`] types into its serial port. The guest never
/// waits for the reader: past [`CONSOLE_BUFFER`] unread bytes, the oldest are dropped.
pub struct ConsoleStream {
    shared: Arc<Shared>,
    input: io::PipeWriter,
}

impl ConsoleStream {
    /// A stream and the [`Console`] to give the VM.
    pub fn new(tee: Option<File>) -> io::Result<(Console, ConsoleStream)> {
        let (reader, writer) = io::pipe()?;
        let shared = Arc::new(Shared::default());
        let console = Console {
            output: Box::new(Sink {
                shared: shared.clone(),
                tee,
            }),
            input: Some(Box::new(reader)),
        };
        Ok((
            console,
            ConsoleStream {
                shared,
                input: writer,
            },
        ))
    }

    /// Reads what is there, waiting up to `timeout` for something: `Ok(0)` at end of file or
    /// when the time is up with nothing to read (tell them apart with [`ConsoleStream::is_closed`]).
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut out = fennec_devices::lock(&self.shared.output);
        loop {
            if !out.bytes.is_empty() || buf.is_empty() {
                return Ok(out.take(buf));
            }
            let now = Instant::now();
            if out.closed || now >= deadline {
                return Ok(0);
            }
            out = self
                .shared
                .ready
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the VM is gone and everything it printed has been read.
    pub fn is_closed(&self) -> bool {
        let out = fennec_devices::lock(&self.shared.output);
        out.closed && out.bytes.is_empty()
    }

    /// Bytes the guest printed that were dropped because the reader fell behind.
    pub fn dropped(&self) -> u64 {
        fennec_devices::lock(&self.shared.output).dropped
    }

    /// Splits off the input side, so one thread can read while another types.
    pub fn split(self) -> (ConsoleReader, io::PipeWriter) {
        (
            ConsoleReader {
                shared: self.shared,
            },
            self.input,
        )
    }
}

impl Read for ConsoleStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        ConsoleReader::read_shared(&self.shared, buf)
    }
}

impl Write for ConsoleStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.input.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.input.flush()
    }
}

/// The output half of a split [`ConsoleStream`].
pub struct ConsoleReader {
    shared: Arc<Shared>,
}

impl ConsoleReader {
    fn read_shared(shared: &Shared, buf: &mut [u8]) -> io::Result<usize> {
        let mut out = fennec_devices::lock(&shared.output);
        while out.bytes.is_empty() && !out.closed && !buf.is_empty() {
            out = shared.ready.wait(out).unwrap_or_else(|e| e.into_inner());
        }
        Ok(out.take(buf))
    }
}

impl Read for ConsoleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Self::read_shared(&self.shared, buf)
    }
}
