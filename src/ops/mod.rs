//! User-level operations: `*Options` in, `*Summary` out.
