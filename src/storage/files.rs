//! Image files: whether one is in use, private directories, sparse copies, and undoing the
//! steps of an operation that failed halfway.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::error::{Result, StorageError};
use super::store::Progress;

/// Whether a VM has the image at `path` open: fennec's block device holds a `flock` on every
/// image it serves (exclusive when writable, shared when read-only), so an exclusive
/// non-blocking lock fails exactly when one does.
pub fn image_in_use(path: &Path) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(StorageError::io(format!("cannot open {}", path.display()))(
                e,
            ))
        }
    };
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(false); // The lock goes with `file`.
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(true)
    } else {
        Err(StorageError::io(format!("cannot lock {}", path.display()))(
            e,
        ))
    }
}

/// The mode of every image a store writes: the guest's data is root's alone.
pub const PRIVATE_FILE: u32 = 0o600;
/// The mode of every directory a store makes.
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and its missing parents with [`PRIVATE_DIR`].
pub fn create_private_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(StorageError::io(format!("cannot create {}", dir.display())))
}

/// The size of the chunks [`copy_image`] moves, and the unit of hole detection.
pub(super) const COPY_CHUNK: usize = 1 << 20;

/// Copies `src` into the new file `dst` (which must not exist): a `FICLONE` reflink when the
/// filesystem can share blocks, otherwise a copy that leaves all-zero megabytes as holes.
/// The result is synced to disk. Returns whether it was a reflink.
pub fn copy_image(src: &Path, dst: &Path, progress: Progress<'_>) -> Result<bool> {
    let mut input =
        File::open(src).map_err(StorageError::io(format!("cannot open {}", src.display())))?;
    let len = input
        .metadata()
        .map_err(StorageError::io(format!("cannot stat {}", src.display())))?
        .len();
    let mut output = File::options()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(dst)
        .map_err(StorageError::io(format!("cannot create {}", dst.display())))?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // for the duration of the call and no memory is shared.
    let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) } == 0;
    if cloned {
        progress(len);
    } else {
        copy_sparse(&mut input, &mut output, progress).map_err(StorageError::io(format!(
            "cannot copy {} to {}",
            src.display(),
            dst.display()
        )))?;
    }
    output
        .sync_all()
        .map_err(StorageError::io(format!("cannot sync {}", dst.display())))?;
    Ok(cloned)
}

/// Streams `input` into `output` (positioned at 0) until EOF, seeking over all-zero chunks.
/// Sets the final length, so trailing holes are kept.
pub fn copy_sparse(
    input: &mut dyn Read,
    output: &mut File,
    progress: Progress<'_>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk.iter().all(|&b| b == 0) {
            output.seek(SeekFrom::Current(filled as u64 as i64))?;
        } else {
            output.write_all(chunk)?;
        }
        done += filled as u64;
        progress(done);
        if filled < buf.len() {
            break;
        }
    }
    output.set_len(done)?;
    Ok(done)
}

/// Undoes the steps of an operation that failed part-way: each registered action runs, last
/// first, unless [`Undo::commit`] was called.
#[derive(Default)]
pub(crate) struct Undo {
    steps: Vec<(String, UndoStep)>,
}

type UndoStep = Box<dyn FnOnce() -> Result<()>>;

impl Undo {
    /// Registers `step`, described by `what` for the log if it fails.
    pub(crate) fn push(&mut self, what: String, step: impl FnOnce() -> Result<()> + 'static) {
        self.steps.push((what, Box::new(step)));
    }

    /// The operation succeeded: keep what it made.
    pub(crate) fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            match step() {
                Ok(()) => log::debug!("Undid: {what}"),
                Err(e) => log::error!("Could not undo {what}: {e}"),
            }
        }
    }
}
