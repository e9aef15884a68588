//! Reading a file tree into nodes and writing nodes back to disk (Linux). Owns lstat, xattrs,
//! directory listing, exclude patterns and restore-side file creation and metadata; knows
//! nothing about repositories, blobs or encryption.

pub mod block;
pub mod direct;
pub mod exclude;
pub mod glob;
pub mod meta;
pub mod names;
pub mod walk;
pub mod write;

pub use exclude::{ExcludeMatcher, device_of};
pub use meta::{NodeOptions, go_mode_from_unix, node_from_metadata, unix_mode_from_go};
pub use names::NameCache;
pub use walk::{DirEntryInfo, read_dir_sorted};
pub use write::{
    Metadata, RestoreOptions, apply_metadata, create_dir_all_for, create_file, create_node,
    hard_link,
};

#[cfg(test)]
mod roundtrip_tests;
