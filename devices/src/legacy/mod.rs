//! Legacy PC devices on the PIO bus.

pub mod i8042;
pub mod serial;
