//! The entropy device (virtio-rng): Firecracker's `PUT /entropy` and `entropy` in a
//! configuration file.

use serde::{Deserialize, Serialize};

use fennec_devices::rate_limiter::RateLimiter;
use fennec_devices::virtio::rng::Rng;

use super::device::{DeviceEnv, VirtioDeviceConfig};
use super::error::ConfigError;
use super::options::{buckets, RateLimiterConfig};
use crate::device_manager::DeviceError;

/// An entropy device (virtio-rng) for the guest: Firecracker's `PUT /entropy` and `entropy` in
/// a configuration file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    /// Limits on the random bytes and requests the guest gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// The ID of a VM's one entropy device.
pub const ENTROPY_ID: &str = "rng";

impl VirtioDeviceConfig for EntropyConfig {
    const KIND: &'static str = "entropy device";
    type Device = Rng;

    fn id(&self) -> &str {
        ENTROPY_ID
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    fn build(&self, _env: &DeviceEnv<'_>) -> Result<Rng, DeviceError> {
        let (bandwidth, ops) = buckets(self.rate_limiter.as_ref());
        let limiter = RateLimiter::new(bandwidth, ops)
            .map_err(|e| DeviceError::EventFd("a rate limiter's timer", e))?;
        Rng::new(Box::new(crate::random::fill), limiter)
            .map_err(|e| DeviceError::EventFd("an entropy device", e))
    }

    fn describe(&self, _device: &Rng, _env: &DeviceEnv<'_>) -> String {
        "the host's getrandom(2)".to_string()
    }
}
