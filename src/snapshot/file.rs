//! The snapshot files on disk: the state file's header, checksum and payload, and the memory
//! file (written sparsely, mapped privately).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use vm_memory::mmap::MmapRegion;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use super::error::SnapshotError;
use super::state::SnapshotState;

/// What a state file starts with.
const MAGIC: &[u8; 8] = b"FNECSNAP";
/// The state file's format; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 2;
/// Magic, version, payload length, CRC-32.
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// The largest payload read (a state is some kilobytes per vCPU).
const MAX_PAYLOAD: u64 = 64 << 20;
/// The unit of the memory file's holes.
const PAGE: usize = 4096;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A file being written in place of `path`: made beside it under a name of its own (mode
/// 0600), and renamed over `path` only once whole and synced. The file `path` names until
/// then is never changed: a VM restored from it may have it mapped (`MAP_PRIVATE` reads the
/// pages it has not written from the file), and a crash halfway leaves it whole.
struct Replacement {
    file: File,
    /// Until it is committed.
    temporary: Option<std::path::PathBuf>,
}

impl Replacement {
    fn new(path: &Path) -> Result<Self, SnapshotError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temporary = path.with_file_name(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io(&temporary))?;
        Ok(Replacement {
            file,
            temporary: Some(temporary),
        })
    }

    /// Syncs the file and puts it in place of `path`.
    fn commit(mut self, path: &Path) -> Result<(), SnapshotError> {
        self.file.sync_all().map_err(io(path))?;
        if let Some(temporary) = &self.temporary {
            std::fs::rename(temporary, path).map_err(io(path))?;
        }
        self.temporary = None;
        // The rename itself, durable with the directory.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Replacement {
    /// A replacement not committed (an error halfway) is removed.
    fn drop(&mut self) {
        if let Some(temporary) = &self.temporary {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

/// Writes `state` to `path` and syncs it.
pub fn write_state(path: &Path, state: &SnapshotState) -> Result<(), SnapshotError> {
    let payload = serde_json::to_vec(state).map_err(|e| SnapshotError::Parse {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let mut replacement = Replacement::new(path)?;
    replacement
        .file
        .write_all(&framed(&payload))
        .map_err(io(path))?;
    replacement.commit(path)
}

/// A state file's bytes around `payload`: the magic, the format version, the payload's length
/// and its CRC-32, then the payload (what [`read_state`] checks before it parses anything).
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the state file at `path`, checking its header and checksum before parsing.
pub fn read_state(path: &Path) -> Result<SnapshotState, SnapshotError> {
    let name = || path.display().to_string();
    let not = |why: &str| SnapshotError::NotASnapshot {
        path: name(),
        why: why.to_string(),
    };
    let mut file = File::open(path).map_err(io(path))?;
    trusted_writer(&file, path)?;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)
        .map_err(|_| not("shorter than its header"))?;
    if &header[..8] != MAGIC {
        return Err(not("no FNECSNAP header"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path: name(),
            found: version,
            reads: FORMAT_VERSION,
        });
    }
    let len = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(header[20..24].try_into().unwrap_or_default());
    if len > MAX_PAYLOAD {
        return Err(not("its header claims an impossible length"));
    }
    let mut payload = Vec::with_capacity(len as usize);
    file.take(len + 1)
        .read_to_end(&mut payload)
        .map_err(io(path))?;
    if payload.len() as u64 != len {
        return Err(not(&format!(
            "truncated: {} bytes of state where its header says {len}",
            payload.len()
        )));
    }
    if crc32fast::hash(&payload) != crc {
        return Err(SnapshotError::Checksum { path: name() });
    }
    serde_json::from_slice(&payload).map_err(|e| SnapshotError::Parse {
        path: name(),
        why: e.to_string(),
    })
}

/// Refuses a state file that a uid other than fennec's or root owns, or that its group or
/// everyone may write: the drive images and TAPs it names are opened as named, and a state
/// file someone less trusted wrote could name any of the host's.
fn trusted_writer(file: &File, path: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(io(path))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let why = if meta.uid() != euid && meta.uid() != 0 {
        format!(
            "is owned by uid {}, not fennec's ({euid}) or root",
            meta.uid()
        )
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "may be written by its group or by everyone (mode {:o})",
            meta.mode() & 0o777
        )
    } else {
        return Ok(());
    };
    Err(SnapshotError::Untrusted {
        path: path.display().to_string(),
        why,
    })
}

/// Writes guest RAM to `path`, region after region; pages of zeros are left as holes.
pub fn write_memory(path: &Path, mem: &GuestMemoryMmap) -> Result<(), SnapshotError> {
    let replacement = Replacement::new(path)?;
    let file = &replacement.file;
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(total).map_err(io(path))?;
    let mut offset = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut page = vec![0u8; PAGE];
        let mut done = 0usize;
        while done < len {
            let n = PAGE.min(len - done);
            let buf = &mut page[..n];
            vm_memory::Bytes::read_slice(
                mem,
                buf,
                GuestAddress(region.start_addr().0 + done as u64),
            )
            .map_err(|e| SnapshotError::Memory {
                path: path.display().to_string(),
                why: format!("cannot read guest memory: {e}"),
            })?;
            if buf.iter().any(|&b| b != 0) {
                file.write_all_at(buf, offset + done as u64)
                    .map_err(io(path))?;
            }
            done += n;
        }
        offset += len as u64;
    }
    replacement.commit(path)
}

/// Maps the memory file at `path` as guest RAM laid out as `regions` (guest address,
/// length), privately: the guest's writes stay in this process, the file is only read.
pub fn map_memory(path: &Path, regions: &[(u64, u64)]) -> Result<GuestMemoryMmap, SnapshotError> {
    let mut file = File::open(path).map_err(io(path))?;
    let size = file.seek(SeekFrom::End(0)).map_err(io(path))?;
    let wanted: u64 = regions.iter().map(|(_, len)| len).sum();
    if size != wanted {
        return Err(SnapshotError::Memory {
            path: path.display().to_string(),
            why: format!(
                "the memory file has {size} bytes where the snapshot's VM has {wanted} of RAM"
            ),
        });
    }
    let mut mapped = Vec::with_capacity(regions.len());
    let mut offset = 0u64;
    for &(start, len) in regions {
        let clone = file.try_clone().map_err(io(path))?;
        let region = MmapRegion::build(
            Some(FileOffset::new(clone, offset)),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE | libc::MAP_PRIVATE,
        )
        .map_err(|e| SnapshotError::Memory {
            path: path.display().to_string(),
            why: format!("cannot map it: {e}"),
        })?;
        let region = GuestRegionMmap::new(region, GuestAddress(start)).ok_or_else(|| {
            SnapshotError::Memory {
                path: path.display().to_string(),
                why: format!("region at {start:#x} does not fit the address space"),
            }
        })?;
        mapped.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|e| SnapshotError::Memory {
        path: path.display().to_string(),
        why: format!("the regions do not make guest memory: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, payload: &[u8], crc: u32) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn read(bytes: &[u8]) -> Result<SnapshotState, SnapshotError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, bytes).unwrap();
        read_state(&path)
    }

    #[test]
    fn test_state_file_header_checks() {
        let payload = b"{}";
        let good_crc = crc32fast::hash(payload);
        assert!(matches!(
            read(&header(FORMAT_VERSION, payload, good_crc)),
            Err(SnapshotError::Parse { .. })
        ));
        assert!(matches!(
            read(&header(FORMAT_VERSION + 1, payload, good_crc)),
            Err(SnapshotError::Version { found, .. }) if found == FORMAT_VERSION + 1
        ));
        assert!(matches!(
            read(&header(FORMAT_VERSION, payload, good_crc ^ 1)),
            Err(SnapshotError::Checksum { .. })
        ));
        let mut short = header(FORMAT_VERSION, payload, good_crc);
        short.pop();
        assert!(matches!(
            read(&short),
            Err(SnapshotError::NotASnapshot { .. })
        ));
        let mut huge = header(FORMAT_VERSION, payload, good_crc);
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read(&huge),
            Err(SnapshotError::NotASnapshot { .. })
        ));
        assert!(matches!(
            read(b"FNEC"),
            Err(SnapshotError::NotASnapshot { .. })
        ));
    }

    proptest::proptest! {
        /// No bytes panic the reader: a state file is refused or parsed.
        #[test]
        fn test_state_file_arbitrary_bytes_never_panic(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            whole in proptest::bool::ANY,
        ) {
            let bytes = if whole {
                header(FORMAT_VERSION, &tail, crc32fast::hash(&tail))
            } else {
                let mut b = MAGIC.to_vec();
                b.extend_from_slice(&tail);
                b
            };
            let _ = read(&bytes);
        }
    }
}
