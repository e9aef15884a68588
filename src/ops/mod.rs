//! User-level operations: `*Options` in, `*Summary` out. No argument parsing, no printing
//! beyond progress callbacks; the binary decides how to show results.

pub mod backup;
pub mod block;
pub mod cat;
pub mod dump;
pub mod ls;
pub mod pipeline;
pub mod restore;
pub mod snapshots;

/// The host name as restic records it (`os.Hostname()`).
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The current user's name, or "" when it cannot be looked up.
pub fn current_username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}
