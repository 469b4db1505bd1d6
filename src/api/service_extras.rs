//! The control socket's requests for what Firecracker's guests get besides drives and
//! interfaces: the metadata service (`/mmds`) and the entropy device (`/entropy`).

use super::{not_after_start, VmService};
use crate::api::{ApiError, ApiResponse, MmdsRequest};
use crate::config::EntropyConfig;

impl VmService {
    /// Serves one `/mmds` request. The document can change at any time, and a running guest
    /// sees the change on its next request; the configuration is pre-boot only.
    pub(super) fn serve_mmds(&mut self, request: MmdsRequest) -> Result<ApiResponse, ApiError> {
        let refused = |e: crate::mmds::MmdsError| ApiError::bad_request(e.to_string());
        match request {
            MmdsRequest::Put(data) => self.mmds.put(data).map_err(refused)?,
            MmdsRequest::Patch(patch) => self.mmds.patch(patch).map_err(refused)?,
            MmdsRequest::Get => return Ok(ApiResponse::Json(self.mmds.get())),
            MmdsRequest::PutConfig(config) => {
                if self.instance.is_some() {
                    return Err(not_after_start());
                }
                config
                    .validate(self.config.net.iter().map(|n| n.id.as_str()))
                    .map_err(refused)?;
                log::info!(
                    "Metadata service {:?} at {} on {}",
                    config.version,
                    config.address(),
                    config.network_interfaces.join(", ")
                );
                self.config.mmds_config = Some(config);
            }
        }
        Ok(ApiResponse::Empty)
    }

    /// `PUT /entropy`: the guest gets an entropy device (pre-boot only); a second PUT replaces
    /// the first's rate limiter.
    pub(super) fn put_entropy(&mut self, entropy: EntropyConfig) -> Result<ApiResponse, ApiError> {
        if self.instance.is_some() {
            return Err(not_after_start());
        }
        self.config.entropy = Some(entropy);
        Ok(ApiResponse::Empty)
    }
}
