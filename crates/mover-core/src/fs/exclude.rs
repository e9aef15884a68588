//! restic-style exclude patterns (`--exclude`, `--exclude-file`), matching as restic's
//! `internal/filter` package does: Go `filepath.Match` per path component, relative patterns
//! at any depth, `**` for any number of components, `!` to re-include. Also the device
//! comparison behind `--one-file-system`. Decides only; never walks or reads file contents.

use crate::fs::glob::{go_clean, go_match};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One component of a parsed pattern. An empty `text` stands for `**`; a first component of
/// `/` marks a rooted pattern (both as in restic).
#[derive(Debug, Clone)]
struct Part {
    text: Vec<u8>,
    simple: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<Part>,
    negated: bool,
}

/// A compiled list of exclude patterns; later patterns override earlier ones.
#[derive(Debug, Clone, Default)]
pub struct ExcludeMatcher {
    patterns: Vec<Pattern>,
    has_negated: bool,
}

/// Split into components; a leading `/` becomes the component `/` (restic's `splitPath`).
fn split_path(p: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
    if parts.first().is_some_and(|first| first.is_empty()) {
        parts[0] = b"/";
    }
    parts
}

fn parse_pattern(original: &str) -> Pattern {
    let (negated, body) = match original.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, original),
    };
    let cleaned = go_clean(body);
    let parts = split_path(cleaned.as_bytes())
        .into_iter()
        .map(|part| {
            let simple = !part.iter().any(|b| b"\\[]*?".contains(b));
            let text = if part == b"**" {
                Vec::new()
            } else {
                part.to_vec()
            };
            Part { text, simple }
        })
        .collect();
    Pattern { parts, negated }
}

fn double_wildcard(parts: &[Part]) -> Option<usize> {
    parts.iter().position(|p| p.text.is_empty())
}

/// restic's `match`: does the pattern match the path components `strs`?
fn match_parts(parts: &[Part], strs: &[&[u8]]) -> bool {
    if let Some(pos) = double_wildcard(parts) {
        // Expand `**` into 0, 1, 2, ... single-component wildcards.
        let max_extra = (strs.len() + 1).saturating_sub(parts.len());
        if strs.len() + 1 < parts.len() {
            return false;
        }
        for extra in 0..=max_extra {
            let mut expanded: Vec<Part> = Vec::with_capacity(parts.len() + extra);
            expanded.extend_from_slice(&parts[..pos]);
            expanded.extend((0..extra).map(|_| Part {
                text: b"*".to_vec(),
                simple: false,
            }));
            expanded.extend_from_slice(&parts[pos + 1..]);
            if match_parts(&expanded, strs) {
                return true;
            }
        }
        return false;
    }
    if parts.is_empty() {
        return strs.is_empty();
    }
    if parts.len() > strs.len() {
        return false;
    }
    let mut min_offset = 0;
    let mut max_offset = strs.len() - parts.len();
    if parts[0].text == b"/" {
        max_offset = 0;
    } else if strs[0] == b"/" {
        min_offset = 1;
    }
    (min_offset..=max_offset).rev().any(|offset| {
        parts.iter().enumerate().rev().all(|(i, part)| {
            let s = strs[offset + i];
            if part.simple {
                part.text == s
            } else {
                // Patterns are validated in `new`, so a match error cannot happen here; restic
                // treats one as "no match" after a warning.
                go_match(&part.text, s).unwrap_or(false)
            }
        })
    })
}

impl ExcludeMatcher {
    /// Compiles `patterns`; empty patterns are ignored. Fails with the list of malformed
    /// patterns, as restic does before starting a backup.
    pub fn new(patterns: &[String]) -> Result<ExcludeMatcher, String> {
        let mut invalid = Vec::new();
        let mut compiled = Vec::new();
        for original in patterns.iter().filter(|p| !p.is_empty()) {
            let pattern = parse_pattern(original);
            if pattern
                .parts
                .iter()
                .any(|part| go_match(&part.text, &part.text).is_err())
            {
                invalid.push(original.clone());
            }
            compiled.push(pattern);
        }
        if !invalid.is_empty() {
            return Err(format!(
                "invalid exclude pattern(s): {}",
                invalid
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let has_negated = compiled.iter().any(|p| p.negated);
        Ok(ExcludeMatcher {
            patterns: compiled,
            has_negated,
        })
    }

    /// Reads restic `--exclude-file` files: one pattern per line, surrounding whitespace
    /// trimmed, empty lines and `#` comments skipped. A UTF-8 BOM at the start is dropped
    /// (restic's `textfile.Read`). `$VAR` expansion is not done.
    pub fn from_files(paths: &[PathBuf]) -> io::Result<Vec<String>> {
        let mut patterns = Vec::new();
        for path in paths {
            let data = std::fs::read(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("failed to read patterns from file {}: {e}", path.display()),
                )
            })?;
            let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
            let text = String::from_utf8_lossy(data);
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                patterns.push(line.to_string());
            }
        }
        Ok(patterns)
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (absolute) is excluded: the last pattern that matches decides, a
    /// negated one re-including the path.
    pub fn matches(&self, path: &Path) -> bool {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            return false;
        }
        let strs = split_path(bytes);
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.negated {
                if matched && match_parts(&pattern.parts, &strs) {
                    matched = false;
                }
            } else if !matched {
                matched = match_parts(&pattern.parts, &strs);
                if matched && !self.has_negated {
                    break;
                }
            }
        }
        matched
    }

    /// Convenience for callers holding a raw path.
    pub fn matches_bytes(&self, path: &[u8]) -> bool {
        self.matches(Path::new(OsStr::from_bytes(path)))
    }
}

