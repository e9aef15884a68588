//! User-level operations: `*Options` in, `*Summary` out. No argument parsing, no printing
//! beyond progress callbacks; the binary decides how to show results.
//!
//! One locking rule: an operation with its own `*Options` takes the repository lock itself,
//! from `opts.lock`, for exactly the work it does (shared: backup, restore, check, key
//! listing; exclusive: forget, prune, tag, key changes), so no front end can run one
//! unlocked. The reading commands the binary composes from lower-level calls (`list`,
//! `stats`, `ls`, `dump`) hold a shared lock around them, as restic's do.

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
