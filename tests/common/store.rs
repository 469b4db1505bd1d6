//! An image store for one test: a zfs-fuse pool on a file vdev, or a plain directory, driven
//! through `fennec image`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::zfs::TestPool;
use super::{pattern, require_kvm};

/// A sector.
pub const SECTOR: usize = 512;
/// The size of the standard template.
pub const TEMPLATE_LEN: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Zfs,
    Dir,
}

/// A store for one test: a pool (ZFS) or a temp dir.
pub struct TestStore {
    pub spec: String,
    pub pool: Option<TestPool>,
    /// Scratch space for the test's files.
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new(backend: Backend) -> Self {
        require_kvm();
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Zfs => {
                let pool = TestPool::new(128);
                TestStore {
                    spec: pool.spec(),
                    pool: Some(pool),
                    dir,
                }
            }
            Backend::Dir => {
                let store = dir.path().join("store");
                std::fs::create_dir(&store).unwrap();
                TestStore {
                    spec: format!("dir:{}", store.display()),
                    pool: None,
                    dir,
                }
            }
        }
    }

    /// Everything the store holds: `zfs list -t all`, or every file under the directory
    /// with its size.
    pub fn state(&self) -> String {
        match &self.pool {
            Some(pool) => pool.listing(),
            None => {
                let mut lines = Vec::new();
                walk(
                    Path::new(self.spec.strip_prefix("dir:").unwrap()),
                    &mut lines,
                );
                lines.sort();
                lines.join("\n")
            }
        }
    }

    /// `fennec image --store SPEC ARGS...`.
    pub fn image(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fennec"))
            .args(["image", "--store", &self.spec])
            .args(args)
            .output()
            .unwrap()
    }

    /// `fennec image ...`, which must succeed; its stdout.
    pub fn image_ok(&self, args: &[&str]) -> String {
        let out = self.image(args);
        assert!(
            out.status.success(),
            "fennec image {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `fennec image ...`, which must fail with `message` on stderr and change nothing.
    pub fn image_refused(&self, args: &[&str], message: &str) {
        let before = self.state();
        let out = self.image(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} did not fail: {stderr}"
        );
        assert!(
            stderr.contains(message),
            "{args:?}: expected {message:?} in: {stderr}"
        );
        assert_eq!(self.state(), before, "{args:?} changed the store");
    }

    /// Imports the standard 1 MiB template as `name`; returns its bytes.
    pub fn import(&self, name: &str) -> Vec<u8> {
        let bytes = pattern(TEMPLATE_LEN, 42);
        let file = self.dir.path().join(format!("{name}.img"));
        std::fs::write(&file, &bytes).unwrap();
        self.image_ok(&["import", name, file.to_str().unwrap()]);
        bytes
    }

    pub fn path(&self, disk: &str) -> PathBuf {
        PathBuf::from(self.image_ok(&["path", disk]))
    }

    /// The `--disk` argument for template `t` kept as VM `vm`'s disk0.
    pub fn disk_arg(&self, template: &str, vm: &str) -> String {
        format!("template={template},store={},vm={vm}", self.spec)
    }
}

pub fn walk(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.push(format!("{}/", entry.path().display()));
            walk(&entry.path(), out);
        } else {
            out.push(format!("{} {}", entry.path().display(), meta.len()));
        }
    }
}
