//! Opening `/dev/kvm` and checking it can run a fennec guest.

use kvm_ioctls::{Cap, Kvm};

use fennec_boot::x86_64::cpuid;

/// The KVM API version every KVM since Linux 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

/// Capabilities fennec relies on.
const REQUIRED_CAPS: [(Cap, &str); 7] = [
    (Cap::Irqchip, "in-kernel irqchip"),
    (Cap::Irqfd, "irqfd"),
    (Cap::Ioeventfd, "ioeventfd"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::UserMemory, "user memory regions"),
    (Cap::SetTssAddr, "TSS address"),
    (Cap::ExtCpuid, "extended CPUID"),
];

/// Errors opening or checking `/dev/kvm`.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` is missing.
    #[error("/dev/kvm does not exist: load the kvm module (kvm_intel or kvm_amd) on a host with hardware virtualization")]
    NotFound,
    /// No permission.
    #[error("Permission denied opening /dev/kvm: run as root or add your user to the kvm group")]
    PermissionDenied,
    /// Another failure.
    #[error("Failed to open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    /// Unexpected API version.
    #[error("KVM API version {0} is not supported (expected {KVM_API_VERSION})")]
    ApiVersion(i32),
    /// A required capability is missing.
    #[error("KVM lacks a capability fennec needs: {0}")]
    MissingCap(&'static str),
    /// The supported-CPUID query failed.
    #[error("Failed to read KVM's supported CPUID")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// The MSR list query failed.
    #[error("Failed to read KVM's list of MSRs")]
    MsrList(#[source] kvm_ioctls::Error),
}

/// `/dev/kvm`, checked.
pub struct KvmContext {
    kvm: Kvm,
    max_vcpus: usize,
}

impl KvmContext {
    /// Opens `/dev/kvm` and checks its API version and capabilities.
    pub fn open() -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT => KvmError::NotFound,
            libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
            _ => KvmError::Open(e),
        })?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(KvmError::ApiVersion(version));
        }
        if let Some((_, name)) = REQUIRED_CAPS
            .iter()
            .find(|(cap, _)| !kvm.check_extension(*cap))
        {
            return Err(KvmError::MissingCap(name));
        }
        let max_vcpus = kvm.get_max_vcpus();
        Ok(KvmContext { kvm, max_vcpus })
    }

    /// The `kvm-ioctls` handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The MSRs a VMM can save and restore (`KVM_GET_MSR_INDEX_LIST`).
    pub fn msr_index_list(&self) -> Result<Vec<u32>, KvmError> {
        self.kvm
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .map_err(KvmError::MsrList)
    }

    /// The size of a vCPU's XSAVE area on this host (`KVM_CAP_XSAVE2`; 4096 without it).
    pub fn xsave_size(&self) -> usize {
        match self.kvm.check_extension_int(Cap::Xsave2) {
            n if n > 0 => n as usize,
            _ => 4096,
        }
    }

    /// The most vCPUs KVM allows in one VM.
    pub fn max_vcpus(&self) -> usize {
        self.max_vcpus
    }

    /// CPUID entries KVM can expose to a guest: its supported CPUID, with the features it
    /// emulates for every guest but reports as capabilities.
    pub fn supported_cpuid(&self) -> Result<kvm_bindings::CpuId, KvmError> {
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::SupportedCpuid)?;
        let emulated = cpuid::Emulated {
            tsc_deadline: self.kvm.check_extension(Cap::TscDeadlineTimer),
        };
        cpuid::add_emulated(cpuid.as_mut_slice(), emulated);
        Ok(cpuid)
    }
}
