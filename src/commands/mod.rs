//! One function per subcommand, one file per group of them: resolve the repository and
//! password, call the library operation, print its result the way restic does. Policy (what
//! to lock, what to keep, what to delete) lives in the library; this layer only maps flags
//! to options and renders results.

mod backup;
mod browse;
mod check;
mod everyday;
mod forget;
mod init;
mod k8s;
mod key;
mod output;
mod prune;
mod restore;
mod status;
mod unlock;
mod volsync;

use crate::cli::{self, Cli, Command, FilterArgs};
use mover::Cancel;
use mover::compress::CompressionMode;
use mover::error::{Error, Result};
use mover::ops;
use mover::repo::lock::LockOptions;
use mover::repo::{Repository, SnapshotFilter};
use mover::storage::{Storage, StorageOptions};
use std::io::Write;

/// What every subcommand gets: the global flags and the run's cancel handle.
pub struct Cx<'a> {
    pub g: &'a cli::GlobalOptions,
    pub cancel: Cancel,
}

pub async fn run(cli: Cli, cancel: Cancel) -> Result<u8> {
    let cx = Cx {
        g: &cli.global,
        cancel,
    };
    match &cli.command {
        Command::Version => {
            println!(
                "mover {} (restic repository format v1/v2) on {}/{}",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            Ok(0)
        }
        Command::Init(args) => init::init(&cx, args).await,
        Command::Backup(args) => backup::backup(&cx, args).await,
        Command::Restore(args) => restore::restore(&cx, args).await,
        Command::Snapshots(args) => browse::snapshots(&cx, args).await,
        Command::Ls(args) => browse::ls(&cx, args).await,
        Command::Cat(args) => browse::cat(&cx, args).await,
        Command::Dump(args) => browse::dump(&cx, args).await,
        Command::Forget(args) => forget::forget(&cx, args).await,
        Command::Prune(args) => prune::prune(&cx, args).await,
        Command::Check(args) => check::check(&cx, args).await,
        Command::Unlock(args) => unlock::unlock(&cx, args).await,
        Command::Key(args) => key::key(&cx, args).await,
        Command::Tag(args) => everyday::tag(&cx, args).await,
        Command::List(args) => everyday::list(&cx, args).await,
        Command::Generate(args) => everyday::generate(args),
        Command::Stats(args) => everyday::stats(&cx, args).await,
        Command::Crds => k8s::crds(),
        Command::Controller(args) => k8s::controller(&cx, args).await,
        Command::Job(args) => k8s::job(&cx, args).await,
        Command::Volsync(args) => volsync::volsync(&cx, args).await,
    }
}

impl Cx<'_> {
    /// The repository's storage; `direct_io` lets local pack files bypass the page cache.
    pub fn storage(&self, direct_io: bool) -> Result<Storage> {
        self.storage_at(&repository_location(self.g)?, direct_io)
    }

    /// Storage at another location than the repository's, with the same options (CA,
    /// connections, limits) and credentials from the same environment.
    pub fn storage_at(&self, location: &str, direct_io: bool) -> Result<Storage> {
        let opts = StorageOptions {
            cacert: self.g.cacert.clone(),
            insecure_tls: self.g.insecure_tls,
            connections: self.g.connections.max(1),
            direct_io,
            limit_upload_kib: self.g.limit_upload,
            limit_download_kib: self.g.limit_download,
        };
        Ok(Storage::open(location, &opts)?)
    }

    pub fn password(&self) -> Result<String> {
        password(self.g)
    }

    pub async fn open(&self) -> Result<Repository> {
        self.open_with(true).await
    }

    pub async fn open_with(&self, direct_io: bool) -> Result<Repository> {
        let storage = self.storage(direct_io)?;
        let pw = self.password()?;
        Repository::open(storage, &pw).await
    }

    /// `--retry-lock` and the run's cancel handle, for operations that lock.
    pub fn lock_options(&self) -> LockOptions {
        LockOptions {
            retry: self.g.retry_lock,
            cancel: self.cancel.clone(),
            ..LockOptions::default()
        }
    }

    /// [`Cx::lock_options`] of a read-only command, which honours `--no-lock`.
    pub fn read_lock_options(&self) -> LockOptions {
        LockOptions {
            no_lock: self.g.no_lock,
            ..self.lock_options()
        }
    }

    /// Whether human-readable progress and results are printed.
    pub fn verbose_output(&self) -> bool {
        !self.g.quiet && !self.g.json
    }
}

fn repository_location(g: &cli::GlobalOptions) -> Result<String> {
    if let Some(r) = &g.repo {
        if !r.is_empty() {
            return Ok(r.clone());
        }
    }
    if let Some(f) = &g.repository_file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| Error::io(format!("reading repository file {}", f.display()), e))?;
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    Err(Error::InvalidInput(
        "no repository given: use -r/--repo or set RESTIC_REPOSITORY or RESTIC_REPOSITORY_FILE"
            .into(),
    ))
}

/// The password, from (in restic's order) a command, a file, `RESTIC_PASSWORD`, or stdin.
fn password(g: &cli::GlobalOptions) -> Result<String> {
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| Error::io("running the password command", e))?;
        if !out.status.success() {
            return Err(Error::InvalidInput(format!(
                "password command failed with {}",
                out.status
            )));
        }
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    if let Some(f) = &g.password_file {
        let raw = std::fs::read(f)
            .map_err(|e| Error::io(format!("reading password file {}", f.display()), e))?;
        let text = String::from_utf8_lossy(&raw);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        return Ok(text.trim().to_string());
    }
    if let Ok(p) = std::env::var("RESTIC_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("enter password for repository: ");
        let _ = std::io::stderr().flush();
    }
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading password from stdin", e))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        return Err(Error::InvalidInput(
            "no password given: set RESTIC_PASSWORD, RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND"
                .into(),
        ));
    }
    Ok(line)
}

pub fn filter(f: &FilterArgs) -> SnapshotFilter {
    SnapshotFilter {
        hosts: f.host.clone(),
        paths: f.path.clone(),
        tags: f.tag.clone(),
    }
}

pub fn compression(g: &cli::GlobalOptions) -> Result<CompressionMode> {
    g.compression
        .parse::<CompressionMode>()
        .map_err(|e| Error::InvalidInput(format!("--compression: {e}")))
}

/// `--pack-size` in bytes, within restic's bounds (the library's rule).
pub fn pack_size_bytes(g: &cli::GlobalOptions) -> Result<u64> {
    ops::backup::request::pack_size_bytes(g.pack_size)
}
