//! Warnings a guest can cause at will (a sleep state fennec lacks, a queue setup that cannot
//! start, offloads the TAP refuses): each call site logs the first [`LOGGED`], says so on the
//! last of them, and then only counts, so a guest that repeats itself cannot fill the host's
//! log. Use [`warn_guest!`](crate::warn_guest).

use std::sync::atomic::{AtomicU32, Ordering};

/// How many times one call site logs.
pub const LOGGED: u32 = 10;

/// Counts one more occurrence at the call site whose counter is `seen`: `None` when it is not
/// logged any more, `Some(true)` for the last one logged, `Some(false)` before that.
pub fn next(seen: &AtomicU32) -> Option<bool> {
    let before = seen
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
        .unwrap_or(u32::MAX);
    (before < LOGGED).then(|| before + 1 == LOGGED)
}

/// `log::warn!` for something the guest can repeat at will: the first
/// [`LOGGED`](crate::guest_log::LOGGED) times at this call site, then not again.
#[macro_export]
macro_rules! warn_guest {
    ($($arg:tt)+) => {{
        static SEEN: ::std::sync::atomic::AtomicU32 = ::std::sync::atomic::AtomicU32::new(0);
        match $crate::guest_log::next(&SEEN) {
            Some(false) => log::warn!($($arg)+),
            Some(true) => log::warn!(
                "{} (the guest keeps doing this; not logged again)",
                format_args!($($arg)+)
            ),
            None => {}
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_call_site_logs_ten_times_then_stays_quiet() {
        let seen = AtomicU32::new(0);
        let got: Vec<Option<bool>> = (0..1000).map(|_| next(&seen)).collect();
        assert!(got[..9].iter().all(|g| *g == Some(false)));
        assert_eq!(got[9], Some(true));
        assert!(got[10..].iter().all(|g| g.is_none()));
        // The counter stops at its top instead of wrapping back to "log".
        let seen = AtomicU32::new(u32::MAX - 1);
        assert_eq!([next(&seen), next(&seen)], [None, None]);
        assert_eq!(seen.load(Ordering::Relaxed), u32::MAX);
    }
}
