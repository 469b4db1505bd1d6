//! The directory store: raw image files under one directory.
//!
//! ```text
//! ROOT/templates/NAME/disk.img          read-only (mode 0444)
//! ROOT/vms/VM/DISK/disk.img
//! ROOT/vms/VM/DISK/origin               the template it was cloned from
//! ROOT/vms/VM/DISK/snapshots/SNAP.img
//! ```
//!
//! Everything new is built in a hidden staging directory under ROOT and renamed into place
//! when complete, so a failure (a full disk, a bad source) leaves nothing behind. Clones and
//! snapshots are reflinks where the filesystem shares blocks, sparse copies elsewhere; `send`
//! writes the raw image and `receive` reads one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{
    check_name, copy_image, copy_sparse, create_private_dirs, image_in_use, DiskRef, DiskStore,
    Entry, EntryKind, Progress, Result, SnapRef, StorageError, Target, IMAGE_FILE, PRIVATE_DIR,
    PRIVATE_FILE,
};

/// A directory of raw images.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
}

/// The image's size and the bytes it takes on disk.
fn sizes(path: &Path) -> Result<(u64, u64)> {
    let m =
        fs::metadata(path).map_err(StorageError::io(format!("cannot stat {}", path.display())))?;
    Ok((m.len(), m.blocks() * 512))
}

/// Names of the visible entries of `dir` (none if it does not exist), sorted.
fn names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::io(format!("cannot read {}", dir.display()))(
                e,
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::io(format!("cannot read {}", dir.display())))?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

impl DirStore {
    /// Opens the store at `root`, which must be an existing directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        if !root.is_dir() {
            return Err(StorageError::NoDirectory(root.display().to_string()));
        }
        Ok(DirStore {
            root: root.to_path_buf(),
        })
    }

    fn template_dir(&self, name: &str) -> PathBuf {
        self.root.join("templates").join(name)
    }

    fn disk_dir(&self, disk: &DiskRef) -> PathBuf {
        self.root.join("vms").join(&disk.vm).join(&disk.disk)
    }

    fn snapshot_file(&self, snap: &SnapRef) -> PathBuf {
        self.disk_dir(&snap.disk)
            .join("snapshots")
            .join(format!("{}.img", snap.snap))
    }

    /// Makes disk `disk` a copy of the image `source` (a template's or a snapshot's), recording
    /// `origin`; returns its image's path.
    fn copy_as_disk(&self, source: &Path, disk: &DiskRef, origin: &str) -> Result<PathBuf> {
        let dest = self.disk_dir(disk);
        if dest.exists() {
            return Err(StorageError::exists(self, "Disk", disk));
        }
        let staged = self.staging()?;
        copy_image(source, &staged.path().join(IMAGE_FILE), &mut |_| {})?;
        let path = staged.path().join("origin");
        fs::write(&path, format!("{origin}\n"))
            .map_err(StorageError::io(format!("cannot write {}", path.display())))?;
        self.install(staged, &dest)?;
        Ok(dest.join(IMAGE_FILE))
    }

    /// A staging directory under the root, removed on drop unless renamed into place.
    fn staging(&self) -> Result<tempfile::TempDir> {
        let err = || {
            format!(
                "cannot create a staging directory in {}",
                self.root.display()
            )
        };
        let staged = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(&self.root)
            .map_err(StorageError::io(err()))?;
        // It becomes a template's or a disk's directory: root's alone.
        fs::set_permissions(staged.path(), fs::Permissions::from_mode(PRIVATE_DIR))
            .map_err(StorageError::io(err()))?;
        Ok(staged)
    }

    /// Renames the staged directory to `dest`, creating `dest`'s parents.
    fn install(&self, staged: tempfile::TempDir, dest: &Path) -> Result<()> {
        let parent = dest.parent().expect("store paths have parents");
        create_private_dirs(parent)?;
        fs::rename(staged.path(), dest).map_err(StorageError::io(format!(
            "cannot move the new image to {}",
            dest.display()
        )))?;
        let _ = staged.keep();
        Ok(())
    }

    /// Disks whose `origin` is `template`.
    fn clones_of(&self, template: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for vm in names(&self.root.join("vms"))? {
            for disk in names(&self.root.join("vms").join(&vm))? {
                let origin = self.root.join("vms").join(&vm).join(&disk).join("origin");
                if fs::read_to_string(origin).is_ok_and(|o| o.trim() == template) {
                    out.push(format!("{vm}/{disk}"));
                }
            }
        }
        Ok(out)
    }

    fn refuse_if_in_use(&self, disk: &DiskRef, force: bool) -> Result<()> {
        let image = self.disk_dir(disk).join(IMAGE_FILE);
        if !force && image_in_use(&image)? {
            return Err(StorageError::DiskInUse(disk.to_string()));
        }
        Ok(())
    }
}

