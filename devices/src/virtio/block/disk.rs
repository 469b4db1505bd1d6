//! The file (or block device) behind a drive: vectored positional I/O straight between the image
//! and guest memory, `fdatasync` for flushes, `fallocate` for discard and write-zeroes, and an
//! `flock` so two VMMs cannot open the same writable image.
//!
//! This is the one module of the crate with `unsafe` code: `preadv`/`pwritev` on pointers into
//! guest memory (no copy through a bounce buffer), `flock` and `fallocate`. Each call says why
//! its arguments are valid.
#![allow(unsafe_code)]

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vm_memory::VolatileSlice;

use super::request::DiskBackend;

/// Errors opening a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image could not be opened.
    #[error("Cannot open disk image {path}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path names something that is not a disk (a FIFO, a character device, a directory).
    #[error("Disk image {path} is {kind}: a drive is a regular file or a block device")]
    NotADisk {
        /// The image.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Another process holds the image.
    #[error("Disk image {path} is in use by another VM (it is locked)")]
    Locked {
        /// The image.
        path: PathBuf,
    },
    /// The image could not be locked or sized.
    #[error("Cannot use disk image {path}")]
    Io {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What kind of file `t` is, for an error that refuses it.
pub fn file_kind(t: FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a regular file"
    }
}

/// An open, locked disk image.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    size: u64,
    discard: bool,
}

/// Most iovecs one `preadv`/`pwritev` takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

