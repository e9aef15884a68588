//! Restoring over data that is already there: restic 0.17's `--overwrite` decisions for
//! files that exist, and `--delete` of what the snapshot does not have.
//!
//! `always` (the default) and `if-changed` compare an existing regular file with the
//! snapshot blob by blob (SHA-256 of each blob-sized piece) and rewrite only the blobs that
//! differ; `if-changed` first trusts a matching size and modification time and reads
//! nothing. `if-newer` leaves files whose mtime is not older than the snapshot's, `never`
//! leaves every existing file, metadata included.

use super::plan::{PlanDir, PlanFile, loc_str};
use super::select::Selector;
use crate::format::Id;
use crate::fs::write as fsw;
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// restic's `--overwrite` behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    #[default]
    Always,
    IfChanged,
    IfNewer,
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = String;

    fn from_str(s: &str) -> Result<Overwrite, String> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            other => Err(format!(
                "invalid overwrite behavior {other:?}, must be one of (always|if-changed|if-newer|never)"
            )),
        }
    }
}

/// What to do with one planned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FileAction {
    /// Create it fresh (nothing usable is there).
    Create,
    /// Leave it as it is, metadata too.
    Skip,
    /// Its content is already right: metadata only.
    Keep,
    /// Rewrite it in place except for the blobs at these offsets, which already match.
    Update(Vec<u64>),
}

impl FileAction {
    /// Whether the blob at `offset` still has to be written.
    pub(super) fn needs(&self, offset: u64) -> bool {
        match self {
            FileAction::Create => true,
            FileAction::Skip | FileAction::Keep => false,
            FileAction::Update(matched) => matched.binary_search(&offset).is_err(),
        }
    }
}

/// Decides what to do with `file`, whose target is `path`, under `mode`. A target that is
/// not a regular file (or cannot be read) is replaced.
pub(super) fn examine(path: &Path, file: &PlanFile, mode: Overwrite) -> FileAction {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return FileAction::Create;
    };
    match mode {
        Overwrite::Never => return FileAction::Skip,
        Overwrite::IfNewer => {
            let (secs, nanos) = file.meta.mtime();
            if (secs, nanos) <= (md.mtime(), md.mtime_nsec()) {
                return FileAction::Skip;
            }
            // Newer in the snapshot: overwritten as `always` does.
        }
        Overwrite::Always | Overwrite::IfChanged => {}
    }
    if !md.is_file() {
        return FileAction::Create;
    }
    if mode == Overwrite::IfChanged
        && md.len() == file.size
        && file.meta.mtime() == (md.mtime(), md.mtime_nsec())
    {
        return FileAction::Keep;
    }
    match matching_blobs(path, file) {
        Some(matched) if matched.len() == file.content.len() && md.len() == file.size => {
            FileAction::Keep
        }
        Some(matched) => FileAction::Update(matched),
        None => FileAction::Create,
    }
}

/// The offsets of the blobs whose bytes the existing file already holds; `None` when the
/// file cannot be read.
fn matching_blobs(path: &Path, file: &PlanFile) -> Option<Vec<u64>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut matched = Vec::new();
    for (id, &len) in file.content.iter().zip(&file.blob_lengths) {
        buf.resize(len as usize, 0);
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        if got < buf.len() {
            // The file ends early: everything from here is written.
            break;
        }
        if Id::hash(&buf) == id.0 {
            matched.push(offset);
        }
        offset += u64::from(len);
    }
    Some(matched)
}

/// Opens the file for its partial rewrite (`Update`), or creates it (`Create`); with
/// `replace_dirs` (`--delete`) a directory in the way is removed first, as restic does.
pub(super) fn prepare(
    path: &Path,
    file: &PlanFile,
    action: &FileAction,
    replace_dirs: bool,
) -> std::io::Result<()> {
    match action {
        FileAction::Create => {
            if replace_dirs && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                fsw::remove_all(path)?;
            }
            fsw::create_file(path, file.size).map(drop)
        }
        FileAction::Update(_) => fsw::open_for_update(path, file.size).map(drop),
        FileAction::Skip | FileAction::Keep => Ok(()),
    }
}

