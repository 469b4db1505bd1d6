//! The VMM side of the control socket: the configuration being built, the VM once started, and
//! the loop that serves API calls until the guest ends.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};

mod actions;
mod answers;
mod extras;

use actions::Action;
pub use answers::{exit_json, one_line};
use answers::{not_after_start, not_before_start, vm_error};

pub use super::sinks::{open_sink, LoggerHook, MetricsFormat, MetricsSink};

use super::{ApiError, ApiRequest, ApiResponse, Event};
use crate::config::{ConfigError, DriveSource, VmConfig};
use crate::mmds::Mmds;
use crate::sandbox::FileAccess;
use crate::seccomp::Role;
use crate::storage::helper::StorageHelper;
use crate::threads;
use crate::vmm::VmState;
use crate::{Console, ExitReason, VmHandle};

/// Makes the console for a VM; called at every start attempt, since a failed start consumes
/// the console it was given.
pub type ConsoleFactory = Box<dyn FnMut() -> std::io::Result<Console> + Send>;

/// The VM behind a control socket: its configuration until `InstanceStart`, then the running
/// VM.
pub struct VmService {
    id: String,
    config: VmConfig,
    console: ConsoleFactory,
    /// The started VM, which owns the disks cloned for template drives (destroyed after it).
    instance: Option<crate::Instance>,
    /// Set when the service is done: the guest ended, or the VMM was stopped before a start.
    finished: Option<ExitReason>,
    events: mpsc::Sender<Event>,
    /// Where live snapshots run, when not in this process.
    helper: Option<Arc<StorageHelper>>,
    /// Whether the VM's guest-facing threads are confined once it is built.
    confined: bool,
    /// Each store's checkpoints directory, by store, found when the VM was built (the running
    /// VMM runs no store command).
    checkpoint_dirs: Vec<(String, PathBuf)>,
    /// Where the VM's metrics go, a JSON line at a time (Firecracker's `--metrics-path`).
    metrics: Option<MetricsSink>,
    /// The shape of the lines of a sink `PUT /metrics` names.
    metrics_format: MetricsFormat,
    /// Reconfigures the process's logger (`PUT /logger`), when the process has such a logger.
    logger: Option<LoggerHook>,
    /// The thread that runs pauses, resumes and live snapshots, in order, once the VM runs.
    actions: Option<mpsc::Sender<(Action, Reply)>>,
    /// The guest's metadata (`/mmds`), shared with the VM's metadata service.
    mmds: Mmds,
}

/// Where an answer goes.
type Reply = mpsc::Sender<Result<ApiResponse, ApiError>>;

impl VmService {
    /// A service for instance `id` with `config` as the starting configuration (complete or
    /// not), making consoles with `console`; `events` is where it reports the guest's end.
    pub fn new(
        id: String,
        config: VmConfig,
        console: ConsoleFactory,
        events: mpsc::Sender<Event>,
    ) -> Self {
        VmService {
            id,
            config,
            console,
            instance: None,
            finished: None,
            events,
            helper: None,
            confined: false,
            checkpoint_dirs: Vec::new(),
            metrics: None,
            metrics_format: MetricsFormat::Fennec,
            logger: None,
            actions: None,
            mmds: Mmds::default(),
        }
    }

    /// Serves `PUT /logger` with `hook` (fennec as `firecracker` has a logger it can change).
    pub fn with_logger(mut self, hook: LoggerHook) -> Self {
        self.logger = Some(hook);
        self
    }

    /// Serves `/mmds` from `mmds` (a `--metadata` file's document, with its size limit).
    pub fn with_mmds(mut self, mmds: Mmds) -> Self {
        self.mmds = mmds;
        self
    }

    /// Writes the VM's metrics to `sink`: a line once the VM runs, and one when it ends.
    pub fn with_metrics(mut self, sink: MetricsSink) -> Self {
        self.metrics = Some(sink);
        self
    }

    /// Gives a metrics sink that `PUT /metrics` names lines of `format`.
    pub fn with_metrics_format(mut self, format: MetricsFormat) -> Self {
        self.metrics_format = format;
        self
    }

