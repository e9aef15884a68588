//! Whole-file writes of local packs with O_DIRECT. A backup writes each pack once and never
//! reads it back; through the page cache every 4 KiB of it would cost a kernel copy and a
//! freshly allocated cache page (several seconds of system time per GB on a VM) and would
//! evict the caches of the workloads beside the mover. The file is written to a staging
//! name next to its final one, synced and renamed into place, as the object store's own
//! local writes are, so a crash never leaves a partial pack under a pack's name.

use super::direct_read::{ALIGN, give_back, take_aligned};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes copied into the aligned buffer and written per request.
const CHUNK_BYTES: usize = 4 << 20;

/// Writes `data` as the file `path`. `Ok(false)` when the filesystem does not take direct
/// writes; nothing is left behind then and the caller writes the ordinary way.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<bool> {
    let Some((file, staging)) = create_staging(path)? else {
        return Ok(false);
    };
    let written = write_all_direct(&file, data).and_then(|direct| {
        if direct {
            file.set_len(data.len() as u64)?;
            file.sync_all()?;
        }
        Ok(direct)
    });
    drop(file);
    match written {
        Ok(true) => {}
        other => {
            let _ = std::fs::remove_file(&staging);
            return other;
        }
    }
    if let Err(e) = std::fs::rename(&staging, path) {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// Creates a new staging file `<path>#<n>` opened for direct writes, creating missing
/// parent directories. `None` when the filesystem refuses `O_DIRECT`.
fn create_staging(path: &Path) -> io::Result<Option<(File, PathBuf)>> {
    let mut n = 1u32;
    let mut created_dirs = false;
    loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staging = PathBuf::from(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&staging)
        {
            Ok(file) => return Ok(Some((file, staging))),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created_dirs => {
                created_dirs = true;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes `data` from offset 0 in aligned requests through one pooled buffer; the last
/// request is padded with zeros to a whole block (the caller truncates the file after).
/// `Ok(false)` when the filesystem refuses the direct transfer.
fn write_all_direct(file: &File, data: &[u8]) -> io::Result<bool> {
    let align = ALIGN as usize;
    let Some((mut raw, offset)) = take_aligned(CHUNK_BYTES) else {
        return Ok(false);
    };
    let result = (|| {
        for (i, part) in data.chunks(CHUNK_BYTES).enumerate() {
            let len = part.len().div_ceil(align) * align;
            let buf = &mut raw[offset..offset + len];
            buf[..part.len()].copy_from_slice(part);
            buf[part.len()..].fill(0);
            match file.write_all_at(buf, (i * CHUNK_BYTES) as u64) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    })();
    give_back(raw);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn writes_exact_contents_of_any_length() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            CHUNK_BYTES,
            CHUNK_BYTES + 3,
            9 << 20,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data = pattern(len);
            if !write_file(&path, &data)? {
                // A filesystem without O_DIRECT: nothing may be left behind.
                assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
                return Ok(());
            }
            assert_eq!(std::fs::read(&path)?, data, "length {len}");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
        Ok(())
    }

    #[test]
    fn creates_missing_directories_and_replaces_existing_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("data").join("ab").join("pack");
        if !write_file(&path, &pattern(10_000))? {
            return Ok(());
        }
        assert!(write_file(&path, b"second")?);
        assert_eq!(std::fs::read(&path)?, b"second");
        Ok(())
    }
}