/// `--delete`: removes the entries of the restored directories that the snapshot does not
/// have there and that the include and exclude patterns select. Directories this restore
/// created (`fresh`) hold nothing else and are not listed. Returns how many entries were
/// removed and the failures.
pub(super) fn remove_unexpected(
    dirs: &[PlanDir],
    fresh: &[bool],
    selector: &Selector,
) -> (u64, Vec<String>) {
    let mut removed = 0u64;
    let mut errors = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        if !d.restored || fresh.get(i).copied().unwrap_or(false) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d.target) else {
            continue;
        };
        let expected: HashSet<&[u8]> = d.children.iter().map(|c| &c[..]).collect();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.as_bytes();
            if expected.contains(name) {
                continue;
            }
            let mut location = d.location.clone();
            if location != b"/" {
                location.push(b'/');
            }
            location.extend_from_slice(name);
            if !selector.select(&location, false).0 {
                continue;
            }
            match fsw::remove_all(&entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => errors.push(format!("{}: {e}", loc_str(&location))),
            }
        }
    }
    (removed, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobId;
    use crate::format::tree::{Node, NodeType};

    fn plan_file(data: &[&[u8]], mtime: i64) -> PlanFile {
        let mut node = Node::new(b"f".to_vec(), NodeType::File);
        node.mtime = chrono::DateTime::from_timestamp(mtime, 0)
            .unwrap()
            .fixed_offset();
        PlanFile {
            location: b"/f".to_vec().into_boxed_slice(),
            meta: fsw::Metadata::take(&mut node),
            content: data.iter().map(|d| BlobId(Id::hash(d))).collect(),
            dir: 0,
            size: data.iter().map(|d| d.len() as u64).sum(),
            blob_lengths: data.iter().map(|d| d.len() as u32).collect(),
        }
    }

    fn set_mtime(path: &Path, secs: i64) {
        let t = nix::sys::time::TimeSpec::new(secs, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    #[test]
    fn decisions_follow_restics_overwrite_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = plan_file(&[b"aaaa", b"bbbb", b"cc"], 1_000);
        assert_eq!(examine(&path, &file, Overwrite::Always), FileAction::Create);

        std::fs::write(&path, b"aaaabbbbcc").unwrap();
        set_mtime(&path, 5);
        assert_eq!(examine(&path, &file, Overwrite::Always), FileAction::Keep);
        assert_eq!(examine(&path, &file, Overwrite::Never), FileAction::Skip);
        assert_eq!(examine(&path, &file, Overwrite::IfNewer), FileAction::Keep);
        set_mtime(&path, 2_000);
        assert_eq!(examine(&path, &file, Overwrite::IfNewer), FileAction::Skip);

        // One blob differs: only it is rewritten.
        std::fs::write(&path, b"aaaaXbbbcc").unwrap();
        let update = examine(&path, &file, Overwrite::Always);
        assert_eq!(update, FileAction::Update(vec![0, 8]));
        assert!(!update.needs(0) && update.needs(4) && !update.needs(8));
        // if-changed trusts size and mtime and reads nothing.
        set_mtime(&path, 1_000);
        assert_eq!(
            examine(&path, &file, Overwrite::IfChanged),
            FileAction::Keep
        );
        // A longer file keeps its matching blobs and is cut to size.
        std::fs::write(&path, b"aaaabbbbccEXTRA").unwrap();
        assert_eq!(
            examine(&path, &file, Overwrite::Always),
            FileAction::Update(vec![0, 4, 8])
        );
        prepare(&path, &file, &FileAction::Update(vec![0, 4, 8]), false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"aaaabbbbcc");
        // A directory where the file goes is replaced.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(examine(&path, &file, Overwrite::Always), FileAction::Create);
        assert!(prepare(&path, &file, &FileAction::Create, false).is_err());
        prepare(&path, &file, &FileAction::Create, true).unwrap();
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert!("sometimes".parse::<Overwrite>().is_err());
    }
}