    /// Writes a metrics line now, if there is a sink and a VM.
    pub fn flush_metrics(&mut self) {
        if let (Some(sink), Some(vm)) = (self.metrics.as_mut(), self.instance.as_ref()) {
            sink.write(Some(vm.handle()));
        }
    }

    /// Confines the VM's guest-facing threads once it is built (Landlock, see
    /// [`crate::sandbox`]); the service's own threads open what its clients name.
    pub fn confined(mut self) -> Self {
        self.confined = true;
        self
    }

    /// Runs live snapshots in `helper`'s process rather than this one, so the VMM executes
    /// no program once its VM runs (see [`crate::storage::helper`]).
    pub fn with_storage_helper(mut self, helper: StorageHelper) -> Self {
        self.helper = Some(Arc::new(helper));
        self
    }

    /// Hands `request` to the action thread when it is a pause, a resume or a live snapshot of
    /// a running VM; gives it back otherwise.
    fn queue_action(&mut self, request: ApiRequest, reply: &Reply) -> Option<ApiRequest> {
        let queued = matches!(
            request,
            ApiRequest::Pause
                | ApiRequest::Resume
                | ApiRequest::SnapshotDrive { .. }
                | ApiRequest::CreateSnapshot { .. }
                | ApiRequest::Checkpoint(_)
        );
        if !queued {
            return Some(request);
        }
        // Checked in the order serve_request checks them: a started VM first.
        let action = self.running().cloned().and_then(|handle| {
            let action = match request {
                ApiRequest::SnapshotDrive { id, name } => self.snapshot_action(id, &name)?,
                ApiRequest::CreateSnapshot {
                    snapshot_path,
                    mem_file_path,
                } => Action::SaveVm {
                    state: snapshot_path,
                    memory: mem_file_path,
                    config: Box::new(self.config.clone()),
                },
                ApiRequest::Checkpoint(name) => self.checkpoint_action(name)?,
                ApiRequest::Pause => Action::Pause,
                _ => Action::Resume,
            };
            Ok((handle, action))
        });
        let sent = action.and_then(|(handle, action)| {
            self.action_queue(handle)?
                .send((action, reply.clone()))
                .map_err(|_| ApiError::bad_request("The VM has ended"))
        });
        if let Err(e) = sent {
            let _ = reply.send(Err(e));
        }
        None
    }

    /// The action thread's queue, started with the first action.
    fn action_queue(
        &mut self,
        handle: VmHandle,
    ) -> Result<&mpsc::Sender<(Action, Reply)>, ApiError> {
        let queue = match self.actions.take() {
            Some(queue) => queue,
            None => {
                let (tx, rx) = mpsc::channel::<(Action, Reply)>();
                let helper = self.helper.clone();
                threads::spawn(Role::ApiService, "api-actions", move || {
                    for (action, reply) in rx {
                        let _ = reply.send(action.run(&handle, helper.as_deref()));
                    }
                })
                .map_err(|e| {
                    ApiError::bad_request(format!("Cannot start the action thread: {e}"))
                })?;
                tx
            }
        };
        Ok(self.actions.insert(queue))
    }

