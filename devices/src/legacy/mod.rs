//! Legacy PC devices on the PIO bus.

pub mod acpi;
pub mod boot_timer;
pub mod i8042;
pub mod pvpanic;
pub mod serial;
