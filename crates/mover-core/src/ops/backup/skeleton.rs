//! The directory skeleton leading to the backup targets, as restic lays it out: absolute
//! targets keep their full path below the root, relative ones hang directly off the root.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Absolute, lexically cleaned form of a target path.
pub fn absolute_clean(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("current directory", e))?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// One level of the skeleton; children are sorted by raw name bytes.
#[derive(Default, Debug)]
pub struct Skeleton {
    pub children: BTreeMap<Vec<u8>, Skeleton>,
    /// Set when this entry is itself a target (then its children are not used).
    pub target: Option<PathBuf>,
}

impl Skeleton {
    /// Build the skeleton for `paths`; returns it and the sorted absolute target paths that
    /// the snapshot records.
    pub fn build(paths: &[PathBuf]) -> Result<(Skeleton, Vec<String>)> {
        let mut skeleton = Skeleton::default();
        let mut abs_paths = Vec::new();
        for p in paths {
            let abs = absolute_clean(p)?;
            std::fs::symlink_metadata(&abs)
                .map_err(|e| Error::io(format!("backup target {}", abs.display()), e))?;
            // restic's layout: an absolute path keeps all its components; a relative one
            // keeps its own, without `.` and `..` (so `.` is the snapshot's root, as in
            // VolSync's `cd /data && restic backup .`).
            let comps: Vec<Vec<u8>> = if p.is_absolute() {
                abs.iter().skip(1).map(|c| c.as_bytes().to_vec()).collect()
            } else {
                // Cleaned lexically first (`a/../b` is `b`); leading `..` are dropped.
                let mut kept: Vec<Vec<u8>> = Vec::new();
                for c in p.components() {
                    match c {
                        std::path::Component::Normal(n) => kept.push(n.as_bytes().to_vec()),
                        std::path::Component::ParentDir => {
                            kept.pop();
                        }
                        _ => {}
                    }
                }
                kept
            };
            skeleton.insert(&comps, abs.clone());
            abs_paths.push(abs.to_string_lossy().into_owned());
        }
        abs_paths.sort();
        abs_paths.dedup();
        Ok((skeleton, abs_paths))
    }

    fn insert(&mut self, components: &[Vec<u8>], target: PathBuf) {
        if self.target.is_some() {
            return; // an ancestor is already backed up whole
        }
        match components.split_first() {
            None => {
                self.target = Some(target);
                self.children.clear();
            }
            Some((first, rest)) => self
                .children
                .entry(first.clone())
                .or_default()
                .insert(rest, target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_keep_their_own_components_as_restic() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("w/x")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let rel = |p: &str| {
            let abs = tmp.path().join(p);
            pathdiff(&abs, &cwd)
        };
        let (sk, _) = Skeleton::build(&[rel("w/x/../x")]).unwrap();
        assert_eq!(sk.children.len(), 1, "{:?}", sk.children.keys());
        let (root, paths) = Skeleton::build(&[PathBuf::from(".")]).unwrap();
        assert!(root.target.is_some() && root.children.is_empty());
        assert_eq!(paths, vec![cwd.to_string_lossy().into_owned()]);
    }

    /// `to` relative to `from` (both absolute), with `..` where needed.
    fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> PathBuf {
        let (t, f): (Vec<_>, Vec<_>) = (to.components().collect(), from.components().collect());
        let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
        let mut out = PathBuf::new();
        for _ in common..f.len() {
            out.push("..");
        }
        for c in &t[common..] {
            out.push(c.as_os_str());
        }
        out
    }

    #[test]
    fn nested_targets_collapse_into_the_outer_one() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::create_dir_all(a.join("b")).unwrap();
        let (sk, paths) = Skeleton::build(&[a.join("b"), a.clone()]).unwrap();
        assert_eq!(paths.len(), 2);
        let mut node = &sk;
        for c in a.iter().skip(1) {
            node = &node.children[c.as_bytes()];
        }
        assert_eq!(node.target.as_deref(), Some(a.as_path()));
        assert!(node.children.is_empty());
    }

    #[test]
    fn cleans_dot_dot() {
        assert_eq!(
            absolute_clean(Path::new("/x/y/../z/./w")).unwrap(),
            PathBuf::from("/x/z/w")
        );
    }
}
