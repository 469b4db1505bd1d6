//! Random bytes from the host kernel (`getrandom(2)`), for the guest's entropy device and the
//! metadata service's session tokens.
//!
//! fennec is linked statically, where the `getrandom` crate cannot find glibc's wrapper and
//! falls back to opening `/dev/urandom`, which Landlock forbids once the VM runs; this calls
//! the syscall itself, which every thread role's filter allows.

/// Fills `buf` from the kernel's random source (blocking only until the kernel's pool is
/// initialized, at boot).
pub fn fill(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, a live buffer we
        // borrow mutably for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_fill_gives_fresh_bytes() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, b);
        super::fill(&mut []).unwrap();
    }
}
