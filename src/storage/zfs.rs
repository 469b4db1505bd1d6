//! The ZFS store: datasets under a parent dataset, driven through the `zfs` and `zpool`
//! commands (argument vectors, never a shell; `-H -p` output).
//!
//! ```text
//! PARENT/templates/NAME        disk.img, read-only, with the snapshot @base
//! PARENT/vms/VM                one per VM
//! PARENT/vms/VM/DISK           zfs clone of PARENT/templates/NAME@base, or a received stream
//! PARENT/vms/VM/DISK@SNAP      its snapshots
//! ```
//!
//! Images are files inside mounted datasets, which works on OpenZFS and on zfs-fuse alike.
//! Every dataset an operation creates is destroyed again if a later step fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::{
    check_name, copy_image, image_in_use, DiskRef, DiskStore, Entry, EntryKind, Progress, Result,
    SnapRef, StorageError, Target, Undo, IMAGE_FILE,
};

/// What a dataset of received files is set to: the sender's setuid programs and device nodes
/// mean nothing here, and nothing of it runs on this host (a VM reads its image; it is never
/// executed).
const HARMLESS: [&str; 3] = ["setuid=off", "devices=off", "exec=off"];

/// The snapshot every template is cloned from.
pub const BASE_SNAPSHOT: &str = "base";

const INSTALL_HINT: &str =
    "install OpenZFS (Debian: zfsutils-linux) or zfs-fuse (Debian: zfs-fuse), or set the command's path";

/// Runs `zfs` and `zpool`.
#[derive(Clone, Debug)]
pub struct ZfsCommands {
    /// The `zfs` program.
    pub zfs: PathBuf,
    /// The `zpool` program.
    pub zpool: PathBuf,
}

impl Default for ZfsCommands {
    fn default() -> Self {
        ZfsCommands {
            zfs: "zfs".into(),
            zpool: "zpool".into(),
        }
    }
}

/// Advice for failures whose cause is known from the message.
fn hint_for(stderr: &str) -> &'static str {
    if stderr.contains("daemon is running") || stderr.contains("failed to initialize ZFS library") {
        "\nIs the ZFS service running? (zfs-fuse: start `zfs-fuse`; OpenZFS: `modprobe zfs`)"
    } else if stderr.contains("out of space") || stderr.contains("No space left") {
        "\nThe pool is full: free space or grow it"
    } else {
        ""
    }
}