    /// Checks a live snapshot of drive `id` can be taken, and names it.
    fn snapshot_action(&self, id: String, name: &str) -> Result<Action, ApiError> {
        if !self.config.drives.iter().any(|d| d.id == id) {
            return Err(ApiError::bad_request(format!("No drive has the ID {id:?}")));
        }
        let (store, disk) = self
            .instance
            .as_ref()
            .and_then(|vm| vm.template_disk(&id))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Drive {id:?} is a plain image file: only drives cloned from a \
                     template (\"template\" in PUT /drives) can be snapshotted"
                ))
            })?;
        let snap = crate::storage::SnapRef::new(disk.clone(), name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Action::Snapshot {
            id,
            store: store.spec(),
            snap,
        })
    }

    /// The running VM, once started.
    pub fn handle(&self) -> Option<&VmHandle> {
        self.instance.as_ref().map(crate::Instance::handle)
    }

    /// Why the service is done, once it is.
    pub fn finished(&self) -> Option<&ExitReason> {
        self.finished.as_ref()
    }

    /// Builds and starts the VM from the configuration. The calling thread then installs the
    /// api-service syscall filter ([`crate::seccomp`]): it serves the running VM's requests.
    pub fn start(&mut self) -> Result<(), ApiError> {
        if self.instance.is_some() {
            return Err(ApiError::bad_request("The VM is already started"));
        }
        if self.config.boot_source.is_none() {
            return Err(ApiError::bad_request(
                "Cannot start the VM: no boot source; PUT /boot-source first",
            ));
        }
        let mut builder =
            crate::VmBuilder::from_config(self.config.clone()).mmds(self.mmds.clone());
        if let Some(helper) = &self.helper {
            builder = builder.storage_helper(helper.clone());
        }
        self.launch("start", |console| builder.console(console).build())
    }

    /// Builds a VM with `build` (given the console), confines this thread and the VM's, and
    /// starts it; `what` names the step in errors ("start", "load the snapshot").
    fn launch(
        &mut self,
        what: &str,
        build: impl FnOnce(Console) -> Result<crate::BuiltVm, crate::StartError>,
    ) -> Result<(), ApiError> {
        let console = (self.console)()
            .map_err(|e| ApiError::bad_request(format!("Cannot set up the console: {e}")))?;
        let cannot = |e: &dyn std::error::Error| {
            ApiError::bad_request(format!("Cannot {what} the VM: {}", one_line(e)))
        };
        let mut built = build(console).map_err(|e| cannot(&e))?;
        // Pinned to this VM's disks (none, for a restored VM) when it starts.
        if let Some(helper) = &self.helper {
            built.set_storage_helper(helper.clone());
        }
        // Checkpoints write beside the VM's disks, in their stores.
        self.checkpoint_dirs = built
            .stores()
            .into_iter()
            .filter_map(|s| match s.checkpoints_dir() {
                Ok(dir) => Some((s.spec(), dir)),
                Err(e) => {
                    log::warn!("No checkpoints in {}: {e}", s.spec());
                    None
                }
            })
            .collect();
        // The VM's guest-facing threads open nothing else from here.
        let access = self.confined.then(|| FileAccess::for_vm(built.config()));
        let instance = built
            .confine_and_start(access.as_ref())
            .map_err(|e| cannot(&e))?;
        let handle = instance.handle().clone();
        let watcher = handle.clone();
        let events = self.events.clone();
        let spawned = threads::spawn(Role::ApiService, "api-exit", move || {
            let _ = watcher.wait();
            let _ = events.send(Event::Exited);
        });
        if let Err(e) = spawned {
            // Dropping the instance stops the VM.
            return Err(ApiError::bad_request(format!("Cannot start the VM: {e}")));
        }
        log::info!("VM {:?} started", self.id);
        self.config = instance.config().clone();
        self.instance = Some(instance);
        self.flush_metrics();
        Ok(())
    }

    fn state_name(&self) -> &'static str {
        match self.handle().map(VmHandle::state) {
            None => "Not started",
            Some(VmState::Running) => "Running",
            Some(VmState::Paused) => "Paused",
            Some(VmState::Exited(_)) => "Exited",
        }
    }

    /// Applies a pre-boot change to a copy of the configuration and keeps it if the whole still
    /// makes sense (a missing kernel aside: it may come later).
    fn reconfigure(&mut self, change: impl FnOnce(&mut VmConfig)) -> Result<ApiResponse, ApiError> {
        if self.instance.is_some() {
            return Err(not_after_start());
        }
        let mut next = self.config.clone();
        change(&mut next);
        match next.validate() {
            Ok(()) | Err(ConfigError::NoKernel) => {
                self.config = next;
                Ok(ApiResponse::Empty)
            }
            Err(e) => Err(ApiError::bad_request(e.to_string())),
        }
    }

    fn running(&self) -> Result<&VmHandle, ApiError> {
        self.handle().ok_or_else(not_before_start)
    }

    /// Firecracker's drive PATCH on a running VM: a new image, new rate limits, or both.
    fn patch_drive(
        &mut self,
        id: String,
        path: Option<PathBuf>,
        rate_limiter: Option<crate::config::RateLimiterConfig>,
    ) -> Result<ApiResponse, ApiError> {
        let handle = self.running()?.clone();
        if let Some(path) = path {
            handle.replace_drive_image(&id, &path).map_err(vm_error)?;
            if let Some(d) = self.config.drives.iter_mut().find(|d| d.id == id) {
                d.source = DriveSource::Path(path);
            }
        }
        if let Some(limiter) = rate_limiter {
            let (bandwidth, ops) = limiter.buckets();
            handle
                .set_drive_rate_limits(&id, bandwidth, ops)
                .map_err(vm_error)?;
            if let Some(d) = self.config.drives.iter_mut().find(|d| d.id == id) {
                d.rate_limiter = Some(limiter);
            }
        }
        Ok(ApiResponse::Empty)
    }

    /// Serves one request.
    pub fn serve_request(&mut self, request: ApiRequest) -> Result<ApiResponse, ApiError> {
        match request {
            ApiRequest::Mmds(request) => self.serve_mmds(request),
            ApiRequest::LoadSnapshot(load) => self.load_snapshot(*load),
            // Queued as an action (`queue_action`); here only if the VM never started.
            ApiRequest::CreateSnapshot { .. } | ApiRequest::Checkpoint(_) => {
                Err(not_before_start())
            }
            // As Firecracker: the logger and the metrics sink are set before the VM starts.
            ApiRequest::PutLogger(_) | ApiRequest::PutMetrics(_) if self.instance.is_some() => {
                Err(not_after_start())
            }
            ApiRequest::PutLogger(config) => match &self.logger {
                None => Err(ApiError::bad_request(
                    "This fennec logs to stderr (fennec run -v, RUST_LOG); PUT /logger works \
                     when fennec runs as firecracker",
                )),
                Some(hook) => hook(&config)
                    .map(|()| ApiResponse::Empty)
                    .map_err(ApiError::bad_request),
            },
            ApiRequest::PutMetrics(path) => {
                if self.metrics.is_some() {
                    return Err(ApiError::bad_request(
                        "Reinitialization of metrics not allowed: they already go to a file",
                    ));
                }
                let file = open_sink(&path).map_err(|e| {
                    ApiError::bad_request(format!(
                        "Cannot open the metrics file {}: {e}",
                        path.display()
                    ))
                })?;
                self.metrics = Some(MetricsSink::with_format(file, self.metrics_format));
                Ok(ApiResponse::Empty)
            }
            ApiRequest::FlushMetrics => match self.metrics.as_mut() {
                None => Err(ApiError::bad_request(
                    "No metrics file to flush: PUT /metrics first (or fennec run --metrics-path)",
                )),
                Some(sink) => {
                    sink.write(self.instance.as_ref().map(|vm| vm.handle()));
                    Ok(ApiResponse::Empty)
                }
            },
            ApiRequest::GetVersion => Ok(ApiResponse::Json(json!({
                "firecracker_version": super::FIRECRACKER_VERSION,
                "fennec_version": env!("CARGO_PKG_VERSION"),
            }))),
            ApiRequest::GetInstanceInfo => Ok(ApiResponse::Json(json!({
                "app_name": "fennec",
                "id": self.id,
                "state": self.state_name(),
                "vmm_version": env!("CARGO_PKG_VERSION"),
            }))),
            ApiRequest::PutBootSource(boot) => {
                crate::vmm::open("kernel", &boot.kernel_image_path).map_err(vm_error)?;
                if let Some(initrd) = &boot.initrd_path {
                    crate::vmm::open("initrd", initrd).map_err(vm_error)?;
                }
                self.reconfigure(|c| c.boot_source = Some(boot))
            }
            ApiRequest::GetMachineConfig => serde_json::to_value(&self.config.machine_config)
                .map(ApiResponse::Json)
                .map_err(|e| ApiError::bad_request(e.to_string())),
            ApiRequest::PutMachineConfig(machine) => {
                self.reconfigure(|c| c.machine_config = machine)
            }
            ApiRequest::PatchMachineConfig(patch) => {
                if self.instance.is_some() {
                    return Err(not_after_start());
                }
                let machine =
                    crate::config::json::machine_config_patch(patch, &self.config.machine_config)?;
                self.reconfigure(|c| c.machine_config = machine)
            }
            ApiRequest::PutDevice(device) => {
                if self.instance.is_some() {
                    return Err(not_after_start());
                }
                device
                    .check_host()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.reconfigure(|c| c.put_device(device))
            }
            ApiRequest::PatchDrive {
                id,
                path,
                rate_limiter,
            } => self.patch_drive(id, path, rate_limiter),
            ApiRequest::PatchNetworkInterface {
                id,
                rx_rate_limiter,
                tx_rate_limiter,
            } => {
                let buckets = |l: &Option<crate::config::RateLimiterConfig>| {
                    l.as_ref().map(crate::config::RateLimiterConfig::buckets)
                };
                self.running()?
                    .set_net_rate_limits(&id, buckets(&rx_rate_limiter), buckets(&tx_rate_limiter))
                    .map_err(vm_error)?;
                if let Some(n) = self.config.net.iter_mut().find(|n| n.id == id) {
                    n.rx_rate_limiter = rx_rate_limiter.or(n.rx_rate_limiter.take());
                    n.tx_rate_limiter = tx_rate_limiter.or(n.tx_rate_limiter.take());
                }
                Ok(ApiResponse::Empty)
            }
            ApiRequest::SnapshotDrive { id, name } => {
                let handle = self.running()?.clone();
                let helper = self.helper.clone();
                self.snapshot_action(id, &name)?
                    .run(&handle, helper.as_deref())
            }
            ApiRequest::InstanceStart => self.start().map(|()| ApiResponse::Empty),
            ApiRequest::SendCtrlAltDel => self
                .running()?
                .send_ctrl_alt_del()
                .map(|()| ApiResponse::Empty)
                .map_err(vm_error),
            ApiRequest::Pause => Action::Pause.run(self.running()?, None),
            ApiRequest::Resume => Action::Resume.run(self.running()?, None),
            ApiRequest::Stop => {
                let reason = match self.handle() {
                    Some(handle) => {
                        handle.stop().map_err(vm_error)?;
                        handle.wait().map_err(vm_error)?
                    }
                    None => ExitReason::Stopped,
                };
                self.finished = Some(reason.clone());
                Ok(ApiResponse::Json(json!({ "exit": exit_json(&reason) })))
            }
            ApiRequest::Shutdown { timeout } => {
                let (reason, forced) = self.running()?.shutdown(timeout).map_err(vm_error)?;
                self.finished = Some(reason.clone());
                Ok(ApiResponse::Json(
                    json!({ "exit": exit_json(&reason), "forced": forced }),
                ))
            }
            ApiRequest::GetVmConfig => {
                let mut value = serde_json::to_value(&self.config)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                if let Some(map) = value.as_object_mut() {
                    map.entry("drives").or_insert_with(|| json!([]));
                    map.entry("network-interfaces").or_insert_with(|| json!([]));
                }
                Ok(ApiResponse::Json(value))
            }
            ApiRequest::GetStatus => Ok(ApiResponse::Json(self.status())),
            ApiRequest::GetMetrics => {
                let metrics = self.running()?.metrics();
                serde_json::to_value(metrics)
                    .map(ApiResponse::Json)
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            }
        }
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "id": self.id,
            "state": self.state_name(),
            "pid": std::process::id(),
            "vmm_version": env!("CARGO_PKG_VERSION"),
            "vcpu_count": self.config.machine_config.vcpu_count,
            "mem_size_mib": self.config.machine_config.mem_size_mib,
            "drives": self.config.drives.iter().map(|d| &d.id).collect::<Vec<_>>(),
            "network_interfaces": self.config.net.iter().map(|n| &n.id).collect::<Vec<_>>(),
        });
        if let (Some(handle), Some(map)) = (self.handle(), status.as_object_mut()) {
            map.insert(
                "uptime_ms".into(),
                (handle.uptime().as_millis() as u64).into(),
            );
            if let VmState::Exited(reason) = handle.state() {
                map.insert("exit".into(), exit_json(&reason));
            }
        }
        status
    }
}

