//! The one backup plan every front end calls (the CLI, a mover Job, `mover volsync` through
//! the CLI): what was asked for in, the engine's options out. The policy a front end would
//! otherwise re-derive lives here: tag splitting, the parent choice, whether the source is a
//! tree or one volume (a block device, an image, stdin), pack-size bounds, upload concurrency
//! by backend, and what `--changed-ranges` needs.

use super::{BackupOptions, ChunkerKind, ParentChoice};
use crate::compress::CompressionMode;
use crate::error::{Error, Result};
use crate::fs::block::{VolumeKind, volume_kind};
use crate::ops::block::{VolumeBackupOptions, VolumeSource};
use crate::ops::pipeline::{DEFAULT_PACK_SIZE_BYTES, PipelineOptions};
use crate::repo::lock::LockOptions;
use std::ops::Range;
use std::path::PathBuf;

/// restic's bounds of `--pack-size`, in MiB.
pub const PACK_SIZE_MIB: std::ops::RangeInclusive<u64> = 4..=128;

/// A backup as asked for, before any repository is opened.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub paths: Vec<PathBuf>,
    /// Read standard input as one file of this name (restic's `--stdin --stdin-filename`).
    pub stdin_filename: Option<String>,
    /// A single regular file is a volume image, backed up as one file by offset.
    pub image: bool,
    /// The file name a device or image gets in the snapshot (default: its absolute path).
    pub volume_name: Option<String>,
    /// `None`: this machine's host name.
    pub host: Option<String>,
    /// Tags as given; each may hold several, comma-separated (restic's `--tag a,b`).
    pub tags: Vec<String>,
    /// A snapshot id or `latest`; `None` means the latest snapshot of the same host and paths.
    pub parent: Option<String>,
    /// Read everything again: no parent.
    pub force: bool,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub with_atime: bool,
    pub strict_change_detection: bool,
    /// Overrides the repository's chunker (`rabin` or `fastcdc`).
    pub chunker: Option<String>,
    /// Concurrent file readers; `None` for the engine's default.
    pub read_concurrency: Option<usize>,
    pub direct_io: bool,
    pub compression: CompressionMode,
    /// restic's `--pack-size` in MiB; `None` for restic's default.
    pub pack_size_mib: Option<u64>,
    /// Only these byte ranges of the volume changed since `parent` (changed block tracking).
    pub changed_ranges: Option<Vec<Range<u64>>>,
    pub lock: LockOptions,
}

impl Default for BackupRequest {
    fn default() -> Self {
        BackupRequest {
            paths: Vec::new(),
            stdin_filename: None,
            image: false,
            volume_name: None,
            host: None,
            tags: Vec::new(),
            parent: None,
            force: false,
            excludes: Vec::new(),
            one_file_system: false,
            with_atime: false,
            strict_change_detection: false,
            chunker: None,
            read_concurrency: None,
            direct_io: true,
            compression: CompressionMode::Auto,
            pack_size_mib: None,
            changed_ranges: None,
            lock: LockOptions::default(),
        }
    }
}

/// What to run: a tree backup, or one volume read as a single file.
pub enum BackupPlan {
    Tree(BackupOptions),
    Volume {
        source: VolumeSource,
        options: VolumeBackupOptions,
    },
}

/// Tags as restic reads them: `--tag a,b --tag c` is three tags; blanks are dropped.
pub fn split_tags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// restic's `--pack-size` (MiB, 4 to 128) in bytes; restic's default when `None`.
pub fn pack_size_bytes(mib: Option<u64>) -> Result<u64> {
    match mib {
        None => Ok(DEFAULT_PACK_SIZE_BYTES),
        Some(mib) if PACK_SIZE_MIB.contains(&mib) => Ok(mib * 1024 * 1024),
        Some(mib) => Err(Error::InvalidInput(format!(
            "pack size {mib} MiB is outside the allowed range of {} to {} MiB",
            PACK_SIZE_MIB.start(),
            PACK_SIZE_MIB.end()
        ))),
    }
}

