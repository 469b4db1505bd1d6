//! The control socket's requests for what Firecracker's guests get besides their devices: the
//! metadata service (`/mmds`), and loading a snapshot (`/snapshot/load`; creating one is an
//! action of the running VM).

use super::answers::{not_after_start, not_before_start, one_line};
use super::VmService;
use crate::api::{ApiError, ApiResponse, LoadSnapshot, MmdsRequest};

impl VmService {
    /// Serves one `/mmds` request. The document can change at any time, and a running guest
    /// sees the change on its next request; the configuration is pre-boot only.
    pub(super) fn serve_mmds(&mut self, request: MmdsRequest) -> Result<ApiResponse, ApiError> {
        let refused = |e: crate::mmds::MmdsError| ApiError::bad_request(e.to_string());
        match request {
            MmdsRequest::Put(data) => self.mmds.put(data).map_err(refused)?,
            MmdsRequest::Patch(patch) => self.mmds.patch(patch).map_err(refused)?,
            MmdsRequest::Get => return Ok(ApiResponse::Json(self.mmds.get())),
            MmdsRequest::PutConfig(config) => {
                if self.instance.is_some() {
                    return Err(not_after_start());
                }
                config
                    .validate(self.config.net.iter().map(|n| n.id.as_str()))
                    .map_err(refused)?;
                log::info!(
                    "Metadata service {:?} at {} on {}",
                    config.version,
                    config.address(),
                    config.network_interfaces.join(", ")
                );
                self.config.mmds_config = Some(config);
            }
        }
        Ok(ApiResponse::Empty)
    }

    /// `PUT /snapshot/load`: the VM of a snapshot instead of one configured here, running or
    /// paused as asked. Only before anything is configured, as in Firecracker.
    pub(super) fn load_snapshot(&mut self, load: LoadSnapshot) -> Result<ApiResponse, ApiError> {
        let started = std::time::Instant::now();
        if self.instance.is_some() {
            return Err(not_after_start());
        }
        let c = &self.config;
        if c.boot_source.is_some() || !c.drives.is_empty() || !c.net.is_empty() {
            return Err(ApiError::bad_request(
                "Loading a snapshot is not allowed after configuring the VM (boot source, \
                 drives or network interfaces): the snapshot brings its own",
            ));
        }
        let bad = |e: &dyn std::error::Error| ApiError::bad_request(one_line(e));
        let mut state = crate::snapshot::load(&load.snapshot_path).map_err(|e| bad(&e))?;
        for over in &load.network_overrides {
            let iface = &over.iface_id;
            let net = state
                .config
                .net
                .iter_mut()
                .find(|n| n.id == *iface)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "network_overrides names interface {iface:?}, which the snapshot's VM \
                         does not have"
                    ))
                })?;
            // The MAC the guest knows stays, unless asked otherwise: a MAC derived from the
            // old TAP's name is pinned before the TAP changes.
            net.mac = Some(net.guest_mac());
            net.set_host(over.host.host());
            if let Some(mac) = over.guest_mac {
                net.mac = Some(mac);
            }
        }
        if let Some(uds_path) = &load.vsock_uds_path {
            let vsock = state.config.vsock.as_mut().ok_or_else(|| {
                ApiError::bad_request("vsock_override: the snapshot's VM has no vsock device")
            })?;
            vsock.uds_path = uds_path.clone();
        }
        for (id, path) in &load.drive_overrides {
            let drive = state
                .config
                .drives
                .iter_mut()
                .find(|d| d.id == *id)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "drive_overrides names drive {id:?}, which the snapshot's VM does not have"
                    ))
                })?;
            drive.source = crate::config::DriveSource::Path(path.clone());
        }
        state.config.validate().map_err(|e| bad(&e))?;
        let (mem, mmds, resume) = (load.mem_file_path, self.mmds.clone(), load.resume_vm);
        let restoring = std::time::Instant::now();
        self.launch("load the snapshot into", |console| {
            crate::BuiltVm::restore(&state, &mem, console, &mmds, resume)
        })?;
        crate::api::sinks::record_latency(
            crate::api::sinks::Timed::LoadSnapshot,
            started.elapsed(),
            restoring.elapsed(),
        );
        log::info!(
            "VM restored from {} ({})",
            load.snapshot_path.display(),
            if resume { "running" } else { "paused" }
        );
        Ok(ApiResponse::Empty)
    }

    /// The action of `PUT /checkpoint NAME`: every drive must be a store disk that outlives
    /// the VM (a template drive with a `vm_name`), all in one store.
    pub(super) fn checkpoint_action(&self, name: String) -> Result<super::Action, ApiError> {
        let instance = self.instance.as_ref().ok_or_else(not_before_start)?;
        let mut disks = Vec::new();
        let mut store: Option<String> = None;
        for d in &self.config.drives {
            let (s, disk) = instance.template_disk(&d.id).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Drive {:?} is a plain image file: a checkpoint needs every drive cloned \
                     from a template (\"template\" and \"vm_name\" in PUT /drives)",
                    d.id
                ))
            })?;
            if instance.is_ephemeral(&d.id) {
                return Err(ApiError::bad_request(format!(
                    "Drive {:?}'s disk is destroyed when the VM ends: give the drive a vm_name \
                     to checkpoint it",
                    d.id
                )));
            }
            match &store {
                Some(spec) if *spec != s.spec() => {
                    return Err(ApiError::bad_request(
                        "The VM's drives are in two stores: a checkpoint is in one",
                    ))
                }
                _ => store = Some(s.spec()),
            }
            disks.push((d.id.clone(), disk.clone()));
        }
        let store = store.ok_or_else(|| {
            ApiError::bad_request(
                "The VM has no drive from an image store: snapshot it with PUT /snapshot/create",
            )
        })?;
        let root = self
            .checkpoint_dirs
            .iter()
            .find(|(spec, _)| *spec == store)
            .map(|(_, dir)| dir.clone())
            .ok_or_else(|| {
                ApiError::bad_request(format!("{store} has no directory for checkpoints"))
            })?;
        Ok(super::Action::Checkpoint {
            dir: root.join(&name),
            name,
            store,
            disks,
            config: Box::new(self.config.clone()),
        })
    }
}
