//! mover-core: the restic-format engine of mover, usable by any Rust program; it knows
//! nothing of Kubernetes or of a command line.
//!
//! Layers, top depends on bottom (see docs/design.md):
//! `ops` → `fs` / `repo` → `storage` → pure `format`, `crypto`, `chunker`, `compress`.

pub mod cancel;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod format;
pub mod fs;
pub mod host;
pub mod ops;
pub mod progress;
pub mod repo;
pub mod storage;

pub use cancel::Cancel;
pub use error::{Error, ErrorClass, Result};
