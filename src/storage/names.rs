//! The names of things in a store (templates, VM disks, snapshots) and what a name may be: a
//! name never leaves its store.

use std::fmt;

use super::error::{Result, StorageError};

/// Checks one name component (a template, VM, disk or snapshot name): 1 to 64 of
/// `A-Z a-z 0-9 _ - . :`, not starting with `-` or `.`. That keeps every name inside the
/// store (no `/`, no `..`), leaves `@` to separate snapshots, and is a valid ZFS component.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |why| {
        Err(StorageError::BadName {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("use 1 to 64 characters");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return bad("it may not start with '-' or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return bad("use only A-Z a-z 0-9 _ - . : (no '/', '@' or spaces)");
    }
    Ok(())
}

/// A VM disk: `VM/DISK`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiskRef {
    /// The VM it belongs to.
    pub vm: String,
    /// The disk's name within the VM.
    pub disk: String,
}

impl DiskRef {
    /// A checked `VM/DISK`.
    pub fn new(vm: &str, disk: &str) -> Result<Self> {
        check_name("VM", vm)?;
        check_name("disk", disk)?;
        Ok(DiskRef {
            vm: vm.to_string(),
            disk: disk.to_string(),
        })
    }

    /// Parses `VM/DISK`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('/') {
            Some((vm, disk)) => DiskRef::new(vm, disk),
            None => Err(StorageError::BadName {
                what: "disk",
                name: s.to_string(),
                why: "expected VM/DISK",
            }),
        }
    }
}

impl fmt::Display for DiskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vm, self.disk)
    }
}

/// A snapshot of a VM disk: `VM/DISK@SNAP`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapRef {
    /// The disk.
    pub disk: DiskRef,
    /// The snapshot's name.
    pub snap: String,
}

impl SnapRef {
    /// A checked snapshot name of `disk`.
    pub fn new(disk: DiskRef, snap: &str) -> Result<Self> {
        check_name("snapshot", snap)?;
        Ok(SnapRef {
            disk,
            snap: snap.to_string(),
        })
    }

    /// Parses `VM/DISK@SNAP`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('@') {
            Some((disk, snap)) => SnapRef::new(DiskRef::parse(disk)?, snap),
            None => Err(StorageError::BadName {
                what: "snapshot",
                name: s.to_string(),
                why: "expected VM/DISK@SNAP",
            }),
        }
    }
}

impl fmt::Display for SnapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.disk, self.snap)
    }
}

/// Anything a store holds, as named on the command line: `NAME` (a template), `VM/DISK`, or
/// `VM/DISK@SNAP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A template.
    Template(String),
    /// A VM disk.
    Disk(DiskRef),
    /// A snapshot of a VM disk.
    Snapshot(SnapRef),
}

impl Target {
    /// Parses a target by its shape.
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains('@') {
            SnapRef::parse(s).map(Target::Snapshot)
        } else if s.contains('/') {
            DiskRef::parse(s).map(Target::Disk)
        } else {
            check_name("template", s)?;
            Ok(Target::Template(s.to_string()))
        }
    }
}
