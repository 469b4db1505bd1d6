//! Token-bucket rate limiters for the devices (Firecracker's `rate_limiter`: a bandwidth
//! bucket of bytes and an ops bucket of requests, each refilled at `size` tokens per
//! `refill_time`, with an optional one-time burst on top).
//!
//! A device asks [`RateLimiter::consume`] before serving each request. When a bucket lacks the
//! tokens, the request waits (the device puts it back and stops serving that queue) and the
//! limiter's timerfd fires when the bucket will have refilled enough; the device then serves
//! the queue again. A request bigger than a whole bucket goes through once the bucket is full,
//! leaving it in debt: the next one waits until the debt is repaid.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// One bucket's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketSpec {
    /// Tokens the bucket holds when full.
    pub size: u64,
    /// Tokens granted once, on top of the first full bucket.
    pub one_time_burst: u64,
    /// How long an empty bucket takes to fill up, in milliseconds.
    pub refill_ms: u64,
}

/// A limiter's two buckets: bandwidth (bytes) and ops (requests or frames).
pub type Buckets = (Option<BucketSpec>, Option<BucketSpec>);

/// A token bucket, refilled from the clock at each use.
#[derive(Debug)]
struct TokenBucket {
    spec: BucketSpec,
    /// Tokens available; negative while a request bigger than the bucket is being repaid.
    budget: i128,
    /// What is left of the one-time burst.
    burst: u64,
    /// When `budget` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket; `None` if it would limit nothing (size or refill time 0).
    fn new(spec: BucketSpec, now: Instant) -> Option<Self> {
        (spec.size > 0 && spec.refill_ms > 0).then(|| TokenBucket {
            spec,
            budget: i128::from(spec.size),
            burst: spec.one_time_burst,
            updated: now,
        })
    }

