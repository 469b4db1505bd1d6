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

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::console::ConsoleStream;

use crate::config::{
    BlockConfig, BootSourceConfig, DriveSource, MachineConfig, NetConfig, NetHost, TemplateDrive,
    UserNetConfig, VmConfig,
};
use crate::mmds::Mmds;
use crate::storage::helper::StorageHelper;
use crate::storage::{self, Provisioned};
use crate::{Console, Error, Vm, VmHandle};

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
    /// The storage helper could not be told the VM's disks.
    #[error("Cannot name the VM's disks to the storage helper: {0}")]
    StorageHelper(String),
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
    helper: Option<Arc<StorageHelper>>,
    mmds: Mmds,
    /// Restore this snapshot (its state, the memory file) instead of booting.
    restore: Option<(Box<crate::snapshot::SnapshotState>, PathBuf)>,
    /// A restored VM starts running (else parked, for `resume`).
    resume: bool,
}

impl VmBuilder {
    /// A VM booting `kernel` (ELF vmlinux or bzImage) with one vCPU, 128 MiB and the default
    /// command line, its console a [`ConsoleStream`].
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmBuilder {
            config: VmConfig {
                boot_source: Some(BootSourceConfig {
                    kernel_image_path: kernel.into(),
                    initrd_path: None,
                    boot_args: None,
                }),
                machine_config: MachineConfig::default(),
                drives: Vec::new(),
                net: Vec::new(),
                mmds_config: None,
                entropy: None,
                vsock: None,
            },
            console: ConsoleChoice::Stream { tee: None },
            helper: None,
            mmds: Mmds::default(),
            restore: None,
            resume: true,
        }
    }

    /// The VM of the snapshot in directory `dir` (its `state` and `memory` files, as
    /// [`Instance::snapshot`] and `fennec ctl snapshot` write them), to restore rather than
    /// boot. Its configuration is the snapshot's; change a network interface's TAP with
    /// [`VmBuilder::net_tap`] before [`VmBuilder::build`]. It starts running unless
    /// [`VmBuilder::paused`].
    pub fn restore(dir: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let (state_path, memory_path) = crate::snapshot::files_in(dir.as_ref());
        let state = crate::snapshot::load(&state_path)?;
        Ok(VmBuilder {
            config: state.config.clone(),
            console: ConsoleChoice::Stream { tee: None },
            helper: None,
            mmds: Mmds::default(),
            restore: Some((Box::new(state), memory_path)),
            resume: true,
        })
    }

    /// The VM of a snapshot's `state` (already loaded, perhaps changed: a checkpoint's drives
    /// on their clones) with its memory file `memory`, to restore rather than boot.
    pub fn from_state(state: crate::snapshot::SnapshotState, memory: PathBuf) -> Self {
        VmBuilder {
            config: state.config.clone(),
            console: ConsoleChoice::Stream { tee: None },
            helper: None,
            mmds: Mmds::default(),
            restore: Some((Box::new(state), memory)),
            resume: true,
        }
    }

    /// A restored VM starts with its vCPUs parked; `resume` runs it.
    pub fn paused(mut self) -> Self {
        self.resume = false;
        self
    }

    /// Puts network interface `id` on TAP `tap` (a restored clone's own network).
    pub fn net_tap(self, id: &str, tap: &str) -> Self {
        self.net_host(id, NetHost::Tap(tap))
    }

    /// Connects network interface `id` to `host` instead: a TAP, a bridge, user mode (a
    /// restored clone's own network, whatever the snapshot's was on).
    pub fn net_host(mut self, id: &str, host: NetHost<'_>) -> Self {
        if let Some(net) = self.config.net.iter_mut().find(|n| n.id == id) {
            // The guest keeps the MAC it has (one derived from the old TAP's name too).
            net.mac = Some(net.guest_mac());
            net.set_host(host);
        }
        self
    }

    /// A VM from a whole configuration (as the CLI's `--config-file` or the control socket
    /// make them).
    pub fn from_config(config: VmConfig) -> Self {
        VmBuilder {
            config,
            console: ConsoleChoice::Stream { tee: None },
            helper: None,
            mmds: Mmds::default(),
            restore: None,
            resume: true,
        }
    }

    /// Loads `path` as the initramfs (with the kernel the builder was made with).
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        if let Some(boot) = self.config.boot_source.as_mut() {
            boot.initrd_path = Some(path.into());
        }
        self
    }

    /// Sets the kernel command line (fennec still adds `console=ttyS0` and `reboot=k` unless
    /// it names its own).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        if let Some(boot) = self.config.boot_source.as_mut() {
            boot.boot_args = Some(cmdline.into());
        }
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
        self.drive(BlockConfig::path(id, path))
    }

    /// Adds a drive that gets a fresh clone of template `template` from the store `store`
    /// (see [`crate::storage`]); the clone is destroyed when the VM ends.
    pub fn disk_from_template(self, template: &str, store: &str) -> Self {
        let id = format!("disk{}", self.config.drives.len());
        self.drive(BlockConfig {
            id,
            source: DriveSource::Template(TemplateDrive {
                template: template.to_string(),
                store: Some(store.to_string()),
                vm_name: None,
            }),
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
            ..NetConfig::default()
        })
    }

    /// Adds a virtio-net interface on a TAP that fennec makes on bridge `bridge`, named `net0`,
    /// `net1`, ...
    pub fn net_bridge(self, bridge: &str) -> Self {
        let id = format!("net{}", self.config.net.len());
        self.net_config(NetConfig {
            id,
            bridge: Some(bridge.to_string()),
            ..NetConfig::default()
        })
    }

    /// Adds a virtio-net interface on user-mode networking (passt), named `net0`, `net1`, ...
    pub fn net_user(self, user: UserNetConfig) -> Self {
        let id = format!("net{}", self.config.net.len());
        self.net_config(NetConfig {
            id,
            user: Some(user),
            ..NetConfig::default()
        })
    }

    /// Adds a network interface configured in full.
    pub fn net_config(mut self, net: NetConfig) -> Self {
        self.config.net.push(net);
        self
    }

    /// Gives the guest a vsock device with context ID `guest_cid`: host programs reach its
    /// port P by connecting to `uds_path` and writing `CONNECT P\n`, and its connections to
    /// host port P reach `<uds_path>_P`. A restored VM's device listens at a new `uds_path`
    /// with [`VmBuilder::vsock_uds`].
    pub fn vsock(mut self, guest_cid: u64, uds_path: impl Into<PathBuf>) -> Self {
        self.config.vsock = Some(crate::config::VsockConfig {
            guest_cid,
            uds_path: uds_path.into(),
            vsock_id: None,
        });
        self
    }

    /// The vsock device's host socket, if the VM has one.
    pub fn vsock_uds_path(&self) -> Option<&std::path::Path> {
        self.config.vsock.as_ref().map(|v| v.uds_path.as_path())
    }

    /// Moves the vsock device's host socket to `uds_path` (a restored clone's own; as
    /// Firecracker's `vsock_override`). Nothing if the VM has no vsock device.
    pub fn vsock_uds(mut self, uds_path: impl Into<PathBuf>) -> Self {
        if let Some(v) = self.config.vsock.as_mut() {
            v.uds_path = uds_path.into();
        }
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

    /// Destroys the ephemeral template clones in `helper`'s process when the VM ends, so the
    /// thread that drops the [`Instance`] may run under a syscall filter without `execve` (the
    /// CLI's main thread does).
    pub fn storage_helper(mut self, helper: Arc<StorageHelper>) -> Self {
        self.helper = Some(helper);
        self
    }

    /// The metadata the guest's metadata service (`mmds_config`) answers from: keep a clone
    /// to change it while the VM runs. Without one the service starts with an empty document.
    pub fn mmds(mut self, mmds: Mmds) -> Self {
        self.mmds = mmds;
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Clones the template drives, builds the VM and starts it.
    pub fn start(self) -> Result<Instance, StartError> {
        self.build()?.start()
    }

    /// Clones the template drives and builds the VM, without starting it: whatever can fail
    /// because of the configuration fails here, where [`Vm::new`] (or [`Vm::restore`]) checks
    /// it. (The CLI puts the terminal in raw mode between the two.)
    pub fn build(self) -> Result<BuiltVm, StartError> {
        let mut config = self.config;
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
        if let Some((mut state, memory)) = self.restore {
            state.config = config;
            let helper = self.helper;
            return BuiltVm::restore(&state, &memory, console, &self.mmds, self.resume).map(
                |mut built| {
                    built.console = stream;
                    if let Some(helper) = helper {
                        built.disks.set_helper(helper);
                    }
                    built
                },
            );
        }
        // The clones are destroyed again if the VM cannot be built.
        let mut disks = storage::provision(&mut config)?;
        if let Some(helper) = self.helper {
            disks.set_helper(helper);
        }
        let vm = Vm::with_mmds(&config, console, &self.mmds)?;
        Ok(BuiltVm {
            vm,
            console: stream,
            config,
            disks,
        })
    }
}

/// A VM built by [`VmBuilder::build`], ready to start.
pub struct BuiltVm {
    vm: Vm,
    console: Option<ConsoleStream>,
    config: VmConfig,
    disks: Provisioned,
}

impl BuiltVm {
    /// The VM a snapshot describes, its guest memory mapped from `mem_file`, the console
    /// `console` and its metadata service answering from `mmds`; its vCPUs start parked
    /// unless `resume`. The snapshot's configuration may have been changed first (new TAPs,
    /// other images).
    pub fn restore(
        state: &crate::snapshot::SnapshotState,
        mem_file: &std::path::Path,
        console: Console,
        mmds: &Mmds,
        resume: bool,
    ) -> Result<BuiltVm, StartError> {
        let vm = Vm::restore(state, mem_file, console, mmds, resume)?;
        Ok(BuiltVm {
            vm,
            console: None,
            config: state.config.clone(),
            disks: Provisioned::default(),
        })
    }

    /// Has `helper` act for the VM: it is told the VM's disks when the VM starts (see
    /// [`crate::storage::helper`]), and destroys the ephemeral ones when it ends.
    pub fn set_storage_helper(&mut self, helper: Arc<StorageHelper>) {
        self.disks.set_helper(helper);
    }

    /// The configuration the VM is built with (template drives with their clones' paths).
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The stores the VM's template drives come from.
    pub fn stores(&self) -> Vec<&dyn storage::DiskStore> {
        let mut stores: Vec<&dyn storage::DiskStore> = Vec::new();
        for d in &self.config.drives {
            if let Some((store, _)) = self.disks.disk_of(&d.id) {
                if !stores.iter().any(|s| s.spec() == store.spec()) {
                    stores.push(store);
                }
            }
        }
        stores
    }

    /// Starts the VM with its guest-facing threads (the vCPUs and the VMM's event loop)
    /// confined to `access` when given (Landlock: [`crate::sandbox`]), and puts the calling
    /// thread under the api-service syscall filter, since from here on it drives a VM a guest
    /// runs in. The calling thread itself stays outside the Landlock domain: it acts for the
    /// operator, and opens what the operator's requests name. A VM that cannot be confined as
    /// asked does not run.
    pub fn confine_and_start(
        self,
        access: Option<&crate::sandbox::FileAccess>,
    ) -> Result<Instance, StartError> {
        let instance = match access {
            // A launcher thread restricts itself, then starts the VM's threads, which inherit
            // its domain; it ends there.
            Some(access) => std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .name("fennec-launch".into())
                    .spawn_scoped(scope, move || {
                        crate::sandbox::restrict_thread(access).map_err(Error::from)?;
                        crate::sandbox::selftest("launcher");
                        self.start()
                    })
                    .map_err(|source| Error::Start {
                        what: "launcher thread",
                        source,
                    })?
                    .join()
                    .map_err(|_| Error::ControllerPanicked)?
            })?,
            None => self.start()?,
        };
        // Dropping the instance on failure stops the VM.
        crate::seccomp::install(crate::seccomp::Role::ApiService).map_err(Error::from)?;
        Ok(instance)
    }

    /// Starts the VM.
    pub fn start(self) -> Result<Instance, StartError> {
        // Before the guest's first instruction: from here on, the storage helper acts only on
        // this VM's disks.
        self.disks.pin().map_err(StartError::StorageHelper)?;
        let handle = self.vm.start()?;
        Ok(Instance {
            handle,
            console: self.console,
            config: self.config,
            disks: self.disks,
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
    /// Writes a snapshot of the paused VM into directory `dir` (made if missing): its `state`
    /// and `memory` files, which [`VmBuilder::restore`] restores. Pause it first.
    pub fn snapshot(
        &self,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<crate::snapshot::Saved, Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| crate::snapshot::SnapshotError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let (state, memory) = crate::snapshot::files_in(dir);
        crate::snapshot::save(&self.handle, &self.config, &state, &memory)
    }

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

    /// Whether drive `id`'s disk is destroyed when the VM ends (a template drive without
    /// `vm_name`).
    pub fn is_ephemeral(&self, id: &str) -> bool {
        self.disks.is_ephemeral(id)
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
