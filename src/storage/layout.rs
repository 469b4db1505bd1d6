//! How a store lays out what it holds.

/// The image file's name inside a template's or disk's directory (or dataset).
pub const IMAGE_FILE: &str = "disk.img";
