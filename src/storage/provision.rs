//! Giving a VM's template drives their disks: clones made when the VM starts, destroyed when
//! it ends unless they belong to a named VM.

use super::error::Result;
use super::helper;
use super::names::{DiskRef, Target};
use super::open::{default_spec, open};
use super::store::DiskStore;
use crate::config::{DriveSource, TemplateDrive, VmConfig};

/// A drive cloned from a template for one VM run.
#[derive(Debug)]
struct ProvisionedDisk {
    drive_id: String,
    store: Box<dyn DiskStore>,
    disk: DiskRef,
    ephemeral: bool,
}

/// The disks [`provision`] made. Ephemeral ones are destroyed when this is dropped (or
/// [`Provisioned::release`]d): drop it only after the VM is gone.
#[derive(Debug, Default)]
pub struct Provisioned {
    disks: Vec<ProvisionedDisk>,
    helper: Option<std::sync::Arc<helper::StorageHelper>>,
}

impl Provisioned {
    /// Destroys the ephemeral disks in `helper`'s process rather than this one, so a VMM whose
    /// threads run under syscall filters executes no program (see [`helper`]).
    pub fn set_helper(&mut self, helper: std::sync::Arc<helper::StorageHelper>) {
        self.helper = Some(helper);
    }

    /// Tells the storage helper, if there is one, the VM's disks: the only ones it acts on
    /// from now on. Called once, before the guest runs.
    pub fn pin(&self) -> std::result::Result<(), String> {
        let Some(helper) = &self.helper else {
            return Ok(());
        };
        helper.pin(
            self.disks
                .iter()
                .map(|d| helper::PinnedDisk {
                    store: d.store.spec(),
                    disk: d.disk.to_string(),
                    ephemeral: d.ephemeral,
                })
                .collect(),
        )
    }

    /// Destroys the ephemeral disks now, logging any that cannot be.
    pub fn release(&mut self) {
        for d in self.disks.drain(..) {
            if !d.ephemeral {
                continue;
            }
            let destroyed = match &self.helper {
                Some(helper) => helper.destroy(&d.store.spec(), &d.disk),
                None => d
                    .store
                    .destroy(&Target::Disk(d.disk.clone()), true)
                    .map_err(|e| e.to_string()),
            };
            match destroyed {
                Ok(()) => log::info!("Destroyed ephemeral disk {} in {}", d.disk, d.store.spec()),
                Err(e) => log::error!("Could not destroy ephemeral disk {}: {e}", d.disk),
            }
        }
    }

    /// The store and disk behind the drive `drive_id`, if it was provisioned from a template.
    pub fn disk_of(&self, drive_id: &str) -> Option<(&dyn DiskStore, &DiskRef)> {
        self.disks
            .iter()
            .find(|d| d.drive_id == drive_id)
            .map(|d| (d.store.as_ref(), &d.disk))
    }

    /// Whether drive `drive_id`'s disk is destroyed when the VM ends (no `vm=` name).
    pub fn is_ephemeral(&self, drive_id: &str) -> bool {
        self.disks
            .iter()
            .any(|d| d.drive_id == drive_id && d.ephemeral)
    }
}

impl Drop for Provisioned {
    fn drop(&mut self) {
        self.release();
    }
}

/// A name no other run of this host uses at the same time, for an ephemeral disk's VM.
fn ephemeral_vm_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "ephemeral-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Gives every drive of `config` that names a template an image: a clone of the template
/// made now (a persistent drive, with a `vm_name`, reuses its disk when it exists). Drives
/// with a path are left alone. On error, whatever was cloned is destroyed again.
pub fn provision(config: &mut VmConfig) -> Result<Provisioned> {
    let mut made = Provisioned::default();
    let mut ephemeral_vm = None;
    for drive in &mut config.drives {
        let Some(TemplateDrive {
            template,
            store,
            vm_name,
        }) = drive.template().cloned()
        else {
            continue;
        };
        let store = open(&default_spec(store.as_deref()))?;
        let (vm, ephemeral) = match &vm_name {
            Some(vm) => (vm.clone(), false),
            None => (
                ephemeral_vm.get_or_insert_with(ephemeral_vm_name).clone(),
                true,
            ),
        };
        let disk = DiskRef::new(&vm, &drive.id)?;
        let path = if !ephemeral && store.disk_exists(&disk)? {
            log::info!(
                "Drive {:?}: reusing disk {disk} in {}",
                drive.id,
                store.spec()
            );
            store.disk_path(&disk)?
        } else {
            let started = std::time::Instant::now();
            let path = store.clone_template(&template, &disk)?;
            log::info!(
                "Drive {:?}: cloned template {template:?} as {disk} in {} ({} ms{})",
                drive.id,
                store.spec(),
                started.elapsed().as_millis(),
                if ephemeral { ", destroyed at exit" } else { "" }
            );
            path
        };
        drive.source = DriveSource::Path(path);
        made.disks.push(ProvisionedDisk {
            drive_id: drive.id.clone(),
            store,
            disk,
            ephemeral,
        });
    }
    Ok(made)
}