impl BackupRequest {
    /// The parent rule: `--force` reads everything, an explicit parent is used as given,
    /// otherwise the latest snapshot of the same host and paths.
    pub fn parent_choice(&self) -> ParentChoice {
        match (&self.parent, self.force) {
            (_, true) => ParentChoice::None,
            (Some(p), false) => ParentChoice::Snapshot(p.clone()),
            (None, false) => ParentChoice::Latest,
        }
    }

    /// The volume to back up as one file (stdin, a block device, or an image with `image`),
    /// and its name in the snapshot; `None` for a tree backup.
    pub fn volume_source(&self) -> Result<Option<(VolumeSource, Option<String>)>> {
        if let Some(name) = &self.stdin_filename {
            return Ok(Some((VolumeSource::Stdin, Some(name.clone()))));
        }
        let kinds = self
            .paths
            .iter()
            .map(|p| volume_kind(p).unwrap_or(VolumeKind::Other))
            .collect::<Vec<_>>();
        let volume = |k: &VolumeKind| {
            *k == VolumeKind::BlockDevice || (self.image && *k == VolumeKind::RegularFile)
        };
        match (self.paths.as_slice(), kinds.as_slice()) {
            ([path], [kind]) if volume(kind) => Ok(Some((
                VolumeSource::Path(path.clone()),
                self.volume_name.clone(),
            ))),
            (_, kinds) if self.image || kinds.iter().any(volume) => Err(Error::InvalidInput(
                "a block device or --image backs up exactly one volume: give a single path".into(),
            )),
            _ => Ok(None),
        }
    }

