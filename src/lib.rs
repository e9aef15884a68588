//! mover: a native, restic-compatible data mover for Kubernetes volumes.
//!
//! The workspace's crates, top depends on bottom (see docs/design.md):
//! - `mover` (this package): the command line (clap types and rendering) and this facade;
//! - `mover-k8s`: CRD types, plans, apply, the controller and the in-Job runner;
//! - `mover-core`: the restic-format engine (`ops` → `fs` / `repo` → `storage` → pure
//!   `format`, `crypto`, `chunker`, `compress`), usable without Kubernetes or a CLI.

pub use mover_core::*;
pub use mover_k8s as k8s;
