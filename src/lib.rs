//! fennec: a small, fast KVM virtual machine monitor built on the rust-vmm crates.
//!
//! A [`Vm`] is built from a [`config::VmConfig`] and a [`Console`]: building opens `/dev/kvm`,
//! maps guest memory, loads the kernel (ELF through PVH or the 64-bit protocol, or a bzImage),
//! initrd and command line with `fennec-boot`, and creates the vCPUs and the devices of
//! `fennec-devices`. [`Vm::start`] runs one thread per vCPU, forwarding port and MMIO exits to the
//! device buses, and a controller thread with the event loop; [`VmHandle::wait`] returns the
//! guest's [`ExitReason`].
//!
//! ```no_run
//! use fennec::config::{BlockConfig, BootSourceConfig, MachineConfig, NetConfig, VmConfig};
//! use fennec::{Console, Vm};
//!
//! let config = VmConfig {
//!     boot_source: Some(BootSourceConfig {
//!         kernel_image_path: "vmlinux".into(),
//!         initrd_path: None,
//!         boot_args: Some("console=ttyS0 panic=1".into()),
//!     }),
//!     machine_config: MachineConfig { vcpu_count: 2, mem_size_mib: 256, ..Default::default() },
//!     drives: vec![BlockConfig {
//!         root: true,
//!         ..BlockConfig::path("rootfs", "rootfs.ext4")
//!     }],
//!     net: vec![NetConfig { id: "eth0".into(), tap: "tap0".into(), ..Default::default() }],
//!     ..Default::default()
//! };
//! let console = Console { output: Box::new(std::io::stdout()), input: None };
//! let reason = Vm::new(&config, console)?.start()?.wait()?;
//! println!("guest ended: {reason}");
//! # Ok::<(), fennec::Error>(())
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod builder;
pub mod config;
pub mod console;
pub mod device_manager;
#[cfg(feature = "harness")]
pub mod harness;
pub mod jail;
pub mod mmds;
pub mod random;
pub mod sandbox;
pub mod seccomp;
pub mod snapshot;
pub mod storage;
pub mod terminal;
pub mod threads;
pub mod vmm;
pub mod vstate;

pub use builder::{BuiltVm, ConsoleStream, Instance, StartError, VmBuilder};
pub use console::Console;
pub use fennec_devices::virtio::block::BlockMetrics;
pub use fennec_devices::virtio::net::{MacAddr, NetMetrics};
pub use threads::process_start;
pub use vmm::{DriveInfo, NetInfo};
pub use vmm::{Error, ExitReason, Stopper, Vm, VmHandle, VmMetrics, VmState};
