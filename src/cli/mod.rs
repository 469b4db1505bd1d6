//! What only the `fennec` binary uses: one module per subcommand, one folder per persona
//! (fennec started as `firecracker` or `jailer`). Everything here turns a command line into
//! calls of the library and its outcome into an exit status; the library knows nothing of it.

pub mod ctl;
pub mod firecracker;
pub mod image;
pub mod jail;
pub mod run;
pub mod signals;