    /// What can be refused before a repository is opened (or created): flags out of range,
    /// an unknown chunker, a volume given with other paths, changed ranges without a parent
    /// or without a volume to read by offset.
    pub fn check(&self) -> Result<()> {
        pack_size_bytes(self.pack_size_mib)?;
        self.chunker_kind()?;
        let volume = self.volume_source()?;
        if self.changed_ranges.is_some() {
            if self.parent.is_none() || self.force {
                return Err(Error::InvalidInput(
                    "--changed-ranges needs --parent SNAPSHOT: the ranges say what changed \
                     since that snapshot"
                        .into(),
                ));
            }
            if !matches!(volume, Some((VolumeSource::Path(_), _))) {
                return Err(Error::InvalidInput(
                    "--changed-ranges needs a block device or --image IMAGE to read by offset"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    fn chunker_kind(&self) -> Result<Option<ChunkerKind>> {
        self.chunker
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|e: String| Error::InvalidInput(format!("--chunker: {e}")))
            })
            .transpose()
    }

    /// The engine's options; `upload_concurrency` is the opened storage's
    /// (`Storage::upload_concurrency`: by how far away the backend is).
    pub fn plan(&self, upload_concurrency: usize) -> Result<BackupPlan> {
        self.check()?;
        let pipeline = PipelineOptions {
            compression: self.compression,
            pack_size_bytes: pack_size_bytes(self.pack_size_mib)?,
            upload_concurrency,
            ..Default::default()
        };
        let tree = BackupOptions::default();
        let host = self.host.clone().unwrap_or(tree.host.clone());
        let tags = split_tags(&self.tags);
        let chunker = self.chunker_kind()?;
        if let Some((source, name)) = self.volume_source()? {
            let options = VolumeBackupOptions {
                name,
                host,
                tags,
                parent: self.parent_choice(),
                pipeline,
                chunker,
                lock: self.lock.clone(),
                changed_ranges: self.changed_ranges.clone(),
            };
            return Ok(BackupPlan::Volume { source, options });
        }
        Ok(BackupPlan::Tree(BackupOptions {
            paths: self.paths.clone(),
            host,
            tags,
            excludes: self.excludes.clone(),
            one_file_system: self.one_file_system,
            with_atime: self.with_atime,
            parent: self.parent_choice(),
            strict_change_detection: self.strict_change_detection,
            read_threads: self
                .read_concurrency
                .map_or(tree.read_threads, |n| n.max(1)),
            direct_io: self.direct_io,
            pipeline,
            chunker,
            lock: self.lock.clone(),
            ..tree
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(plan: BackupPlan) -> BackupOptions {
        match plan {
            BackupPlan::Tree(o) => o,
            BackupPlan::Volume { .. } => panic!("planned a volume backup"),
        }
    }

    #[test]
    fn tags_split_on_commas_and_blanks_are_dropped() {
        let tags = ["a,b".to_string(), " c ".into(), ",".into()];
        assert_eq!(split_tags(&tags), ["a", "b", "c"]);
        let req = BackupRequest {
            paths: vec![".".into()],
            tags: tags.to_vec(),
            host: Some("h".into()),
            ..Default::default()
        };
        let o = tree(req.plan(3).unwrap());
        assert_eq!((o.tags.len(), o.host.as_str()), (3, "h"));
        assert_eq!(o.pipeline.upload_concurrency, 3);
    }

    #[test]
    fn the_parent_is_the_latest_unless_named_or_forced_away() {
        let mut req = BackupRequest::default();
        assert!(matches!(req.parent_choice(), ParentChoice::Latest));
        req.parent = Some("abc".into());
        assert!(matches!(req.parent_choice(), ParentChoice::Snapshot(p) if p == "abc"));
        req.force = true;
        assert!(matches!(req.parent_choice(), ParentChoice::None));
    }

    #[test]
    fn pack_sizes_outside_restics_bounds_are_refused() {
        assert_eq!(pack_size_bytes(None).unwrap(), DEFAULT_PACK_SIZE_BYTES);
        assert_eq!(pack_size_bytes(Some(4)).unwrap(), 4 << 20);
        assert_eq!(pack_size_bytes(Some(128)).unwrap(), 128 << 20);
        for bad in [0, 3, 129] {
            let e = pack_size_bytes(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("outside the allowed range of 4 to 128 MiB"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_image_is_one_volume_and_a_directory_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, [0u8; 4096]).unwrap();
        let as_image = BackupRequest {
            paths: vec![img.clone()],
            image: true,
            volume_name: Some("data.img".into()),
            ..Default::default()
        };
        match as_image.plan(1).unwrap() {
            BackupPlan::Volume { source, options } => {
                assert!(matches!(source, VolumeSource::Path(p) if p == img));
                assert_eq!(options.name.as_deref(), Some("data.img"));
            }
            BackupPlan::Tree(_) => panic!("an image planned as a tree"),
        }
        // Without `image` a regular file is a tree backup of that file.
        let file = BackupRequest {
            paths: vec![img.clone()],
            ..Default::default()
        };
        assert!(matches!(file.plan(1).unwrap(), BackupPlan::Tree(_)));
        let two = BackupRequest {
            paths: vec![img.clone(), dir.path().into()],
            image: true,
            ..Default::default()
        };
        let e = two.check().unwrap_err().to_string();
        assert!(e.contains("exactly one volume"), "{e}");
        let stdin = BackupRequest {
            stdin_filename: Some("db.sql".into()),
            ..Default::default()
        };
        assert!(matches!(
            stdin.plan(1).unwrap(),
            BackupPlan::Volume {
                source: VolumeSource::Stdin,
                ..
            }
        ));
    }

    #[test]
    fn changed_ranges_need_a_parent_and_a_volume_read_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, [0u8; 4096]).unwrap();
        let ok = BackupRequest {
            paths: vec![img],
            image: true,
            parent: Some("abc".into()),
            changed_ranges: Some(vec![0..10, 20..30]),
            ..Default::default()
        };
        ok.check().unwrap();
        let forced = BackupRequest {
            force: true,
            ..ok.clone()
        };
        let e = forced.check().unwrap_err().to_string();
        assert!(e.contains("--changed-ranges needs --parent"), "{e}");
        let tree = BackupRequest {
            paths: vec![dir.path().into()],
            image: false,
            ..ok.clone()
        };
        let e = tree.check().unwrap_err().to_string();
        assert!(e.contains("needs a block device or --image"), "{e}");
        let stdin = BackupRequest {
            stdin_filename: Some("x".into()),
            ..ok
        };
        assert!(stdin.check().is_err());
    }

    #[test]
    fn an_unknown_chunker_is_refused_before_anything_runs() {
        let req = BackupRequest {
            paths: vec![".".into()],
            chunker: Some("zstd".into()),
            ..Default::default()
        };
        let e = req.check().unwrap_err().to_string();
        assert!(e.starts_with("--chunker"), "{e}");
    }
}