/// Serves `events` until the guest ends or the VMM is stopped; returns why, or `None` when
/// the process was told to stop before any VM started. A configuration that is complete at
/// the outset (`boot_now`) starts at once.
pub fn serve(
    mut service: VmService,
    events: mpsc::Receiver<Event>,
    boot_now: bool,
) -> Result<Option<ExitReason>, ApiError> {
    if boot_now {
        service.start()?;
    }
    // Actions that take long (a Shutdown waits for the guest) run on threads of their own, so
    // every other request, Stop and signals included, is served meanwhile.
    let mut actions = Vec::new();
    let result = serve_events(&mut service, &events, &mut actions);
    for action in actions {
        // Each ends once the guest has: it was waiting for exactly that.
        let _ = action.join();
    }
    service.flush_metrics();
    result
}

fn serve_events(
    service: &mut VmService,
    events: &mpsc::Receiver<Event>,
    actions: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<Option<ExitReason>, ApiError> {
    while let Ok(event) = events.recv() {
        match event {
            Event::Call(call) => {
                if let (ApiRequest::Shutdown { timeout }, Some(handle)) =
                    (&call.request, service.handle())
                {
                    let (timeout, handle, reply) = (*timeout, handle.clone(), call.reply.clone());
                    let spawned = threads::spawn(Role::ApiService, "api-shutdown", move || {
                        let answer = handle
                            .shutdown(timeout)
                            .map(|(reason, forced)| {
                                ApiResponse::Json(
                                    json!({ "exit": exit_json(&reason), "forced": forced }),
                                )
                            })
                            .map_err(vm_error);
                        let _ = reply.send(answer);
                    });
                    match spawned {
                        Ok(action) => actions.push(action),
                        Err(e) => {
                            let why = format!("Cannot start the shutdown: {e}");
                            let _ = call.reply.send(Err(ApiError::bad_request(why)));
                        }
                    }
                    continue;
                }
                let Some(request) = service.queue_action(call.request, &call.reply) else {
                    continue;
                };
                let answer = service.serve_request(request);
                let _ = call.reply.send(answer);
                if let Some(reason) = service.finished() {
                    return Ok(Some(reason.clone()));
                }
            }
            Event::Exited => {
                if let Some(handle) = service.handle() {
                    if let Ok(reason) = handle.wait() {
                        return Ok(Some(reason));
                    }
                }
            }
            Event::Signal(signo) => match service.handle() {
                Some(handle) => on_signal(handle, signo),
                None if signo == libc::SIGUSR1 => {
                    log::warn!("Received SIGUSR1 before any VM started: nothing to describe")
                }
                None => {
                    log::info!("Received signal {signo} before any VM started; exiting");
                    return Ok(None);
                }
            },
        }
    }
    Ok(service.finished().cloned())
}

/// What a signal does to a running VM: SIGUSR1 logs where it stands, the others (SIGTERM,
/// SIGINT, SIGHUP) stop it.
pub fn on_signal(handle: &VmHandle, signo: i32) {
    if signo == libc::SIGUSR1 {
        log_state(handle);
        return;
    }
    log::info!("Received signal {signo}, stopping the VM");
    if let Err(e) = handle.stop() {
        log::error!("{e}");
    }
}

/// Logs [`VmHandle::describe`] (asked for with SIGUSR1), at warning level so it shows without
/// `-v`.
fn log_state(handle: &VmHandle) {
    match handle.describe() {
        Ok(text) => log::warn!("VM state (SIGUSR1):\n{text}"),
        Err(e) => log::warn!("Cannot describe the VM: {e}"),
    }
}

/// How long the process waits for answers in flight before it exits.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
