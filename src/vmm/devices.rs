//! The VM's virtio devices as its handle holds them: each device's counters, readable after the
//! VM ends, and what the VMM does to one kind of device while the VM runs (a drive's new image
//! or rate limits, a drive flushed for a snapshot of its disk, an interface's rate limits). The
//! devices themselves, and their backends (an image, a TAP), go with the VM.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};

use fennec_devices::rate_limiter::{BucketSpec, Buckets};
use fennec_devices::virtio::block::{Block, BlockMetrics};
use fennec_devices::virtio::net::{MacAddr, Net, NetMetrics};

use super::handle::{VmHandle, VmState};
use super::records::{DeviceMetrics, DeviceRecord};
use super::Error;
use crate::config::{guest_disk_name, open_disk};
use crate::device_manager::Location;

/// A drive as the guest sees it.
#[derive(Clone)]
pub struct DriveInfo {
    /// Its ID.
    pub id: String,
    /// The guest's name for it (`vda`, `vdb`, ...), if the guest probes in slot order.
    pub guest_name: String,
    /// Where the guest finds it.
    pub location: Location,
    /// Capacity in 512-byte sectors, now (0 once the VM has ended).
    pub sectors: u64,
    /// Whether the guest can only read it.
    pub read_only: bool,
    /// Its counters.
    pub metrics: Arc<BlockMetrics>,
}

impl std::fmt::Debug for DriveInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveInfo")
            .field("id", &self.id)
            .field("guest_name", &self.guest_name)
            .field("location", &self.location)
            .field("sectors", &self.sectors)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// A network interface as the guest sees it.
#[derive(Clone)]
pub struct NetInfo {
    /// Its ID.
    pub id: String,
    /// The TAP on the host.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// Where the guest finds it.
    pub location: Location,
    /// Its counters.
    pub metrics: Arc<NetMetrics>,
}

impl std::fmt::Debug for NetInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetInfo")
            .field("id", &self.id)
            .field("tap", &self.tap)
            .field("mac", &self.mac)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl VmHandle {
    /// The VM's drives in guest order (`/dev/vda`, `/dev/vdb`, ...), with their counters; they
    /// stay readable after the guest ends.
    pub fn drives(&self) -> Vec<DriveInfo> {
        let config = &self.0.config;
        config
            .drives_in_guest_order()
            .into_iter()
            .enumerate()
            .filter_map(|(index, drive)| {
                let record = self.0.virtio.iter().find(|r| r.id == drive.id)?;
                let device = record.device::<Block>();
                let (sectors, metrics) = match &device {
                    Some(d) => {
                        let d = fennec_devices::lock(d);
                        (d.capacity(), d.metrics())
                    }
                    None => (0, self.counters_as::<BlockMetrics>(record)?),
                };
                Some(DriveInfo {
                    id: drive.id.clone(),
                    guest_name: guest_disk_name(index),
                    location: record.location,
                    sectors,
                    read_only: drive.read_only,
                    metrics,
                })
            })
            .collect()
    }

    /// The VM's network interfaces in guest order (eth0, eth1, ...), with their counters.
    pub fn nets(&self) -> Vec<NetInfo> {
        self.0
            .config
            .net
            .iter()
            .filter_map(|net| {
                let record = self.0.virtio.iter().find(|r| r.id == net.id)?;
                Some(NetInfo {
                    id: net.id.clone(),
                    tap: net.tap.clone(),
                    mac: net.guest_mac(),
                    location: record.location,
                    metrics: self.counters_as::<NetMetrics>(record)?,
                })
            })
            .collect()
    }

    /// A device's counters as their own type (kept by the handle as a trait object).
    fn counters_as<T: Send + Sync + 'static>(&self, record: &DeviceRecord) -> Option<Arc<T>> {
        let any: Arc<dyn Any + Send + Sync> = record.counters.clone().as_any();
        any.downcast::<T>().ok()
    }

    /// Every virtio device's counters, by device ID.
    pub fn device_metrics(&self) -> std::collections::BTreeMap<String, DeviceMetrics> {
        self.0
            .virtio
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    DeviceMetrics {
                        kind: r.kind,
                        counters: r.counters.to_json(),
                    },
                )
            })
            .collect()
    }

    /// Drive `id`'s device, while the VM has it, and whether it is read-only.
    fn drive_device(&self, id: &str) -> Result<(Arc<Mutex<Block>>, bool), Error> {
        let drive = self
            .0
            .config
            .drives
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| Error::NoSuchDrive(id.to_string()))?;
        let device = self
            .0
            .virtio
            .iter()
            .find(|r| r.id == id)
            .and_then(DeviceRecord::device::<Block>)
            .ok_or(Error::NotRunning)?;
        Ok((device, drive.read_only))
    }

    /// Sets drive `id`'s rate limits (Firecracker's drive PATCH with `rate_limiter`); the
    /// buckets start full.
    pub fn set_drive_rate_limits(
        &self,
        id: &str,
        bandwidth: Option<BucketSpec>,
        ops: Option<BucketSpec>,
    ) -> Result<(), Error> {
        let (device, _) = self.drive_device(id)?;
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
        if !self.0.config.net.iter().any(|n| n.id == id) {
            return Err(Error::NoSuchNet(id.to_string()));
        }
        let device = self
            .0
            .virtio
            .iter()
            .find(|r| r.id == id)
            .and_then(DeviceRecord::device::<Net>)
            .ok_or(Error::NotRunning)?;
        fennec_devices::lock(&device).set_rate_limits(rx, tx);
        log::info!("Network interface {id:?}: rate limits rx {rx:?}, tx {tx:?}");
        Ok(())
    }

    /// Swaps the image behind drive `id` for the file at `path` (Firecracker's drive PATCH),
    /// keeping the drive's read-only setting; the guest sees the new capacity.
    pub fn replace_drive_image(&self, id: &str, path: &Path) -> Result<(), Error> {
        let (device, read_only) = self.drive_device(id)?;
        let disk = open_disk(id, path, read_only)?;
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
        let (device, _) = self.drive_device(id)?;
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
}
