//! Who and where this process is, as restic records it in snapshots, keys and locks. A
//! leaf: the repository layer and the operations both ask here.

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

/// Whether a process with this id exists on this machine (signal 0; EPERM means it exists
/// but belongs to someone else).
pub fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}
