//! Firecracker's configuration fields that choose between ways of doing a thing: typed as
//! Firecracker's API defines them, so every body a Firecracker client sends parses, and checked
//! against what fennec does in one place ([`Unsupported`] from each section's `validate`).
//!
//! The values fennec serves are the defaults. Others parse and are then refused with a reason:
//! a client learns that the VM would not be what it asked for, instead of getting it silently.

use fennec_devices::rate_limiter::BucketSpec;
use serde::{Deserialize, Serialize};

/// Firecracker's `cpu_template`: a CPUID and MSR mask that makes hosts of one family look alike.
/// fennec shows the guest what KVM supports on this host ([`CpuTemplate::None`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    /// The host's CPU as KVM supports it.
    #[default]
    None,
    /// Intel, T2 instance shape.
    T2,
    /// Intel, T2 with the side-channel mitigations of T2S.
    T2S,
    /// Intel, T2 compatible with Cascade Lake and Ice Lake.
    T2CL,
    /// AMD, T2 shape.
    T2A,
    /// Intel, C3 instance shape.
    C3,
}

impl CpuTemplate {
    /// Whether it is `None` (no template).
    pub fn is_none(&self) -> bool {
        *self == CpuTemplate::None
    }
}

/// Firecracker's `huge_pages`: what backs guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Ordinary 4 KiB anonymous pages.
    #[default]
    None,
    /// 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Firecracker's drive `cache_type`: whether the guest is offered a flush command.
/// fennec always offers it and always honours it (nothing the guest flushed is lost), so both
/// values mean the same here: `Unsafe` lets a VMM skip flushes, it does not make it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Firecracker's default.
    #[default]
    Unsafe,
    /// Flushes reach the disk.
    Writeback,
}

/// Firecracker's drive `io_engine`: how requests reach the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking reads and writes on the VMM's event thread.
    #[default]
    Sync,
    /// io_uring.
    Async,
}

/// Firecracker's rate limiter on a drive or a network direction: token buckets for bytes and
/// operations. One with no bucket limits nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// Whether it limits anything.
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }

    /// The device's buckets: bandwidth (bytes) and ops (requests or frames). A bucket of size 0
    /// or refill time 0 limits nothing, as in Firecracker.
    pub fn buckets(&self) -> (Option<BucketSpec>, Option<BucketSpec>) {
        let spec = |b: &TokenBucketConfig| BucketSpec {
            size: b.size,
            one_time_burst: b.one_time_burst.unwrap_or(0),
            refill_ms: b.refill_time,
        };
        (
            self.bandwidth.as_ref().map(spec),
            self.ops.as_ref().map(spec),
        )
    }
}

/// The device's buckets for an optional rate limiter (none: unlimited).
pub fn buckets(limiter: Option<&RateLimiterConfig>) -> (Option<BucketSpec>, Option<BucketSpec>) {
    limiter.map(RateLimiterConfig::buckets).unwrap_or_default()
}

/// One token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Tokens the bucket holds.
    pub size: u64,
    /// Tokens available once, at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill from empty.
    pub refill_time: u64,
}

/// A field set to something fennec does not do: which field, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {why}")]
pub struct Unsupported {
    /// The field, as the JSON names it.
    pub field: &'static str,
    /// Why fennec refuses it.
    pub why: &'static str,
}

/// Refuses `field` with `why` when `refused`.
pub(super) fn refuse(
    refused: bool,
    field: &'static str,
    why: &'static str,
) -> Result<(), Unsupported> {
    if refused {
        Err(Unsupported { field, why })
    } else {
        Ok(())
    }
}