impl DiskStore for DirStore {
    fn spec(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn import_template(&self, name: &str, image: &Path, progress: Progress<'_>) -> Result<()> {
        check_name("template", name)?;
        let dest = self.template_dir(name);
        if dest.exists() {
            return Err(StorageError::exists(self, "Template", name));
        }
        let staged = self.staging()?;
        let file = staged.path().join(IMAGE_FILE);
        copy_image(image, &file, progress)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).map_err(StorageError::io(
            format!("cannot make {} read-only", file.display()),
        ))?;
        self.install(staged, &dest)
    }

    fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for name in names(&self.root.join("templates"))? {
            let (size, used) = sizes(&self.template_dir(&name).join(IMAGE_FILE))?;
            out.push(Entry {
                name,
                kind: EntryKind::Template,
                size,
                used,
                origin: None,
            });
        }
        for vm in names(&self.root.join("vms"))? {
            for disk_name in names(&self.root.join("vms").join(&vm))? {
                let disk = DiskRef::new(&vm, &disk_name)?;
                let dir = self.disk_dir(&disk);
                let (size, used) = sizes(&dir.join(IMAGE_FILE))?;
                let origin = fs::read_to_string(dir.join("origin"))
                    .ok()
                    .map(|o| o.trim().to_string());
                out.push(Entry {
                    name: disk.to_string(),
                    kind: EntryKind::Disk,
                    size,
                    used,
                    origin,
                });
                for file in names(&dir.join("snapshots"))? {
                    let Some(snap) = file.strip_suffix(".img") else {
                        continue;
                    };
                    let (size, used) = sizes(&dir.join("snapshots").join(&file))?;
                    out.push(Entry {
                        name: format!("{disk}@{snap}"),
                        kind: EntryKind::Snapshot,
                        size,
                        used,
                        origin: None,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn clone_template(&self, template: &str, disk: &DiskRef) -> Result<PathBuf> {
        check_name("template", template)?;
        let source = self.template_dir(template).join(IMAGE_FILE);
        if !source.exists() {
            return Err(StorageError::not_found(self, "template", template));
        }
        self.copy_as_disk(&source, disk, template)
    }

    fn disk_path(&self, disk: &DiskRef) -> Result<PathBuf> {
        let path = self.disk_dir(disk).join(IMAGE_FILE);
        if !path.exists() {
            return Err(StorageError::not_found(self, "disk", disk));
        }
        Ok(path)
    }

    fn disk_exists(&self, disk: &DiskRef) -> Result<bool> {
        Ok(self.disk_dir(disk).join(IMAGE_FILE).exists())
    }

    fn snapshot(&self, snap: &SnapRef) -> Result<()> {
        let image = self.disk_path(&snap.disk)?;
        let dest = self.snapshot_file(snap);
        if dest.exists() {
            return Err(StorageError::exists(self, "Snapshot", snap));
        }
        let staged = self.staging()?;
        let file = staged.path().join(IMAGE_FILE);
        copy_image(&image, &file, &mut |_| {})?;
        let dir = dest.parent().expect("a snapshot has a directory");
        create_private_dirs(dir)?;
        fs::rename(&file, &dest).map_err(StorageError::io(format!(
            "cannot create {}",
            dest.display()
        )))
    }

    fn clone_snapshot(&self, snap: &SnapRef, disk: &DiskRef) -> Result<PathBuf> {
        let source = self.snapshot_file(snap);
        if !source.exists() {
            return Err(StorageError::not_found(self, "snapshot", snap));
        }
        self.copy_as_disk(&source, disk, &snap.to_string())
    }

    fn checkpoints_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("checkpoints");
        create_private_dirs(&dir)?;
        Ok(dir)
    }

    fn rollback(&self, snap: &SnapRef, force: bool) -> Result<()> {
        let image = self.disk_path(&snap.disk)?;
        let source = self.snapshot_file(snap);
        if !source.exists() {
            return Err(StorageError::not_found(self, "snapshot", snap));
        }
        self.refuse_if_in_use(&snap.disk, force)?;
        let staged = self.staging()?;
        let file = staged.path().join(IMAGE_FILE);
        copy_image(&source, &file, &mut |_| {})?;
        fs::rename(&file, &image).map_err(StorageError::io(format!(
            "cannot replace {}",
            image.display()
        )))
    }

    fn destroy(&self, target: &Target, force: bool) -> Result<()> {
        let remove = |dir: &Path| {
            fs::remove_dir_all(dir)
                .map_err(StorageError::io(format!("cannot remove {}", dir.display())))
        };
        match target {
            Target::Template(name) => {
                let dir = self.template_dir(name);
                if !dir.exists() {
                    return Err(StorageError::not_found(self, "template", name));
                }
                let clones = self.clones_of(name)?;
                if !clones.is_empty() {
                    return Err(StorageError::TemplateInUse {
                        name: name.clone(),
                        disks: clones,
                    });
                }
                remove(&dir)
            }
            Target::Disk(disk) => {
                self.disk_path(disk)?;
                self.refuse_if_in_use(disk, force)?;
                remove(&self.disk_dir(disk))?;
                // The VM's directory goes with its last disk.
                let _ = fs::remove_dir(self.root.join("vms").join(&disk.vm));
                Ok(())
            }
            Target::Snapshot(snap) => {
                let file = self.snapshot_file(snap);
                if !file.exists() {
                    return Err(StorageError::not_found(self, "snapshot", snap));
                }
                fs::remove_file(&file).map_err(StorageError::io(format!(
                    "cannot remove {}",
                    file.display()
                )))
            }
        }
    }

    fn send(&self, source: &Target, out: &mut dyn Write) -> Result<u64> {
        let path = match source {
            Target::Template(name) => {
                let p = self.template_dir(name).join(IMAGE_FILE);
                if !p.exists() {
                    return Err(StorageError::not_found(self, "template", name));
                }
                p
            }
            Target::Disk(disk) => self.disk_path(disk)?,
            Target::Snapshot(snap) => {
                let p = self.snapshot_file(snap);
                if !p.exists() {
                    return Err(StorageError::not_found(self, "snapshot", snap));
                }
                p
            }
        };
        let mut file = File::open(&path)
            .map_err(StorageError::io(format!("cannot open {}", path.display())))?;
        let n = std::io::copy(&mut file, out)
            .map_err(StorageError::io(format!("cannot send {}", path.display())))?;
        out.flush()
            .map_err(StorageError::io("cannot flush the output"))?;
        Ok(n)
    }

    fn receive(&self, disk: &DiskRef, input: &mut dyn Read) -> Result<PathBuf> {
        let dest = self.disk_dir(disk);
        if dest.exists() {
            return Err(StorageError::exists(self, "Disk", disk));
        }
        let staged = self.staging()?;
        let file = staged.path().join(IMAGE_FILE);
        let mut out = File::options()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(&file)
            .map_err(StorageError::io(format!(
                "cannot create {}",
                file.display()
            )))?;
        let n = copy_sparse(input, &mut out, &mut |_| {}).map_err(StorageError::io(format!(
            "cannot receive into {}",
            file.display()
        )))?;
        if n == 0 {
            return Err(StorageError::NotADisk(disk.to_string()));
        }
        out.sync_all()
            .map_err(StorageError::io(format!("cannot sync {}", file.display())))?;
        self.install(staged, &dest)?;
        Ok(dest.join(IMAGE_FILE))
    }
}
