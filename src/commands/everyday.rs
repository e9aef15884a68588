//! `tag`, `list`, `generate` and `stats`: restic's output shapes (and `--json` messages).

use super::Cx;
use crate::cli;
use mover::error::{Error, Result};
use mover::ops::backup::split_tags;
use mover::ops::tag::{TagChange, TagOptions};
use mover::repo::lock::{self, LockMode};
use mover::storage::FileType;
use std::io::Write;
use std::path::Path;

pub async fn tag(cx: &Cx<'_>, args: &cli::TagArgs) -> Result<u8> {
    let change = TagChange {
        // `--set ""` is a set to nothing, not an absent flag.
        set: (!args.set.is_empty()).then(|| split_tags(&args.set)),
        add: split_tags(&args.add),
        remove: split_tags(&args.remove),
    };
    // Refused before the repository is locked, with restic's words.
    change.validate()?;
    let repo = cx.open().await?;
    let opts = TagOptions {
        ids: args.snapshots.clone(),
        filter: super::filter(&args.filter),
        change,
        lock: cx.lock_options(),
    };
    let changed = mover::ops::tag::tag(&repo, &opts).await?;
    if cx.g.json {
        for (old, new) in &changed {
            println!(
                "{}",
                serde_json::json!({"message_type": "changed",
                    "old_snapshot_id": old.to_hex(), "new_snapshot_id": new.to_hex()})
            );
        }
        println!(
            "{}",
            serde_json::json!({"message_type": "summary", "changed_snapshots": changed.len()})
        );
    } else if !cx.g.quiet {
        if changed.is_empty() {
            println!("no snapshots were modified");
        } else {
            println!("modified {} snapshots", changed.len());
        }
    }
    Ok(0)
}

pub async fn list(cx: &Cx<'_>, args: &cli::ListArgs) -> Result<u8> {
    use cli::ListKind;
    let repo = cx.open().await?;
    let kind = args.kind;
    let work = async {
        let mut out = std::io::stdout().lock();
        let mut line =
            |text: String| writeln!(out, "{text}").map_err(|e| Error::io("writing to stdout", e));
        if kind == ListKind::Blobs {
            let index = repo.load_index().await?;
            for (id, loc) in index.iter() {
                line(format!("{} {}", loc.blob_type, id.0.to_hex()))?;
            }
            return Ok(());
        }
        let ft = match kind {
            ListKind::Packs => FileType::Pack,
            ListKind::Index => FileType::Index,
            ListKind::Snapshots => FileType::Snapshot,
            ListKind::Keys => FileType::Key,
            ListKind::Locks | ListKind::Blobs => FileType::Lock,
        };
        for (id, _) in repo.storage().list(ft).await? {
            line(id.to_hex())?;
        }
        Ok(())
    };
    // As restic: listing locks takes none; everything else a shared lock.
    if kind == ListKind::Locks {
        work.await?;
    } else {
        lock::while_locked(&repo, LockMode::Shared, &cx.read_lock_options(), work).await?;
    }
    Ok(0)
}

pub fn generate(args: &cli::GenerateArgs) -> Result<u8> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shells = [
        (&args.bash_completion, Shell::Bash),
        (&args.zsh_completion, Shell::Zsh),
        (&args.fish_completion, Shell::Fish),
    ];
    for (target, shell) in shells {
        let Some(target) = target else { continue };
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cli::Cli::command(), "mover", &mut script);
        write_to(target, &script)?;
        if target.as_os_str() != "-" {
            eprintln!("writing {shell} completion file to {}", target.display());
        }
    }
    if let Some(dir) = &args.man {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let root = cli::Cli::command();
        let mut pages = vec![("mover".to_string(), root.clone())];
        for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages.push((format!("mover-{}", sub.get_name()), sub.clone()));
        }
        for (name, command) in pages {
            let mut page = Vec::new();
            clap_mangen::Man::new(command.name(name.clone()))
                .render(&mut page)
                .map_err(|e| Error::io(format!("rendering the man page of {name}"), e))?;
            let path = dir.join(format!("{name}.1"));
            write_to(&path, &page)?;
            eprintln!("writing man page {}", path.display());
        }
    }
    Ok(0)
}

fn write_to(target: &Path, bytes: &[u8]) -> Result<()> {
    if target.as_os_str() == "-" {
        return std::io::stdout()
            .write_all(bytes)
            .map_err(|e| Error::io("writing to stdout", e));
    }
    std::fs::write(target, bytes).map_err(|e| Error::io(format!("writing {}", target.display()), e))
}

pub async fn stats(cx: &Cx<'_>, args: &cli::StatsArgs) -> Result<u8> {
    use mover::ops::stats::{StatsMode, stats};
    // Refused before the repository is opened, with restic's words.
    let mode: StatsMode = args.mode.parse()?;
    let repo = cx.open().await?;
    let lock = cx.read_lock_options();
    let work = async {
        let filter = super::filter(&args.filter);
        let snapshots = mover::ops::select::find_snapshots(&repo, &args.snapshots, &filter).await?;
        let index = repo.load_index().await?;
        if !cx.g.json && !cx.g.quiet {
            println!("scanning...");
        }
        stats(&repo, &index, &snapshots, mode, &lock.cancel).await
    };
    let s = lock::while_locked(&repo, LockMode::Shared, &lock, work).await?;
    if cx.g.json {
        let text = serde_json::to_string(&s)
            .map_err(|e| Error::Internal(format!("encoding the statistics: {e}")))?;
        println!("{text}");
        return Ok(0);
    }
    if cx.g.quiet {
        return Ok(0);
    }
    let bytes = super::output::human_bytes;
    println!("Stats in {} mode:", mode.as_str());
    println!("     Snapshots processed:  {}", s.snapshots_count);
    if s.total_blob_count > 0 {
        println!("        Total Blob Count:  {}", s.total_blob_count);
    }
    if s.total_file_count > 0 {
        println!("        Total File Count:  {}", s.total_file_count);
    }
    if s.total_uncompressed_size > 0 {
        println!(
            " Total Uncompressed Size:  {:<5}",
            bytes(s.total_uncompressed_size)
        );
    }
    println!("              Total Size:  {:<5}", bytes(s.total_size));
    if s.compression_progress > 0.0 {
        println!("    Compression Progress:  {:.2}%", s.compression_progress);
    }
    if s.compression_ratio > 0.0 {
        println!("       Compression Ratio:  {:.2}x", s.compression_ratio);
    }
    if s.compression_space_saving > 0.0 {
        println!(
            "Compression Space Saving:  {:.2}%",
            s.compression_space_saving
        );
    }
    Ok(0)
}
