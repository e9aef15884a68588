//! restic's `--include` / `--exclude` semantics for restore: which snapshot paths are
//! restored, and which directories may hold something that is.

use crate::error::{Error, Result};
use crate::fs::ExcludeMatcher;
use crate::fs::glob::{go_clean, go_match};

/// One `--include` pattern: matching via [`ExcludeMatcher`], plus the components for restic's
/// "a child of this path may match" test.
#[derive(Debug)]
pub(super) struct IncludePattern {
    pub(super) negated: bool,
    pub(super) matcher: ExcludeMatcher,
    pub(super) parts: Vec<Vec<u8>>,
}

pub(super) fn split_components(path: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts.first().is_some_and(|p| p.is_empty()) {
        parts[0] = b"/";
    }
    parts
}

impl IncludePattern {
    pub(super) fn new(pattern: &str) -> std::result::Result<IncludePattern, String> {
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let matcher = ExcludeMatcher::new(&[body.to_string()])?;
        let cleaned = go_clean(body);
        let parts = split_components(cleaned.as_bytes())
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        Ok(IncludePattern {
            negated,
            matcher,
            parts,
        })
    }

    /// restic's `childMatch`: relative patterns may match below any path; rooted ones only
    /// below paths that match their leading components (up to a `**`).
    pub(super) fn child_may_match(&self, location: &[u8]) -> bool {
        if self.parts.first().map(Vec::as_slice) != Some(b"/".as_slice()) {
            return true;
        }
        let mut strs = split_components(location);
        if let Some(pos) = self.parts.iter().position(|p| p == b"**") {
            strs.truncate(pos);
        }
        let n = strs.len().min(self.parts.len());
        self.parts[..n]
            .iter()
            .zip(&strs[..n])
            .all(|(p, s)| p.as_slice() == *s || go_match(p, s).unwrap_or(false))
    }
}

/// Decides which snapshot paths are restored, as restic's restore `SelectFilter`.
#[derive(Debug, Default)]
pub(super) struct Selector {
    pub(super) excludes: Option<ExcludeMatcher>,
    pub(super) includes: Vec<IncludePattern>,
}

impl Selector {
    pub(super) fn new(includes: &[String], excludes: &[String]) -> Result<Selector> {
        let excludes = if excludes.iter().any(|p| !p.is_empty()) {
            Some(ExcludeMatcher::new(excludes).map_err(Error::InvalidInput)?)
        } else {
            None
        };
        let includes = includes
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IncludePattern::new(p))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| Error::InvalidInput(e.replace("exclude", "include")))?;
        Ok(Selector { excludes, includes })
    }

    /// `(selected for restore, a child may be selected)` for the snapshot path `location`.
    pub(super) fn select(&self, location: &[u8], is_dir: bool) -> (bool, bool) {
        if self
            .excludes
            .as_ref()
            .is_some_and(|ex| ex.matches_bytes(location))
        {
            return (false, false);
        }
        if self.includes.is_empty() {
            return (true, is_dir);
        }
        let mut matched = false;
        let mut child = false;
        for p in &self.includes {
            let m = p.matcher.matches_bytes(location);
            if p.negated {
                matched &= !m;
                child &= !m;
            } else {
                matched |= m;
                child |= p.child_may_match(location);
            }
        }
        (matched, child && is_dir)
    }
}

#[cfg(test)]
pub(super) fn selector(includes: &[&str], excludes: &[&str]) -> Selector {
    let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    Selector::new(&s(includes), &s(excludes)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::selector as sel;
    use super::*;

    #[test]
    fn selector_without_patterns_takes_everything() {
        let s = sel(&[], &[]);
        assert_eq!(s.select(b"/a", true), (true, true));
        assert_eq!(s.select(b"/a/b", false), (true, false));
    }

    #[test]
    fn exclude_drops_subtree() {
        let s = sel(&[], &["*.tmp", "/data/cache"]);
        assert_eq!(s.select(b"/data/x.tmp", false), (false, false));
        assert_eq!(s.select(b"/data/cache", true), (false, false));
        assert_eq!(s.select(b"/data/cache2", true), (true, true));
        assert_eq!(s.select(b"/data/y", false), (true, false));
    }

    #[test]
    fn include_selects_parents_lazily_and_whole_subtrees() {
        let s = sel(&["/tmp/src/x"], &[]);
        // Parents are not selected but may hold selected children.
        assert_eq!(s.select(b"/tmp", true), (false, true));
        assert_eq!(s.select(b"/tmp/src", true), (false, true));
        assert_eq!(s.select(b"/tmp/other", true), (false, false));
        assert_eq!(s.select(b"/tmp/src/y", false), (false, false));
        // The matching dir and everything below it are selected.
        assert_eq!(s.select(b"/tmp/src/x", true), (true, true));
        assert_eq!(s.select(b"/tmp/src/x/file", false), (true, false));
        assert_eq!(s.select(b"/tmp/src/x/d/e", true), (true, true));
    }

    #[test]
    fn relative_and_wildcard_includes() {
        let s = sel(&["*.txt"], &[]);
        assert_eq!(s.select(b"/a", true), (false, true));
        assert_eq!(s.select(b"/a/b.txt", false), (true, false));
        assert_eq!(s.select(b"/a/b.bin", false), (false, false));
        let s = sel(&["/home/*/docs"], &[]);
        assert_eq!(s.select(b"/home", true), (false, true));
        assert_eq!(s.select(b"/home/bob", true), (false, true));
        assert_eq!(s.select(b"/var", true), (false, false));
        assert_eq!(s.select(b"/home/bob/docs/a", false), (true, false));
        let s = sel(&["/a/**/z"], &[]);
        assert_eq!(s.select(b"/a/b/c", true), (false, true));
        assert_eq!(s.select(b"/b", true), (false, false));
    }

    #[test]
    fn negated_include_and_exclude_together() {
        let s = sel(&["/d", "!/d/skip"], &["*.log"]);
        assert_eq!(s.select(b"/d/keep", false), (true, false));
        assert_eq!(s.select(b"/d/skip", true), (false, false));
        assert_eq!(s.select(b"/d/a.log", false), (false, false));
    }

    #[test]
    fn bad_pattern_is_invalid_input() {
        let err = Selector::new(&["[".to_string()], &[]).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.contains("include")),
            "{err}"
        );
    }
}
