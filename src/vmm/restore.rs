//! Building a VM from a snapshot instead of booting one: create with the memory file mapped,
//! attach the configuration's devices with their saved state, and put the interrupt
//! controllers, the clock and every vCPU back. Nothing is described or loaded: the guest's
//! memory already holds everything it had.

use std::path::Path;

use super::{Error, Vm};
use crate::console::Console;
use crate::device_manager::DeviceManager;
use crate::mmds::Mmds;
use crate::snapshot::{self, SnapshotError, SnapshotState};

impl Vm {
    /// Builds the VM `state` describes (its configuration as the caller gives it: the
    /// snapshot's, with any drive or network interface changed), with guest memory mapped
    /// privately from `mem_file`. It starts with its vCPUs parked unless `resume`.
    ///
    /// This is the gate every restored VM passes: the state, its configuration included, is
    /// checked here, once ([`SnapshotState::check`]).
    pub fn restore(
        state: &SnapshotState,
        mem_file: &Path,
        console: Console,
        mmds: &Mmds,
        resume: bool,
    ) -> Result<Self, Error> {
        state.check()?;
        let config = &state.config;
        let (kvm, mem, kvm_vm, vcpus) = Self::create_with(config, |_| {
            Ok(snapshot::map_memory(mem_file, &state.memory)?)
        })?;
        if kvm.xsave_size() > snapshot::XSAVE_AREA {
            return Err(SnapshotError::XsaveArea {
                host: kvm.xsave_size(),
                held: snapshot::XSAVE_AREA,
            }
            .into());
        }
        let machine = &state.machine;
        let devices = DeviceManager::new(
            &kvm_vm,
            &mem,
            console,
            config,
            (mmds, Some(&machine.devices.serial)),
        )?;
        devices
            .restore(&machine.devices)
            .map_err(SnapshotError::Devices)?;
        kvm_vm
            .restore_state(&machine.vm)
            .map_err(SnapshotError::KvmState)?;
        for (vcpu, saved) in vcpus.iter().zip(&machine.vcpus) {
            vcpu.restore_state(saved)?;
        }
        log::info!(
            "Restored a VM of {} vCPUs and {} MiB from {} (written by fennec {})",
            config.machine_config.vcpu_count,
            config.machine_config.mem_size_mib,
            mem_file.display(),
            state.fennec_version
        );
        Ok(Vm {
            mem,
            kvm_vm,
            vcpus,
            devices,
            config: config.clone(),
            paused: !resume,
            snapshots: true,
        })
    }
}
