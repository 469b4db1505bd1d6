//! KVM state: the `/dev/kvm` handle, guest memory, the VM and its vCPUs. The only place that
//! makes KVM memory-slot calls and touches vCPU run state.

pub mod exit;
pub mod gsi;
pub mod kvm;
pub mod memory;
pub mod vcpu;
pub mod vm;
