//! Rendering shared by the subcommands: sizes and durations as restic prints them.

pub use mover::ops::snapshots::format_bytes as human_bytes;

pub fn human_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The first 8 hex digits of an id, as restic shows ids.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
