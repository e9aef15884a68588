//! `check`: structure always, data with `--read-data[-subset]`; exit 1 on damage.

use super::Cx;
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::ops::check::ReadData;

pub async fn check(cx: &Cx<'_>, args: &cli::CheckArgs) -> Result<u8> {
    let read_data = match (&args.read_data_subset, args.read_data) {
        (Some(s), _) => ReadData::parse_subset(s)
            .map_err(|e| Error::InvalidInput(format!("--read-data-subset: {e}")))?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = cx.open().await?;
    if cx.verbose_output() {
        println!("load indexes\ncheck all packs\ncheck snapshots, trees and blobs");
        match read_data {
            ReadData::None => {}
            ReadData::All => println!("read all data"),
            ReadData::Bucket { n, of } => println!("read group #{n} of {of} data packs"),
            ReadData::Percent(p) => println!("read {p}% of data packs"),
            ReadData::Bytes(b) => println!("read {} of data packs", super::output::human_bytes(b)),
        }
    }
    let opts = ops::check::CheckOptions {
        read_data,
        lock: cx.read_lock_options(),
    };
    let summary = ops::check::check(&repo, &opts).await?;
    if cx.g.json {
        for e in &summary.errors {
            println!(
                "{}",
                serde_json::json!({"message_type": "error", "message": e.message})
            );
        }
        let broken: Vec<&str> = summary
            .errors
            .iter()
            .filter(|e| e.kind == "pack")
            .map(|e| e.id.as_str())
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "num_errors": summary.errors.len(),
                "broken_packs": broken,
                "suggest_repair_index": summary.errors.iter().any(|e| e.kind == "index"),
                "suggest_prune": !summary.hints.is_empty(),
                "snapshots": summary.snapshots,
                "packs": summary.packs,
                "packs_read": summary.packs_read,
                "bytes_read": summary.bytes_read,
            })
        );
    } else {
        if !cx.g.quiet {
            for h in &summary.hints {
                println!("{h}");
            }
        }
        for e in &summary.errors {
            eprintln!("error: {e}");
        }
        if cx.verbose_output() && summary.is_clean() {
            println!(
                "no errors were found ({} snapshots, {} trees, {} packs, {} read)",
                summary.snapshots,
                summary.trees,
                summary.packs,
                super::output::human_bytes(summary.bytes_read)
            );
        }
    }
    if summary.is_clean() {
        Ok(0)
    } else {
        Err(Error::corrupt(
            "repository",
            format!("check found {} error(s)", summary.errors.len()),
        ))
    }
}