fn command_line(program: &Path, args: &[&str]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

impl ZfsCommands {
    fn spawn(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args).env("LC_ALL", "C");
        c
    }

    fn missing(program: &Path, args: &[&str], e: io::Error) -> StorageError {
        StorageError::CommandMissing {
            command: command_line(program, args),
            source: e,
            hint: INSTALL_HINT,
        }
    }

    fn run_program(&self, program: &Path, args: &[&str]) -> Result<String> {
        log::debug!("Running {}", command_line(program, args));
        let out = self
            .spawn(program, args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Self::missing(program, args, e))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(StorageError::CommandFailed {
            command: command_line(program, args),
            hint: hint_for(&stderr),
            stderr: if stderr.is_empty() {
                format!("exit status {}", out.status)
            } else {
                stderr
            },
        })
    }

    /// Runs `zfs ARGS`; its stdout on success.
    pub fn zfs(&self, args: &[&str]) -> Result<String> {
        self.run_program(&self.zfs, args)
    }

    /// Runs `zpool ARGS`; its stdout on success.
    pub fn zpool(&self, args: &[&str]) -> Result<String> {
        self.run_program(&self.zpool, args)
    }

    /// Runs `zfs destroy ARGS`, retrying for up to two seconds while ZFS says "dataset is
    /// busy": zfs-fuse finishes unmounting a destroyed child after `zfs destroy` returns, and
    /// its parent is busy until then.
    pub fn destroy(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec!["destroy"];
        argv.extend_from_slice(args);
        let mut tries = 0;
        loop {
            match self.zfs(&argv) {
                Err(StorageError::CommandFailed { stderr, .. })
                    if stderr.contains("dataset is busy") && tries < 20 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other.map(drop),
            }
        }
    }

    /// Whether `dataset` (a filesystem or snapshot) exists.
    pub fn exists(&self, dataset: &str) -> Result<bool> {
        match self.zfs(&["list", "-H", "-o", "name", "-t", "all", dataset]) {
            Ok(_) => Ok(true),
            Err(StorageError::CommandFailed { stderr, .. })
                if stderr.contains("does not exist") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `zfs get -H -p` of `props` for `dataset` (and with `recursive`, everything under it):
    /// dataset → property → value.
    pub fn get(
        &self,
        dataset: &str,
        props: &[&str],
        recursive: bool,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let props = props.join(",");
        let mut args = vec!["get", "-H", "-p", "-o", "name,property,value"];
        if recursive {
            args.push("-r");
        }
        args.push(&props);
        args.push(dataset);
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for line in self.zfs(&args)?.lines() {
            let mut fields = line.splitn(3, '\t');
            if let (Some(name), Some(prop), Some(value)) =
                (fields.next(), fields.next(), fields.next())
            {
                out.entry(name.to_string())
                    .or_default()
                    .insert(prop.to_string(), value.to_string());
            }
        }
        Ok(out)
    }

    /// Runs `zfs ARGS` with its stdout copied to `out`; returns the bytes copied.
    fn zfs_to(&self, args: &[&str], out: &mut dyn Write) -> Result<u64> {
        let (mut child, stderr) = self.spawn_streaming(args, Stdio::null(), Stdio::piped())?;
        let mut stdout = child.stdout.take().expect("piped");
        let copied = io::copy(&mut stdout, out).and_then(|n| out.flush().map(|()| n));
        drop(stdout);
        self.finish(args, child.wait(), stderr, copied)
    }

    /// Runs `zfs ARGS` with `input` copied to its stdin.
    fn zfs_from(&self, args: &[&str], input: &mut dyn Read) -> Result<u64> {
        let (mut child, stderr) = self.spawn_streaming(args, Stdio::piped(), Stdio::null())?;
        let mut stdin = child.stdin.take().expect("piped");
        let copied = io::copy(input, &mut stdin);
        drop(stdin);
        self.finish(args, child.wait(), stderr, copied)
    }

    /// Starts `zfs ARGS` with the given stdin and stdout, its stderr read on a thread.
    fn spawn_streaming(
        &self,
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<(std::process::Child, std::thread::JoinHandle<String>)> {
        log::debug!("Running {}", command_line(&self.zfs, args));
        let mut child = self
            .spawn(&self.zfs, args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Self::missing(&self.zfs, args, e))?;
        let stderr = drain_in_background(child.stderr.take().expect("piped"));
        Ok((child, stderr))
    }

    fn finish(
        &self,
        args: &[&str],
        status: io::Result<std::process::ExitStatus>,
        stderr: std::thread::JoinHandle<String>,
        copied: io::Result<u64>,
    ) -> Result<u64> {
        let stderr = stderr.join().unwrap_or_default().trim().to_string();
        let command = command_line(&self.zfs, args);
        let status = status.map_err(StorageError::io(format!("cannot wait for `{command}`")))?;
        if !status.success() {
            return Err(StorageError::CommandFailed {
                command,
                hint: hint_for(&stderr),
                stderr: if stderr.is_empty() {
                    format!("exit status {status}")
                } else {
                    stderr
                },
            });
        }
        copied.map_err(StorageError::io(format!("cannot stream `{command}`")))
    }
}

/// Reads a child's stderr on a thread, so a chatty child cannot block on a full pipe.
fn drain_in_background(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Datasets under a parent dataset.
#[derive(Debug)]
pub struct ZfsStore {
    parent: String,
    zfs: Arc<ZfsCommands>,
}

impl ZfsStore {
    /// Opens the store under `parent` (`POOL` or `POOL/PATH`), with `zfs` and `zpool` from
    /// `PATH`. The pool and the dataset must exist.
    pub fn open(parent: &str) -> Result<Self> {
        Self::open_with(parent, ZfsCommands::default())
    }

    /// Opens the store under `parent` with the given commands.
    pub fn open_with(parent: &str, commands: ZfsCommands) -> Result<Self> {
        let parent = parent.trim_end_matches('/');
        let mut components = parent.split('/');
        let pool = components.next().unwrap_or_default();
        for c in std::iter::once(pool).chain(components) {
            check_name("dataset", c)?;
        }
        if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(StorageError::BadName {
                what: "pool",
                name: pool.to_string(),
                why: "a pool name starts with a letter",
            });
        }
        let zfs = Arc::new(commands);
        match zfs.zpool(&["list", "-H", "-o", "name", pool]) {
            Ok(_) => {}
            Err(StorageError::CommandFailed { stderr, .. }) if stderr.contains("no such pool") => {
                return Err(StorageError::NoPool(pool.to_string()))
            }
            Err(e) => return Err(e),
        }
        if !zfs.exists(parent)? {
            return Err(StorageError::NoDataset(parent.to_string()));
        }
        Ok(ZfsStore {
            parent: parent.to_string(),
            zfs,
        })
    }

    fn template_ds(&self, name: &str) -> String {
        format!("{}/templates/{name}", self.parent)
    }

    fn vm_ds(&self, vm: &str) -> String {
        format!("{}/vms/{vm}", self.parent)
    }

    fn disk_ds(&self, disk: &DiskRef) -> String {
        format!("{}/vms/{}/{}", self.parent, disk.vm, disk.disk)
    }

    /// Makes the files of `dataset` and what inherits from it harmless to this host: no
    /// setuid, no device nodes, no programs run from it (one property a command, as every
    /// ZFS takes them).
    fn harmless(&self, dataset: &str) -> Result<()> {
        for property in HARMLESS {
            self.zfs.zfs(&["set", property, dataset])?;
        }
        Ok(())
    }

    /// Creates `dataset` unless it exists; a dataset created is destroyed by `undo`.
    fn ensure(&self, dataset: &str, undo: &mut Undo) -> Result<()> {
        if self.zfs.exists(dataset)? {
            return Ok(());
        }
        self.zfs.zfs(&["create", dataset])?;
        self.undo_destroy(dataset, undo);
        Ok(())
    }

    /// Has `undo` destroy `dataset` (and everything under it).
    fn undo_destroy(&self, dataset: &str, undo: &mut Undo) {
        let zfs = self.zfs.clone();
        let ds = dataset.to_string();
        undo.push(format!("create {dataset}"), move || {
            if zfs.exists(&ds)? {
                zfs.destroy(&["-r", "-f", &ds])?;
            }
            Ok(())
        });
    }

    /// Where `dataset` is mounted.
    fn mountpoint(&self, dataset: &str) -> Result<PathBuf> {
        let props = self.zfs.get(dataset, &["mountpoint", "mounted"], false)?;
        let p = props.get(dataset);
        let get = |k: &str| p.and_then(|p| p.get(k)).cloned().unwrap_or_default();
        let mountpoint = get("mountpoint");
        if !mountpoint.starts_with('/') || get("mounted") != "yes" {
            return Err(StorageError::NotMounted {
                dataset: dataset.to_string(),
                mountpoint,
            });
        }
        Ok(PathBuf::from(mountpoint))
    }

    fn image_of(&self, dataset: &str) -> Result<PathBuf> {
        Ok(self.mountpoint(dataset)?.join(IMAGE_FILE))
    }

    /// The dataset a new disk `disk` gets, which must not exist yet, with its parents made
    /// (undone with `undo`).
    fn new_disk_place(&self, disk: &DiskRef, undo: &mut Undo) -> Result<String> {
        let ds = self.disk_ds(disk);
        if self.zfs.exists(&ds)? {
            return Err(StorageError::exists(self, "Disk", disk));
        }
        self.ensure(&format!("{}/vms", self.parent), undo)?;
        self.ensure(&self.vm_ds(&disk.vm), undo)?;
        Ok(ds)
    }

    /// Makes disk `disk` a writable clone of snapshot `source` (a template's base or a
    /// checkpoint's); returns its image's path. Undone if any step fails.
    fn clone_as_disk(&self, source: &str, disk: &DiskRef) -> Result<PathBuf> {
        let mut undo = Undo::default();
        let ds = self.new_disk_place(disk, &mut undo)?;
        self.zfs
            .zfs(&["clone", "-o", "readonly=off", source, &ds])?;
        self.undo_destroy(&ds, &mut undo);
        let image = self.image_of(&ds)?;
        undo.commit();
        Ok(image)
    }

    fn require_disk(&self, disk: &DiskRef) -> Result<String> {
        let ds = self.disk_ds(disk);
        if !self.zfs.exists(&ds)? {
            return Err(StorageError::not_found(self, "disk", disk));
        }
        Ok(ds)
    }

    fn refuse_if_in_use(&self, disk: &DiskRef, force: bool) -> Result<()> {
        if force {
            return Ok(());
        }
        let image = self.image_of(&self.disk_ds(disk))?;
        if image_in_use(&image)? {
            return Err(StorageError::DiskInUse(disk.to_string()));
        }
        Ok(())
    }

    /// The disks cloned from template `name` (whose origin is its `@base`).
    fn clones_of(&self, name: &str) -> Result<Vec<String>> {
        let base = format!("{}@{BASE_SNAPSHOT}", self.template_ds(name));
        let vms = format!("{}/vms", self.parent);
        if !self.zfs.exists(&vms)? {
            return Ok(Vec::new());
        }
        let prefix = format!("{vms}/");
        Ok(self
            .zfs
            .get(&vms, &["origin"], true)?
            .into_iter()
            .filter(|(_, p)| p.get("origin") == Some(&base))
            .filter_map(|(ds, _)| ds.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }
}

/// Parses a `-p` number; absent or `-` is 0.
fn number(props: &BTreeMap<String, String>, key: &str) -> u64 {
    props.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl DiskStore for ZfsStore {
    fn spec(&self) -> String {
        format!("zfs:{}", self.parent)
    }

    fn import_template(&self, name: &str, image: &Path, progress: Progress<'_>) -> Result<()> {
        check_name("template", name)?;
        let ds = self.template_ds(name);
        if self.zfs.exists(&ds)? {
            return Err(StorageError::exists(self, "Template", name));
        }
        fs::metadata(image).map_err(StorageError::io(format!("cannot use {}", image.display())))?;
        let mut undo = Undo::default();
        self.ensure(&format!("{}/templates", self.parent), &mut undo)?;
        self.zfs.zfs(&["create", &ds])?;
        self.undo_destroy(&ds, &mut undo);
        copy_image(image, &self.image_of(&ds)?, progress)?;
        self.zfs.zfs(&["set", "readonly=on", &ds])?;
        self.zfs
            .zfs(&["snapshot", &format!("{ds}@{BASE_SNAPSHOT}")])?;
        undo.commit();
        Ok(())
    }

    fn list(&self) -> Result<Vec<Entry>> {
        let props = self.zfs.get(
            &self.parent,
            &["type", "used", "referenced", "origin"],
            true,
        )?;
        let templates = format!("{}/templates/", self.parent);
        let vms = format!("{}/vms/", self.parent);
        let base_suffix = format!("@{BASE_SNAPSHOT}");
        let mut out = Vec::new();
        for (ds, p) in &props {
            let (kind, name) = if let Some(rest) = ds.strip_prefix(&templates) {
                if rest.contains('@') || rest.contains('/') {
                    continue;
                }
                (EntryKind::Template, rest)
            } else if let Some(rest) = ds.strip_prefix(&vms) {
                match (rest.contains('/'), rest.contains('@')) {
                    (true, false) => (EntryKind::Disk, rest),
                    (true, true) => (EntryKind::Snapshot, rest),
                    _ => continue, // a VM's dataset, or a snapshot of it
                }
            } else {
                continue;
            };
            let origin = p
                .get("origin")
                .and_then(|o| o.strip_prefix(&templates))
                .and_then(|o| o.strip_suffix(&base_suffix))
                .map(str::to_string);
            let size = match kind {
                EntryKind::Snapshot => number(p, "referenced"),
                _ => self
                    .image_of(ds)
                    .and_then(|img| {
                        fs::metadata(&img)
                            .map(|m| m.len())
                            .map_err(StorageError::io(format!("cannot stat {}", img.display())))
                    })
                    .unwrap_or(0),
            };
            out.push(Entry {
                name: name.to_string(),
                kind,
                size,
                used: number(p, "used"),
                origin,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn clone_template(&self, template: &str, disk: &DiskRef) -> Result<PathBuf> {
        check_name("template", template)?;
        let base = format!("{}@{BASE_SNAPSHOT}", self.template_ds(template));
        if !self.zfs.exists(&base)? {
            return Err(StorageError::not_found(self, "template", template));
        }
        self.clone_as_disk(&base, disk)
    }

    fn disk_path(&self, disk: &DiskRef) -> Result<PathBuf> {
        let ds = self.require_disk(disk)?;
        self.image_of(&ds)
    }

    fn disk_exists(&self, disk: &DiskRef) -> Result<bool> {
        self.zfs.exists(&self.disk_ds(disk))
    }

    fn snapshot(&self, snap: &SnapRef) -> Result<()> {
        let ds = self.require_disk(&snap.disk)?;
        let name = format!("{ds}@{}", snap.snap);
        if self.zfs.exists(&name)? {
            return Err(StorageError::exists(self, "Snapshot", snap));
        }
        self.zfs.zfs(&["snapshot", &name]).map(drop)
    }

    fn clone_snapshot(&self, snap: &SnapRef, disk: &DiskRef) -> Result<PathBuf> {
        let source = format!("{}@{}", self.disk_ds(&snap.disk), snap.snap);
        if !self.zfs.exists(&source)? {
            return Err(StorageError::not_found(self, "snapshot", snap));
        }
        self.clone_as_disk(&source, disk)
    }

    fn checkpoints_dir(&self) -> Result<PathBuf> {
        let dir = self.mountpoint(&self.parent)?.join("checkpoints");
        super::create_private_dirs(&dir)?;
        Ok(dir)
    }

    fn rollback(&self, snap: &SnapRef, force: bool) -> Result<()> {
        let ds = self.require_disk(&snap.disk)?;
        let name = format!("{ds}@{}", snap.snap);
        if !self.zfs.exists(&name)? {
            return Err(StorageError::not_found(self, "snapshot", snap));
        }
        self.refuse_if_in_use(&snap.disk, force)?;
        // -r: later snapshots go, as ZFS can only roll back to the latest one.
        self.zfs.zfs(&["rollback", "-r", &name]).map(drop)
    }

    fn destroy(&self, target: &Target, force: bool) -> Result<()> {
        match target {
            Target::Template(name) => {
                let ds = self.template_ds(name);
                if !self.zfs.exists(&ds)? {
                    return Err(StorageError::not_found(self, "template", name));
                }
                let clones = self.clones_of(name)?;
                if !clones.is_empty() {
                    return Err(StorageError::TemplateInUse {
                        name: name.clone(),
                        disks: clones,
                    });
                }
                self.zfs.destroy(&["-r", &ds])
            }
            Target::Disk(disk) => {
                let ds = self.require_disk(disk)?;
                self.refuse_if_in_use(disk, force)?;
                // The VM's dataset goes with its last disk, in the same command: a separate
                // destroy of the parent can find it still busy with the child's unmount.
                let vm = self.vm_ds(&disk.vm);
                let under_vm = self.zfs.zfs(&["list", "-H", "-o", "name", "-r", &vm])?;
                let last = under_vm
                    .lines()
                    .all(|name| name == vm || name == ds || name.starts_with(&format!("{ds}@")));
                let mut args = vec!["-r"];
                if force {
                    args.push("-f");
                }
                args.push(if last { &vm } else { &ds });
                self.zfs.destroy(&args)
            }
            Target::Snapshot(snap) => {
                let ds = self.require_disk(&snap.disk)?;
                let name = format!("{ds}@{}", snap.snap);
                if !self.zfs.exists(&name)? {
                    return Err(StorageError::not_found(self, "snapshot", snap));
                }
                self.zfs.destroy(&[&name])
            }
        }
    }

    fn send(&self, source: &Target, out: &mut dyn Write) -> Result<u64> {
        let snapshot = match source {
            Target::Template(name) => {
                let base = format!("{}@{BASE_SNAPSHOT}", self.template_ds(name));
                if !self.zfs.exists(&base)? {
                    return Err(StorageError::not_found(self, "template", name));
                }
                base
            }
            Target::Snapshot(snap) => {
                let name = format!("{}@{}", self.require_disk(&snap.disk)?, snap.snap);
                if !self.zfs.exists(&name)? {
                    return Err(StorageError::not_found(self, "snapshot", snap));
                }
                name
            }
            Target::Disk(disk) => {
                // The disk as it is now: through a snapshot made for the send, and removed
                // after it (the receiving side keeps it).
                let ds = self.require_disk(disk)?;
                let name = format!(
                    "{ds}@fennec-send-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                );
                self.zfs.zfs(&["snapshot", &name])?;
                let sent = self.zfs.zfs_to(&["send", &name], out);
                if let Err(e) = self.zfs.destroy(&[&name]) {
                    log::warn!("Could not remove the snapshot made for the send: {e}");
                }
                return sent;
            }
        };
        self.zfs.zfs_to(&["send", &snapshot], out)
    }

    fn receive(&self, disk: &DiskRef, input: &mut dyn Read) -> Result<PathBuf> {
        let mut undo = Undo::default();
        let ds = self.new_disk_place(disk, &mut undo)?;
        // What arrives is the sender's: its setuid programs and device nodes must mean
        // nothing on this host, from the moment it is mounted. The VM's dataset passes that
        // on to what is received beneath it.
        self.harmless(&self.vm_ds(&disk.vm))?;
        // What a stream may set is checked before ZFS sees it: a stream with properties could
        // mount itself anywhere as it arrives.
        let head = stream_head(input).map_err(|why| StorageError::BadStream {
            disk: disk.to_string(),
            why,
        })?;
        let mut stream = io::Cursor::new(head).chain(input);
        let received = self.zfs.zfs_from(&["receive", &ds], &mut stream);
        // Whatever a failed receive left (zfs-fuse may leave a partial dataset) goes too.
        self.undo_destroy(&ds, &mut undo);
        received?;
        // A template's stream arrives read-only.
        self.zfs.zfs(&["set", "readonly=off", &ds])?;
        // And whatever it arrived with, the disk's own dataset says so too.
        self.harmless(&ds)?;
        // The stream is the sender's: its disk.img must be a file of its own, not a link to
        // something of this host's (a device, a secret) that a VM would then open.
        let image = self.image_of(&ds)?;
        if !fs::symlink_metadata(&image).is_ok_and(|m| m.file_type().is_file()) {
            return Err(StorageError::NotADisk(disk.to_string()));
        }
        undo.commit();
        Ok(image)
    }
}

/// The first record of a `zfs send` stream (`DRR_BEGIN` in a `dmu_replay_record`): its type
/// and payload length, the magic, the version and feature word, ..., 312 bytes in all.
const BEGIN_RECORD_LEN: usize = 312;
/// `DMU_BACKUP_MAGIC`.
const STREAM_MAGIC: u64 = 0x2_f5ba_cbac;
/// The stream kind in the low bits of the version word: one dataset's changes, or a compound
/// stream (`zfs send -p` or `-R`) that carries properties and may hold many datasets.
const COMPOUND_STREAM: u64 = 2;

/// Reads the first record of a stream and checks it is one `fennec image send` writes: a plain
/// stream of one dataset, without properties (which could set its own mountpoint and mount
/// itself over any directory of this host as it arrives, or share itself). Returns the bytes
/// read, to give to `zfs receive` before the rest.
fn stream_head(input: &mut dyn Read) -> std::result::Result<Vec<u8>, String> {
    let mut head = vec![0u8; BEGIN_RECORD_LEN];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read it: {e}")),
        }
    }
    if got < BEGIN_RECORD_LEN {
        return Err(format!("{got} bytes is not a zfs send stream"));
    }
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let (magic, version) = (word(8), word(16));
    let version = if magic == STREAM_MAGIC {
        version
    } else if magic.swap_bytes() == STREAM_MAGIC {
        version.swap_bytes()
    } else {
        return Err("it is not a zfs send stream (no stream magic)".into());
    };
    if head[0..4] != [0; 4] {
        return Err("it does not begin with a stream's first record".into());
    }
    if version & 3 == COMPOUND_STREAM {
        return Err(
            "it carries dataset properties or more than one dataset (zfs send -p or \
             -R); fennec takes plain streams, as fennec image send writes them"
                .into(),
        );
    }
    Ok(head)
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn record(magic: u64, version: u64) -> Vec<u8> {
        let mut r = vec![0u8; BEGIN_RECORD_LEN + 100];
        r[8..16].copy_from_slice(&magic.to_le_bytes());
        r[16..24].copy_from_slice(&version.to_le_bytes());
        r
    }

    #[test]
    fn test_plain_streams_pass_and_compound_or_foreign_ones_are_refused() {
        let plain = record(STREAM_MAGIC, 0x11 << 2 | 1);
        assert_eq!(
            stream_head(&mut &plain[..]).unwrap(),
            plain[..BEGIN_RECORD_LEN]
        );
        // The other byte order.
        let mut swapped = record(STREAM_MAGIC.swap_bytes(), (1u64).swap_bytes());
        assert!(stream_head(&mut &swapped[..]).is_ok());
        swapped[16..24].copy_from_slice(&2u64.swap_bytes().to_le_bytes());
        assert!(stream_head(&mut &swapped[..])
            .unwrap_err()
            .contains("zfs send -p"));
        let compound = record(STREAM_MAGIC, 0x11 << 2 | COMPOUND_STREAM);
        assert!(stream_head(&mut &compound[..])
            .unwrap_err()
            .contains("properties"));
        let foreign = record(0x1234, 1);
        assert!(stream_head(&mut &foreign[..])
            .unwrap_err()
            .contains("no stream magic"));
        assert!(stream_head(&mut &[0u8; 100][..])
            .unwrap_err()
            .contains("100 bytes"));
        let mut not_first = plain.clone();
        not_first[0] = 7;
        assert!(stream_head(&mut &not_first[..]).is_err());
    }
}
