//! `init`: create a repository.

use super::Cx;
use super::output::short;
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::repo::{InitOptions, Repository};

pub async fn init(cx: &Cx<'_>, args: &cli::InitArgs) -> Result<u8> {
    let storage = cx.storage(true)?;
    let pw = cx.password()?;
    let chunker: ops::backup::ChunkerKind = args
        .chunker
        .parse()
        .map_err(|e: String| Error::InvalidInput(format!("--chunker: {e}")))?;
    let opts = InitOptions {
        version: parse_version(&args.repository_version)?,
        chunker: Some(
            match chunker {
                ops::backup::ChunkerKind::FastCdc => "fastcdc",
                ops::backup::ChunkerKind::Rabin => "rabin",
            }
            .to_string(),
        ),
        ..InitOptions::default()
    };
    let location = storage.display().to_string();
    let repo = Repository::init(storage, &pw, &opts).await?;
    if cx.g.json {
        super::output::print_initialized_json(&repo.config().id, &location);
    } else if !cx.g.quiet {
        println!(
            "created restic repository {} at {}",
            short(&repo.config().id),
            location
        );
        println!(
            "\nPlease note that knowledge of your password is required to access\nthe repository. Losing your password means that your data is\nirrecoverably lost."
        );
    }
    Ok(0)
}

fn parse_version(v: &str) -> Result<u32> {
    match v {
        "1" => Ok(1),
        "2" | "latest" | "stable" => Ok(2),
        other => Err(Error::InvalidInput(format!(
            "unknown repository version {other:?}: use 1, 2, latest or stable"
        ))),
    }
}
