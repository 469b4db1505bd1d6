//! Runs one shell command in a throwaway Linux VM and exits with the command's status.
//!
//!     cargo run --features harness --example throwaway -- 'uname -a; nproc'
//!
//! The guest is fennec's busybox guest (`resources/build-guest-*.sh`, built and cached on first
//! use, or taken from `$FENNEC_GUEST_DIR`). It runs from its initramfs, in guest memory, so
//! nothing the command does survives the VM. Needs hardware virtualization.

use std::process::ExitCode;
use std::time::Duration;

use fennec::harness::{linux_guest, TestVm};
use fennec::VmBuilder;

fn main() -> ExitCode {
    match run() {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("throwaway: {e}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<i32, Box<dyn std::error::Error>> {
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    if command.is_empty() {
        return Err("usage: throwaway COMMAND...".into());
    }
    let guest = linux_guest()?;
    let builder = VmBuilder::new(&guest.vmlinux)
        .initrd(&guest.initramfs)
        .cmdline("console=ttyS0 panic=-1 quiet")
        .vcpus(2)
        .memory_mib(256);
    let mut vm = TestVm::boot(builder, Duration::from_secs(60))?;
    vm.expect("FENNEC-GUEST-READY")?;
    let result = vm.run(&command)?;
    println!("{}", result.output);
    vm.send_line("reboot -f")?;
    vm.wait()?;
    Ok(result.status)
}
