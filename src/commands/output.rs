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

/// Prints `value` (a serializable summary) as one JSON line with restic's
/// `"message_type": "summary"`.
pub fn print_json_summary(value: &impl serde::Serialize) -> mover::Result<()> {
    let mut v = serde_json::to_value(value)
        .map_err(|e| mover::Error::Internal(format!("encoding the summary: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("message_type".into(), "summary".into());
    }
    println!("{v}");
    Ok(())
}

/// restic's `initialized` JSON message for a new repository.
pub fn print_initialized_json(id: &str, location: &str) {
    println!(
        "{}",
        serde_json::json!({"message_type": "initialized", "id": id, "repository": location})
    );
}