impl DiskFile {
    /// Opens `path`, read-only or read-write, and locks it: exclusively for read-write, shared
    /// for read-only, so a writer never shares its image with anyone.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let err = |source| DiskError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Non-blocking, so a FIFO (or a device that waits for a peer) cannot stall the open;
        // what was opened is then checked on the descriptor itself, whatever the path pointed
        // to by the time it was opened.
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let file_type = file.metadata().map_err(err)?.file_type();
        if !(file_type.is_file() || file_type.is_block_device()) {
            return Err(DiskError::NotADisk {
                path: path.to_path_buf(),
                kind: file_kind(file_type),
            });
        }
        // Blocking again: O_NONBLOCK is the only status flag set, and 0 clears it.
        // SAFETY: F_SETFL on a descriptor we own takes an int of flags and touches no memory.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        let op = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock only reads its arguments; `file` is an open descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                DiskError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                err(e)
            });
        }
        let size = file.seek(SeekFrom::End(0)).map_err(err)?;
        let discard = file_type.is_file();
        Ok(DiskFile {
            file,
            size,
            discard,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether discard and write-zeroes can deallocate (a regular file).
    pub fn supports_discard(&self) -> bool {
        self.discard
    }

    fn vectored(&self, bufs: &[VolatileSlice<'_>], mut offset: u64, write: bool) -> io::Result<()> {
        // The guards keep the slices' pointers valid while the iovecs use them.
        let guards: Vec<_> = bufs.iter().map(|b| b.ptr_guard_mut()).collect();
        let mut iovecs: Vec<libc::iovec> = guards
            .iter()
            .zip(bufs)
            .filter(|(_, b)| !b.is_empty())
            .map(|(g, b)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut first = 0;
        while first < iovecs.len() {
            let batch = &iovecs[first..(first + IOV_MAX).min(iovecs.len())];
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let fd = self.file.as_raw_fd();
            // SAFETY: each iovec covers a VolatileSlice of guest memory, a live mapping owned by
            // GuestMemoryMmap that the caller borrows for this call and whose guard is held in
            // `guards`; the kernel reads (pwritev) or writes (preadv) at most iov_len bytes of
            // each. `batch` has at most IOV_MAX entries, so the count fits in c_int.
            let done = unsafe {
                if write {
                    libc::pwritev(fd, batch.as_ptr(), batch.len() as libc::c_int, off)
                } else {
                    libc::preadv(fd, batch.as_ptr(), batch.len() as libc::c_int, off)
                }
            };
            if done < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if done == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut done = done as usize;
            offset += done as u64;
            // Step past what was transferred: whole iovecs, then part of one.
            while done > 0 {
                let iov = &mut iovecs[first];
                if done >= iov.iov_len {
                    done -= iov.iov_len;
                    first += 1;
                } else {
                    // SAFETY: `done < iov_len`, so the new base stays inside the same slice.
                    iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(done).cast() };
                    iov.iov_len -= done;
                    done = 0;
                }
            }
        }
        drop(guards);
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: fallocate only reads its integer arguments; the descriptor is ours and open.
        if unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zero_bytes(&self, mut offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

impl DiskBackend for DiskFile {
    fn read_at(&mut self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        self.vectored(bufs, offset, false)
    }

    fn write_at(&mut self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
        self.vectored(bufs, offset, true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            // Discard is a hint: a filesystem that cannot punch holes keeps the data.
            Err(e) if unsupported(&e) => Ok(()),
            other => other,
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Err(e) if unsupported(&e) => self.write_zero_bytes(offset, len),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    fn image(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        f.write_all(&bytes).unwrap();
        f
    }

    #[test]
    fn test_disk_open_reports_size() {
        let f = image(8192);
        assert_eq!(DiskFile::open(f.path(), true).unwrap().size(), 8192);
    }

    #[test]
    fn test_disk_second_writer_is_locked_out() {
        let f = image(4096);
        let _first = DiskFile::open(f.path(), false).unwrap();
        let second = DiskFile::open(f.path(), false);
        assert!(matches!(second, Err(DiskError::Locked { .. })));
        let reader = DiskFile::open(f.path(), true);
        assert!(matches!(reader, Err(DiskError::Locked { .. })));
    }

    #[test]
    fn test_disk_two_readers_share() {
        let f = image(4096);
        let _a = DiskFile::open(f.path(), true).unwrap();
        assert!(DiskFile::open(f.path(), true).is_ok());
    }

    /// A FIFO (whose open would wait for a writer), a character device and a directory are
    /// refused at once, named for what they are.
    #[test]
    fn test_disk_that_is_not_a_file_or_block_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path, which outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/null"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            for read_only in [true, false] {
                match DiskFile::open(path, read_only) {
                    Err(DiskError::NotADisk { kind: k, .. }) => assert_eq!(k, kind),
                    // A directory cannot even be opened for writing.
                    Err(DiskError::Open { .. }) if kind == "a directory" && !read_only => {}
                    other => panic!("{path:?} (read-only {read_only}): {other:?}"),
                }
            }
        }
    }

    #[test]
    fn test_disk_missing_file_is_open_error() {
        let r = DiskFile::open(Path::new("/nonexistent/disk.img"), true);
        assert!(matches!(r, Err(DiskError::Open { .. })));
    }

    #[test]
    fn test_disk_vectored_read_and_write_round_trip() {
        let f = image(16384);
        let mut disk = DiskFile::open(f.path(), false).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.write_slice(&[7u8; 1000], GuestAddress(0x100)).unwrap();
        mem.write_slice(&[9u8; 3096], GuestAddress(0x2000)).unwrap();
        let bufs = [
            mem.get_slice(GuestAddress(0x100), 1000).unwrap(),
            mem.get_slice(GuestAddress(0x2000), 3096).unwrap(),
        ];
        disk.write_at(&bufs, 512).unwrap();
        let back = [mem.get_slice(GuestAddress(0x8000), 4096).unwrap()];
        disk.read_at(&back, 512).unwrap();
        let mut got = vec![0u8; 4096];
        mem.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(&got[..1000], &[7u8; 1000][..]);
        assert_eq!(&got[1000..], &[9u8; 3096][..]);
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(&on_disk[512..1512], &[7u8; 1000][..]);
    }

    #[test]
    fn test_disk_read_past_end_is_error() {
        let f = image(1024);
        let mut disk = DiskFile::open(f.path(), true).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let bufs = [mem.get_slice(GuestAddress(0), 4096).unwrap()];
        assert!(disk.read_at(&bufs, 512).is_err());
    }

    #[test]
    fn test_disk_write_zeroes_and_discard_read_back_zero() {
        let f = image(16384);
        let mut disk = DiskFile::open(f.path(), false).unwrap();
        disk.write_zeroes(4096, 4096, false).unwrap();
        disk.discard(8192, 4096).unwrap();
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(on_disk.len(), 16384);
        assert!(on_disk[4096..12288].iter().all(|&b| b == 0));
        assert_ne!(on_disk[12288], 0);
    }
}
