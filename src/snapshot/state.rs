//! What a state file holds: the configuration and the machine (vCPUs, interrupt controllers,
//! devices), and the checks that it describes a machine fennec can rebuild.

use serde::{Deserialize, Serialize};

use super::error::SnapshotError;
use crate::config::VmConfig;
use crate::device_manager::DevicesState;
use crate::vstate::vcpu::state::VcpuState;
use crate::vstate::vm::KvmVmState;

fn vcpus<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<VcpuState>, D::Error> {
    fennec_devices::bounded::vec(d, usize::from(fennec_boot::layout::MAX_VCPUS))
}

/// RAM is at most two regions: below the MMIO hole and above 4 GiB.
fn regions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(u64, u64)>, D::Error> {
    fennec_devices::bounded::vec(d, 2)
}

/// The largest XSAVE area a snapshot holds (`kvm_xsave`): hosts whose CPUs need more (AMX)
/// cannot be snapshotted yet.
pub const XSAVE_AREA: usize = 4096;

/// The machine: what KVM and the devices hold.
#[derive(Serialize, Deserialize)]
pub struct MachineState {
    /// Each vCPU, in index order.
    #[serde(deserialize_with = "vcpus")]
    pub vcpus: Vec<VcpuState>,
    /// The interrupt controllers, PIT and clock.
    pub vm: KvmVmState,
    /// The devices.
    pub devices: DevicesState,
}

/// What a state file holds.
#[derive(Serialize, Deserialize)]
pub struct SnapshotState {
    /// The fennec that wrote it.
    pub fennec_version: String,
    /// The configuration the VM was built from (drives and interfaces as they were).
    pub config: VmConfig,
    /// Guest RAM's regions: (guest address, length), in the memory file's order.
    #[serde(deserialize_with = "regions")]
    pub memory: Vec<(u64, u64)>,
    /// Their total: the memory file's size.
    pub memory_bytes: u64,
    /// The machine.
    pub machine: MachineState,
}

impl SnapshotState {
    /// Checks that the state describes a machine fennec can rebuild: the configuration
    /// valid, one vCPU state per vCPU, in order, and RAM as the configuration lays it out.
    pub fn check(&self) -> Result<(), SnapshotError> {
        self.config.validate().map_err(SnapshotError::Config)?;
        let count = usize::from(self.config.machine_config.vcpu_count);
        if self.machine.vcpus.len() != count
            || self
                .machine
                .vcpus
                .iter()
                .enumerate()
                .any(|(i, v)| usize::from(v.index) != i)
        {
            return Err(SnapshotError::VcpuStates {
                states: self.machine.vcpus.len(),
                vcpus: count,
            });
        }
        if self.machine.vm.irqchips.len() != crate::vstate::vm::IRQCHIPS {
            return Err(SnapshotError::Irqchips(self.machine.vm.irqchips.len()));
        }
        let layout: Vec<(u64, u64)> =
            fennec_boot::layout::ram_regions(self.config.machine_config.mem_size_bytes());
        if self.memory != layout {
            return Err(SnapshotError::MemoryLayout);
        }
        Ok(())
    }
}