    /// Adds the tokens earned since the last update, up to a full bucket.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos() as i128;
        let period = i128::from(self.spec.refill_ms) * 1_000_000;
        // Saturating: sizes and refill times are the API client's, up to u64::MAX each.
        let earned = elapsed.saturating_mul(i128::from(self.spec.size)) / period;
        if earned > 0 {
            self.budget = (self.budget + earned).min(i128::from(self.spec.size));
            // Keep the remainder of a token's time for the next refill (never past `now`).
            let used = earned.saturating_mul(period) / i128::from(self.spec.size);
            let used = Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
            self.updated = self.updated.checked_add(used).map_or(now, |t| t.min(now));
            if self.budget == i128::from(self.spec.size) {
                self.updated = now;
            }
        }
    }

    /// Whether `tokens` can be taken now.
    fn can_take(&self, tokens: u64) -> bool {
        let wanted = i128::from(tokens.min(self.spec.size));
        self.budget + i128::from(self.burst) >= wanted
    }

    /// Takes `tokens` (checked by `can_take`): from the burst first, then the bucket.
    fn take(&mut self, tokens: u64) {
        let from_burst = tokens.min(self.burst);
        self.burst -= from_burst;
        self.budget -= i128::from(tokens - from_burst);
    }

    /// How long until `tokens` can be taken.
    fn wait_for(&self, tokens: u64) -> Duration {
        let wanted = i128::from(tokens.min(self.spec.size));
        let missing = wanted - self.budget - i128::from(self.burst);
        if missing <= 0 {
            return Duration::ZERO;
        }
        let period = i128::from(self.spec.refill_ms) * 1_000_000;
        let size = i128::from(self.spec.size);
        let nanos = missing.saturating_mul(period).saturating_add(size - 1) / size;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The longest the timer is set for: a bucket that refills slower than that (an absurd
/// `refill_time`) has the request look again, and wait again, each time it fires.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A bandwidth bucket and an ops bucket, and the timer that says when a waiting request may go.
#[derive(Debug)]
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// A request waits for the timer.
    blocked: bool,
}

impl RateLimiter {
    /// A limiter with the given buckets (either may be absent).
    pub fn new(bandwidth: Option<BucketSpec>, ops: Option<BucketSpec>) -> std::io::Result<Self> {
        let now = Instant::now();
        Ok(RateLimiter {
            bandwidth: bandwidth.and_then(|b| TokenBucket::new(b, now)),
            ops: ops.and_then(|b| TokenBucket::new(b, now)),
            timer: TimerFd::new().map_err(std::io::Error::from)?,
            blocked: false,
        })
    }

    /// A limiter that limits nothing (until [`RateLimiter::update`] gives it buckets).
    pub fn unlimited() -> std::io::Result<Self> {
        Self::new(None, None)
    }

    /// Replaces the buckets (full again), keeping the timer; a waiting request is let go at the
    /// timer's next tick, or at once with no limits.
    pub fn update(&mut self, bandwidth: Option<BucketSpec>, ops: Option<BucketSpec>) {
        let now = Instant::now();
        self.bandwidth = bandwidth.and_then(|b| TokenBucket::new(b, now));
        self.ops = ops.and_then(|b| TokenBucket::new(b, now));
        if self.blocked {
            let _ = self.timer.reset(Duration::from_micros(100), None);
        }
    }

    /// Takes `bytes` from the bandwidth bucket and one op from the ops bucket, both or neither.
    /// On false the request must wait: the limiter is blocked until its timer fires.
    pub fn consume(&mut self, bytes: u64) -> bool {
        // Every request of every drive and frame of every interface comes here: one without
        // limits costs no clock read.
        if !self.blocked && !self.limits() {
            return true;
        }
        self.consume_at(bytes, Instant::now())
    }

    fn consume_at(&mut self, bytes: u64, now: Instant) -> bool {
        if self.blocked {
            return false;
        }
        for (bucket, _) in self.buckets(bytes) {
            bucket.refill(now);
        }
        let fits = self.buckets(bytes).all(|(b, tokens)| b.can_take(tokens));
        if fits {
            for (bucket, tokens) in self.buckets(bytes) {
                bucket.take(tokens);
            }
            return true;
        }
        let wait = self
            .buckets(bytes)
            .map(|(b, tokens)| b.wait_for(tokens))
            .max()
            .unwrap_or_default()
            .clamp(Duration::from_micros(100), MAX_WAIT);
        self.blocked = true;
        if let Err(e) = self.timer.reset(wait, None) {
            // Without a timer the device would wait forever: let the request through.
            log::error!("Rate limiter: cannot arm its timer ({e}); not limiting");
            self.blocked = false;
            return true;
        }
        false
    }

    fn buckets(&mut self, bytes: u64) -> impl Iterator<Item = (&mut TokenBucket, u64)> {
        let bandwidth = self.bandwidth.as_mut().map(|b| (b, bytes));
        let ops = self.ops.as_mut().map(|b| (b, 1));
        bandwidth.into_iter().chain(ops)
    }

    /// Gives back what [`RateLimiter::consume`] took for a request that did not go after all
    /// (it will be charged again when it does), up to full buckets.
    pub fn refund(&mut self, bytes: u64) {
        for (bucket, tokens) in self.buckets(bytes) {
            bucket.budget = (bucket.budget + i128::from(tokens)).min(i128::from(bucket.spec.size));
        }
    }

    /// Whether a request waits for the timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The timer fired: waiting requests may try again.
    pub fn on_timer(&mut self) {
        let _ = self.timer.wait();
        self.blocked = false;
    }

    /// The timerfd, for the event loop.
    pub fn timer_fd(&self) -> &TimerFd {
        &self.timer
    }

    /// Whether it limits anything at all.
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }
}

