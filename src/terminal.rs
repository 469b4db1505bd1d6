//! Raw terminal mode for an interactive serial console.
//!
//! In raw mode every key, Ctrl-C included, goes to the guest, and the guest's own line discipline
//! echoes. [`RawTerminal`] restores the saved settings when dropped, so every way out of the
//! process that unwinds (return, error, panic) leaves the terminal as it found it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A terminal switched to raw mode; dropping it restores the original mode.
pub struct RawTerminal<'a> {
    fd: BorrowedFd<'a>,
    saved: libc::termios,
}

impl<'a> RawTerminal<'a> {
    /// Switches `fd` to raw mode if it is a terminal; `Ok(None)` if it is not.
    pub fn enter(fd: BorrowedFd<'a>) -> io::Result<Option<Self>> {
        // SAFETY: isatty only inspects the fd, which `BorrowedFd` guarantees is open.
        if unsafe { libc::isatty(fd.as_raw_fd()) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain data; all-zero is a valid value that tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios and the fd is open.
        if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only modifies the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios and the fd is open.
        if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawTerminal { fd, saved }))
    }
}

impl Drop for RawTerminal<'_> {
    fn drop(&mut self) {
        // SAFETY: `saved` came from tcgetattr on this fd, which the borrow keeps open.
        if unsafe { libc::tcsetattr(self.fd.as_raw_fd(), libc::TCSANOW, &self.saved) } != 0 {
            log::warn!(
                "Failed to restore the terminal: {}",
                io::Error::last_os_error()
            );
        }
    }
}
