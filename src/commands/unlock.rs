//! `unlock`: remove stale locks, or every lock with `--remove-all`.

use super::Cx;
use crate::cli;
use mover::error::Result;
use mover::repo::lock;

pub async fn unlock(cx: &Cx<'_>, args: &cli::UnlockArgs) -> Result<u8> {
    let repo = cx.open().await?;
    let removed: Vec<String> = if args.remove_all {
        lock::remove_all_locks(&repo)
            .await?
            .iter()
            .map(lock::FoundLock::describe)
            .collect()
    } else {
        lock::remove_stale_locks(&repo, None)
            .await?
            .iter()
            .map(|(l, why)| format!("{} ({why})", l.describe()))
            .collect()
    };
    if cx.g.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "unlock", "removed": removed})
        );
    } else if !cx.g.quiet {
        for r in &removed {
            println!("removed {r}");
        }
        println!("successfully removed {} locks", removed.len());
    }
    Ok(0)
}
