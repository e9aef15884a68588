//! Listing one directory for the backup walker: entries with their lstat results, in restic's
//! tree order (raw name bytes). Never follows symlinks and never reads file contents.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One directory entry with its lstat result.
#[derive(Debug, Clone)]
pub struct DirEntryInfo {
    /// Raw name bytes.
    pub name: Vec<u8>,
    pub path: PathBuf,
    pub metadata: Metadata,
}

fn with_path(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The entries of `dir` (without `.` and `..`), lstat'ed and sorted by raw name bytes.
pub fn read_dir_sorted(dir: &Path) -> io::Result<Vec<DirEntryInfo>> {
    let mut entries = Vec::new();
    let reader = std::fs::read_dir(dir).map_err(|e| with_path(dir, "reading directory", e))?;
    for entry in reader {
        let entry = entry.map_err(|e| with_path(dir, "reading directory", e))?;
        let path = entry.path();
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|e| with_path(&path, "lstat", e))?;
        let name = OsString::into_vec(entry.file_name());
        entries.push(DirEntryInfo {
            name,
            path,
            metadata,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn sorted_by_raw_bytes_without_following_links() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let names: [&[u8]; 6] = [b"b", b"a", b"\xff\xfe", b"B", b"a\nb", b"\xc3\xa9"];
        for name in names {
            std::fs::write(dir.path().join(OsStr::from_bytes(name)), name)?;
        }
        std::os::unix::fs::symlink("missing-target", dir.path().join("link"))?;
        let entries = read_dir_sorted(dir.path())?;
        let got: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        let want: Vec<&[u8]> = vec![b"B", b"a", b"a\nb", b"b", b"link", b"\xc3\xa9", b"\xff\xfe"];
        assert_eq!(got, want);
        let link = &entries[4];
        assert!(link.metadata.file_type().is_symlink());
        assert_eq!(link.path, dir.path().join("link"));
        Ok(())
    }

    #[test]
    fn errors_name_the_directory() {
        let err = read_dir_sorted(Path::new("/nonexistent-dir-for-test"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent-dir-for-test"), "{err}");
    }
}