/// The device a file lives on (`st_dev`), for `--one-file-system`.
pub fn device_of(md: &Metadata) -> u64 {
    md.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(pattern: &str, path: &str) -> bool {
        if pattern.is_empty() {
            // restic's Match treats the empty pattern as matching everything.
            return true;
        }
        let p = parse_pattern(pattern);
        match_parts(&p.parts, &split_path(path.as_bytes()))
    }

    #[test]
    fn restic_match_table() {
        // From restic internal/filter/filter_test.go (matchTests), minus Windows-only cases.
        let cases: &[(&str, &str, bool)] = &[
            ("", "foo", true),
            ("", "/x/y/z/foo", true),
            ("*.go", "/foo/bar/test.go", true),
            ("*.c", "/foo/bar/test.go", false),
            ("*", "/foo/bar/test.go", true),
            ("**", "/foo/bar/test.go", true),
            ("foo*", "/foo/bar/test.go", true),
            ("bar*", "/foo/bar/test.go", true),
            ("/bar*", "/foo/bar/test.go", false),
            ("bar/*", "/foo/bar/test.go", true),
            ("baz/*", "/foo/bar/test.go", false),
            ("bar/test.go", "/foo/bar/test.go", true),
            ("bar/*.go", "/foo/bar/test.go", true),
            ("ba*/*.go", "/foo/bar/test.go", true),
            ("bb*/*.go", "/foo/bar/test.go", false),
            ("test.*", "/foo/bar/test.go", true),
            ("tesT.*", "/foo/bar/test.go", false),
            ("bar/*", "/foo/bar/baz", true),
            ("bar", "/foo/bar", true),
            ("/foo/bar", "/foo/bar", true),
            ("/foo/bar/", "/foo/bar", true),
            ("/foo/bar", "/foo/baz", false),
            ("/foo/bar", "/foo/baz/", false),
            ("/foo///bar", "/foo/bar", true),
            ("/foo/../bar", "/foo/bar", false),
            ("/foo/../bar", "/bar", true),
            ("/foo", "/foo/baz", true),
            ("/foo/", "/foo/baz", true),
            ("/foo/*", "/foo", false),
            ("/foo/*", "/foo/baz", true),
            ("bar", "/foo/bar/baz", true),
            ("bar", "/foo/bar/test.go", true),
            ("/foo/*test.*", "/foo/bar/test.go", false),
            ("/foo/*/test.*", "/foo/bar/test.go", true),
            ("/foo/*/bar/test.*", "/foo/bar/test.go", false),
            ("/*/*/bar/test.*", "/foo/bar/test.go", false),
            ("/*/*/bar/test.*", "/foo/bar/baz/test.go", false),
            ("/*/*/baz/test.*", "/foo/bar/baz/test.go", true),
            ("/*/foo/bar/test.*", "/foo/bar/baz/test.go", false),
            ("/foo/bar/test.*", "bar/baz/test.go", false),
            ("/x/y/bar/baz/test.*", "bar/baz/test.go", false),
            ("/x/y/bar/baz/test.c", "bar/baz/test.go", false),
            ("baz/test.*", "bar/baz/test.go", true),
            ("baz/tesT.*", "bar/baz/test.go", false),
            ("test.go", "bar/baz/test.go", true),
            ("*.go", "bar/baz/test.go", true),
            ("*.c", "bar/baz/test.go", false),
            ("sdk", "/foo/bar/sdk", true),
            ("sdk", "/foo/bar/sdk/test/sdk_foo.go", true),
            (
                "sdk/*/cpp/*/*vars*.html",
                "/usr/share/doc/libreoffice/sdk/docs/cpp/ref/a00517.html",
                false,
            ),
            (
                "foo/**/bar/*.go",
                "/home/user/foo/work/special/project/bar/test.go",
                true,
            ),
            ("foo/**/bar/*.go", "/home/user/foo/bar/test.go", true),
            ("foo/**/bar/*.go", "x/foo/bar/test.go", true),
            ("foo/**/bar/*.go", "foo/bar/test.go", true),
            ("foo/**/bar/*.go", "foo/bar/baz/bar/test.go", true),
            ("foo/**/bar/*.go", "/home/user/foo/test.c", false),
            ("foo/**/bar/*.go", "bar/foo/main.go", false),
            ("foo/**/bar/*.go", "/foo/bar/main.go", true),
            ("foo/**/bar/*.go", "bar/main.go", false),
            ("foo/**/bar", "/home/user/foo/x/y/bar", true),
            ("foo/**/bar", "/home/user/foo/x/y/bar/main.go", true),
            ("foo/**/bar/**/x", "/home/user/foo/bar/x", true),
            (
                "foo/**/bar/**/x",
                "/home/user/foo/blaaa/blaz/bar/shared/work/x",
                true,
            ),
            ("user/**/important*", "/home/user/work/x/y/hidden/x", false),
            (
                "user/**/hidden*/**/c",
                "/home/user/work/x/y/hidden/z/a/b/c",
                true,
            ),
            ("/home/[uU]ser/?.go", "/home/user/F.go", true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(single(pattern, path), *want, "Match({pattern:?}, {path:?})");
        }
    }

    fn matcher(patterns: &[&str]) -> ExcludeMatcher {
        let owned: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        match ExcludeMatcher::new(&owned) {
            Ok(m) => m,
            Err(e) => panic!("patterns {patterns:?}: {e}"),
        }
    }

    #[test]
    fn restic_list_table() {
        // restic filter_test.go filterListTests (the `match` column).
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "/foo/bar/test.go", false),
            (&["*.go"], "/foo/bar/test.go", true),
            (&["*.c"], "/foo/bar/test.go", false),
            (&["*.go", "*.c"], "/foo/bar/test.go", true),
            (&["*"], "/foo/bar/test.go", true),
            (&["x"], "/foo/bar/test.go", false),
            (&["?"], "/foo/bar/test.go", false),
            (&["?", "x"], "/foo/bar/x", true),
            (&["/*/*/bar/test.*"], "/foo/bar/test.go", false),
            (&["/*/*/bar/test.*", "*.go"], "/foo/bar/test.go", true),
            (&["", "*.c"], "/foo/bar/test.go", false),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(
                matcher(patterns).matches(Path::new(path)),
                *want,
                "List({patterns:?}, {path:?})"
            );
        }
        assert!(matcher(&[]).is_empty());
    }

    #[test]
    fn negation_later_overrides() {
        let m = matcher(&["/data/*", "!/data/keep", "!*.log"]);
        assert!(m.matches(Path::new("/data/drop")));
        assert!(!m.matches(Path::new("/data/keep")));
        assert!(!m.matches(Path::new("/data/x.log")));
        assert!(!m.matches(Path::new("/other")));
        // A negation before the exclusion does not re-include.
        let m = matcher(&["!/data/keep", "/data/*"]);
        assert!(m.matches(Path::new("/data/keep")));
        // A later positive pattern excludes again.
        let m = matcher(&["*.tmp", "!/a/*", "/a/b.tmp"]);
        assert!(m.matches(Path::new("/a/b.tmp")));
        assert!(!m.matches(Path::new("/a/c.tmp")));
        assert!(m.matches(Path::new("/z/c.tmp")));
    }

    #[test]
    fn invalid_patterns_rejected() {
        let err = ExcludeMatcher::new(&["ok".to_string(), "test/[".to_string()]);
        assert!(matches!(err, Err(ref e) if e.contains("test/[")), "{err:?}");
        assert!(ExcludeMatcher::new(&["test/**/[".to_string()]).is_err());
        assert!(ExcludeMatcher::new(&["a\\".to_string()]).is_err());
    }

    #[test]
    fn non_utf8_paths() {
        let m = matcher(&["*.bin", "/x/a?b"]);
        assert!(m.matches_bytes(b"/x/\xff\xfe.bin"));
        assert!(m.matches_bytes(b"/x/a\xffb"));
        assert!(!m.matches_bytes(b"/x/a\xff\xffb"));
        assert!(!m.matches(Path::new("")));
    }

    #[test]
    fn exclude_files_are_read_like_restic() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "\u{feff}# comment\n\n  *.tmp  \n\t/var/cache\r\n")?;
        std::fs::write(&b, "!keep.tmp\n   # indented comment\n")?;
        let patterns = ExcludeMatcher::from_files(&[a, b])?;
        assert_eq!(patterns, vec!["*.tmp", "/var/cache", "!keep.tmp"]);
        let missing = ExcludeMatcher::from_files(&[dir.path().join("missing")]);
        let err = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("missing"), "{err}");
        Ok(())
    }

    #[test]
    fn device_is_st_dev() -> io::Result<()> {
        let md = std::fs::symlink_metadata("/")?;
        assert_eq!(device_of(&md), md.dev());
        Ok(())
    }
}
