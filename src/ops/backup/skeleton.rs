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
            let comps: Vec<Vec<u8>> = if p.is_absolute() {
                abs.iter().skip(1).map(|c| c.as_bytes().to_vec()).collect()
            } else {
                abs.file_name()
                    .map(|n| vec![n.as_bytes().to_vec()])
                    .unwrap_or_default()
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
