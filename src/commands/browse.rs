//! Reading commands: `snapshots`, `ls`, `cat`, `dump`.

use super::{Cx, filter};
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::repo::lock::{self, LockMode};
use std::io::Write;

pub async fn snapshots(cx: &Cx<'_>, args: &cli::SnapshotsArgs) -> Result<u8> {
    let repo = cx.open().await?;
    let f = filter(&args.filter);
    let mut snaps: Vec<_> = repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|(_, s)| s.matches(&f.hosts, &f.paths, &f.tags))
        .collect();
    if !args.ids.is_empty() {
        let mut picked = Vec::new();
        for spec in &args.ids {
            let found = repo.find_snapshot(spec, &f).await?;
            if !picked
                .iter()
                .any(|(id, _): &(mover::format::SnapshotId, _)| *id == found.0)
            {
                picked.push(found);
            }
        }
        snaps = picked;
    }
    let by: ops::snapshots::GroupBy = args
        .group_by
        .parse()
        .map_err(|e: String| Error::InvalidInput(format!("--group-by: {e}")))?;
    let groups: Vec<_> = ops::snapshots::group_snapshots(snaps, by)
        .into_iter()
        .map(|(key, list)| {
            let mut list = match args.latest {
                Some(n) if n > 0 => ops::snapshots::latest_per_host_and_paths(list, n),
                _ => list,
            };
            list.sort_by_key(|s| s.1.time);
            (key, list)
        })
        .collect();
    if cx.g.json {
        if by.is_grouped() {
            println!("{}", ops::snapshots::groups_to_json(&groups));
        } else {
            let all: Vec<_> = groups.into_iter().flat_map(|(_, l)| l).collect();
            println!("{}", ops::snapshots::to_json(&all));
        }
        return Ok(0);
    }
    let table = ops::snapshots::TableOptions {
        compact: args.compact,
        ..Default::default()
    };
    for (key, list) in &groups {
        if let Some(header) = key.header() {
            println!("{header}");
        }
        print!("{}", ops::snapshots::format_table(list, table));
    }
    if groups.is_empty() && !by.is_grouped() {
        print!("{}", ops::snapshots::format_table(&[], table));
    }
    Ok(0)
}

pub async fn ls(cx: &Cx<'_>, args: &cli::LsArgs) -> Result<u8> {
    let repo = cx.open().await?;
    let (id, snap) = repo
        .find_snapshot(&args.snapshot, &filter(&args.filter))
        .await?;
    let index = repo.load_index().await?;
    let entries = ops::ls::ls(&repo, &index, snap.tree, args.dir.as_deref(), true).await?;
    let mut out = std::io::stdout().lock();
    if cx.g.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({
                "struct_type": "snapshot", "time": mover::format::gotime::format(&snap.time),
                "tree": snap.tree.to_hex(), "paths": snap.paths, "hostname": snap.hostname,
                "id": id.to_hex(), "short_id": id.short(),
            })
        );
        for (path, node) in &entries {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({
                    "name": String::from_utf8_lossy(&node.name), "type": node.node_type.as_str(),
                    "path": path, "uid": node.uid, "gid": node.gid, "size": node.size,
                    "mode": node.mode, "mtime": mover::format::gotime::format(&node.mtime),
                    "struct_type": "node",
                })
            );
        }
    } else {
        if !cx.g.quiet {
            let _ = writeln!(
                out,
                "snapshot {} of {:?} at {}:",
                id.short(),
                snap.paths,
                snap.time
            );
        }
        for (path, node) in &entries {
            let line = if args.long {
                ops::ls::format_long(node, path)
            } else {
                path.clone()
            };
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(0)
}

pub async fn cat(cx: &Cx<'_>, args: &cli::CatArgs) -> Result<u8> {
    let repo = cx.open().await?;
    let bytes = ops::cat::cat(&repo, &args.object, args.id.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("writing to stdout", e))?;
    Ok(0)
}

pub async fn dump(cx: &Cx<'_>, args: &cli::DumpArgs) -> Result<u8> {
    let repo = cx.open().await?;
    let work = async {
        let (_, snap) = repo
            .find_snapshot(&args.snapshot, &filter(&args.filter))
            .await?;
        let index = repo.load_index().await?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        let n = ops::dump::dump_file(&repo, &index, snap.tree, &args.file, &mut out).await?;
        out.flush().map_err(|e| Error::io("writing to stdout", e))?;
        Ok::<u64, Error>(n)
    };
    lock::while_locked_loading_index(&repo, LockMode::Shared, &cx.read_lock_options(), work)
        .await?;
    Ok(0)
}