impl AsRawFd for RateLimiter {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, burst: u64, refill_ms: u64) -> Option<BucketSpec> {
        Some(BucketSpec {
            size,
            one_time_burst: burst,
            refill_ms,
        })
    }

    #[test]
    fn test_a_full_bucket_serves_its_size_then_waits_for_the_refill() {
        let mut l = RateLimiter::new(bucket(1000, 0, 100), None).unwrap();
        let t0 = Instant::now();
        assert!(l.consume_at(600, t0));
        assert!(l.consume_at(400, t0));
        assert!(!l.consume_at(100, t0));
        assert!(l.is_blocked());
        // Blocked until the timer fires, whatever the clock says.
        assert!(!l.consume_at(100, t0 + Duration::from_secs(1)));
        l.blocked = false;
        // 10 ms refill 100 tokens of a 1000-per-100-ms bucket.
        assert!(l.consume_at(100, t0 + Duration::from_millis(10)));
        assert!(!l.consume_at(1, t0 + Duration::from_millis(10)));
    }

    #[test]
    fn test_the_timer_is_armed_for_when_the_tokens_are_there() {
        let mut l = RateLimiter::new(bucket(1000, 0, 1000), None).unwrap();
        let t0 = Instant::now();
        assert!(l.consume_at(1000, t0));
        let bw = l.bandwidth.as_ref().unwrap();
        assert_eq!(bw.wait_for(250), Duration::from_millis(250));
        assert!(!l.consume_at(250, t0));
        assert!(l.timer.is_armed().unwrap(), "the timer is armed");
        // Limits lifted while a request waits: it still waits for the timer, which fires soon.
        l.update(None, None);
        assert!(!l.consume(250));
        l.on_timer();
        assert!(l.consume(250));
    }

    #[test]
    fn test_ops_and_bandwidth_are_taken_together_or_not_at_all() {
        let mut l = RateLimiter::new(bucket(1000, 0, 100), bucket(2, 0, 100)).unwrap();
        let t0 = Instant::now();
        assert!(l.consume_at(100, t0));
        assert!(l.consume_at(100, t0));
        // The ops bucket is empty: no bytes are taken either.
        assert!(!l.consume_at(100, t0));
        assert_eq!(l.bandwidth.as_ref().unwrap().budget, 800);
    }

    #[test]
    fn test_the_one_time_burst_comes_first_and_only_once() {
        let mut l = RateLimiter::new(bucket(100, 500, 1000), None).unwrap();
        let t0 = Instant::now();
        assert!(l.consume_at(500, t0));
        assert!(l.consume_at(100, t0));
        assert!(!l.consume_at(1, t0));
        l.blocked = false;
        // A second later: the bucket again, no burst.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.consume_at(100, t1));
        assert!(!l.consume_at(1, t1));
    }

    #[test]
    fn test_a_request_bigger_than_the_bucket_goes_when_full_and_leaves_debt() {
        let mut l = RateLimiter::new(bucket(100, 0, 100), None).unwrap();
        let t0 = Instant::now();
        assert!(l.consume_at(1000, t0));
        l.blocked = false;
        // 900 tokens of debt: 900 ms until anything goes again.
        assert!(!l.consume_at(1, t0 + Duration::from_millis(850)));
        l.blocked = false;
        assert!(l.consume_at(1, t0 + Duration::from_millis(910)));
    }

    /// Sizes and refill times come from API clients: the largest ones limit, and panic nothing.
    #[test]
    fn test_extreme_buckets_do_not_overflow() {
        let t0 = Instant::now();
        // The whole of a u64 bucket, refilled over u64::MAX ms: the next request waits (the
        // timer at its cap), whatever the clock says.
        let mut slow = RateLimiter::new(bucket(u64::MAX, u64::MAX, u64::MAX), None).unwrap();
        assert!(slow.consume_at(u64::MAX, t0));
        assert!(slow.consume_at(u64::MAX, t0));
        assert!(!slow.consume_at(u64::MAX, t0 + Duration::from_secs(1 << 30)));
        assert!(slow.timer.is_armed().unwrap());
        let wait = slow.bandwidth.as_ref().unwrap().wait_for(u64::MAX);
        assert!(wait > Duration::from_secs(1 << 30), "{wait:?}");
        // u64::MAX tokens a millisecond: refilled after any time at all.
        let mut fast = RateLimiter::new(bucket(u64::MAX, 0, 1), None).unwrap();
        assert!(fast.consume_at(u64::MAX, t0));
        fast.blocked = false;
        assert!(fast.consume_at(u64::MAX, t0 + Duration::from_secs(1 << 40)));
    }

    #[test]
    fn test_empty_buckets_limit_nothing() {
        let mut l = RateLimiter::new(bucket(0, 0, 100), bucket(10, 0, 0)).unwrap();
        assert!(!l.limits());
        for _ in 0..1000 {
            assert!(l.consume(u64::MAX));
        }
    }
}
