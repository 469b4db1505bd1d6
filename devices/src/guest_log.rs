//! Warnings a guest can cause at will (a sleep state fennec lacks, a queue setup that cannot
//! start, offloads the TAP refuses): each call site logs the first [`LOGGED`], says so on the
//! last of them, and then only counts, so a guest that repeats itself cannot fill the host's
//! log. Use [`warn_guest!`](crate::warn_guest); a device that already counts the occurrences
//! (its metrics) passes its own count instead, and is limited per device.

use std::sync::atomic::{AtomicU32, Ordering};

/// How many times one call site logs.
pub const LOGGED: u32 = 10;

/// Whether occurrence `n` (counting from 1) is logged: `None` when it is not, `Some(true)` for
/// the last one logged, `Some(false)` before that.
pub fn nth(n: u64) -> Option<bool> {
    let logged = u64::from(LOGGED);
    (1..=logged).contains(&n).then_some(n == logged)
}

/// Counts one more occurrence at the call site whose counter is `seen`, and says whether it is
/// logged, as [`nth`].
pub fn next(seen: &AtomicU32) -> Option<bool> {
    let before = seen
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
        .unwrap_or(u32::MAX);
    nth(u64::from(before) + 1)
}

/// `log::warn!` for something the guest can repeat at will: the first
/// [`LOGGED`](crate::guest_log::LOGGED) times at this call site, then not again. With
/// `nth: N,` first, the caller counts: occurrence `N` (from 1) of its own counter.
#[macro_export]
macro_rules! warn_guest {
    (nth: $n:expr, $($arg:tt)+) => {
        $crate::warn_guest!(@decided $crate::guest_log::nth($n), $($arg)+)
    };
    (@decided $decision:expr, $($arg:tt)+) => {
        match $decision {
            Some(false) => log::warn!($($arg)+),
            Some(true) => log::warn!(
                "{} (the guest keeps doing this; not logged again)",
                format_args!($($arg)+)
            ),
            None => {}
        }
    };
    ($($arg:tt)+) => {{
        static SEEN: ::std::sync::atomic::AtomicU32 = ::std::sync::atomic::AtomicU32::new(0);
        $crate::warn_guest!(@decided $crate::guest_log::next(&SEEN), $($arg)+)
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

    #[test]
    fn test_a_count_of_the_callers_own_is_logged_from_1_to_10() {
        assert_eq!(nth(0), None);
        assert!((1..10).all(|n| nth(n) == Some(false)));
        assert_eq!(nth(10), Some(true));
        assert_eq!([nth(11), nth(u64::MAX)], [None, None]);
    }
}
