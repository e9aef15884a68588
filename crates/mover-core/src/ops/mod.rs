//! User-level operations: `*Options` in, `*Summary` out. No argument parsing, no printing
//! beyond progress callbacks; the binary decides how to show results.

pub mod backup;
pub mod block;
pub mod cat;
pub mod check;
pub mod dump;
pub mod forget;
pub mod key;
pub mod ls;
pub mod pipeline;
pub mod prune;
pub mod reachable;
pub mod restore;
pub mod select;
pub mod snapshots;
pub mod stats;
pub mod tag;
