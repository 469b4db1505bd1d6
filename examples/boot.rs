//! A VM in about 20 lines: boot a kernel, print its console, report how it ended.
//!
//!     cargo run --example boot -- KERNEL [INITRD]

use std::io::{self, Read, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kernel = args.next().ok_or("usage: boot KERNEL [INITRD]")?;
    let mut builder = fennec::VmBuilder::new(kernel)
        .cmdline("console=ttyS0 panic=-1")
        .vcpus(2)
        .memory_mib(256);
    if let Some(initrd) = args.next() {
        builder = builder.initrd(initrd);
    }
    let mut vm = builder.start()?;
    let mut console = vm.take_console().expect("a console stream");
    let mut buf = [0u8; 4096];
    loop {
        let n = console.read(&mut buf)?;
        if n == 0 {
            break; // The VM is gone.
        }
        io::stdout().write_all(&buf[..n])?;
    }
    eprintln!("guest ended: {}", vm.wait()?);
    Ok(())
}
