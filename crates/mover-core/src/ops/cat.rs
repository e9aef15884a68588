//! `cat`: print repository objects as `restic cat` does: decrypted JSON indented the way Go's
//! `json.MarshalIndent(v, "", "  ")` writes it, raw bytes for packs and blobs. Reads only.

use crate::error::{Error, Result};
use crate::format::{BlobId, Id};
use crate::ops::dump::{Found, lookup};
use crate::repo::{Repository, SnapshotFilter};
use crate::storage::FileType;

const VALID: &str = "config|masterkey|snapshot|index|key|lock|blob|pack|tree";

/// Re-indents compact JSON as Go's `json.Indent(dst, src, "", "  ")`: a newline and indent
/// after `{`, `[` and `,`, `": "` after keys, empty objects and arrays kept as `{}` / `[]`.
/// Whitespace outside strings is dropped; strings are copied unchanged.
pub fn indent_json(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // An opening bracket waits here until we know whether its container is empty.
    let mut pending_open = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', 2 * depth));
    };
    for &c in src {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if pending_open {
            pending_open = false;
            if c == b'}' || c == b']' {
                depth -= 1;
                out.push(c);
                continue;
            }
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                in_string = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                depth += 1;
                pending_open = true;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(c),
        }
    }
    out
}

fn pretty(json: &[u8]) -> Vec<u8> {
    let mut out = indent_json(json);
    out.push(b'\n');
    out
}

/// Resolves a full id or a unique prefix among the files of type `ft`.
async fn resolve(repo: &Repository, ft: FileType, spec: &str) -> Result<Id> {
    let lower = spec.to_ascii_lowercase();
    if lower.len() == 64 {
        return Id::from_hex(&lower)
            .map_err(|e| Error::InvalidInput(format!("unable to parse ID {spec:?}: {e}")));
    }
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(format!(
            "unable to parse ID {spec:?}: expected hex digits"
        )));
    }
    let mut found: Vec<Id> = repo
        .storage()
        .list(ft)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.to_hex().starts_with(&lower))
        .collect();
    match found.len() {
        0 => Err(Error::NotFound {
            what: format!("{} file {spec}", ft.dir()),
        }),
        1 => Ok(found.remove(0)),
        n => Err(Error::InvalidInput(format!(
            "prefix {spec} is ambiguous ({n} {} files match)",
            ft.dir()
        ))),
    }
}

fn need_id<'a>(what: &str, id: Option<&'a str>) -> Result<&'a str> {
    id.filter(|s| !s.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("cat {what} needs an ID argument")))
}

/// The bytes `restic cat WHAT [ID]` prints (JSON output ends with a newline).
pub async fn cat(repo: &Repository, what: &str, id: Option<&str>) -> Result<Vec<u8>> {
    match what {
        "config" => {
            let raw = repo.storage().read_config().await?;
            let plain = repo
                .key()
                .open(&raw)
                .map_err(|e| Error::crypto("config file", e))?;
            Ok(pretty(&plain))
        }
        "masterkey" => Ok(pretty(&repo.key().to_json())),
        "snapshot" => {
            let spec = need_id(what, id)?;
            let (sid, _) = repo.find_snapshot(spec, &SnapshotFilter::default()).await?;
            let plain = repo.load_unpacked(FileType::Snapshot, sid.id()).await?;
            Ok(pretty(&plain))
        }
        "index" => {
            let id = resolve(repo, FileType::Index, need_id(what, id)?).await?;
            let mut plain = repo.load_unpacked(FileType::Index, &id).await?;
            // restic prints the stored JSON (which ends with a newline) and another newline.
            plain.push(b'\n');
            Ok(plain)
        }
        "key" => {
            let id = resolve(repo, FileType::Key, need_id(what, id)?).await?;
            let raw = repo.storage().read(FileType::Key, &id).await?;
            Ok(pretty(&raw))
        }
        "lock" => {
            let id = resolve(repo, FileType::Lock, need_id(what, id)?).await?;
            let plain = repo.load_unpacked(FileType::Lock, &id).await?;
            Ok(pretty(&plain))
        }
        "pack" => {
            let id = resolve(repo, FileType::Pack, need_id(what, id)?).await?;
            Ok(repo.storage().read(FileType::Pack, &id).await?.to_vec())
        }
        "blob" => {
            let spec = need_id(what, id)?;
            let bid = BlobId(Id::from_hex(&spec.to_ascii_lowercase()).map_err(|e| {
                Error::InvalidInput(format!("unable to parse blob ID {spec:?}: {e}"))
            })?);
            let index = repo.load_index().await?;
            repo.load_blob(&index, &bid).await
        }
        "tree" => {
            let spec = need_id(what, id)?;
            let (snap, path) = spec.split_once(':').unwrap_or((spec, "/"));
            let (_, sn) = repo.find_snapshot(snap, &SnapshotFilter::default()).await?;
            let index = repo.load_index().await?;
            let tree_id = match lookup(repo, &index, sn.tree, path).await? {
                Found::Root(t) => t,
                Found::Node(item, node) => node.subtree.ok_or_else(|| {
                    Error::InvalidInput(format!("path {item:?} is not a directory"))
                })?,
            };
            let tree = repo.load_tree(&index, &tree_id).await?;
            Ok(pretty(&tree.encode()))
        }
        other => Err(Error::InvalidInput(format!(
            "invalid type {other:?}, must be one of [{VALID}]"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(s: &str) -> String {
        String::from_utf8(indent_json(s.as_bytes())).unwrap()
    }

    #[test]
    fn indents_like_go_marshal_indent() {
        assert_eq!(
            ind(r#"{"mac":{"k":"a","r":"b"},"encrypt":"c"}"#),
            "{\n  \"mac\": {\n    \"k\": \"a\",\n    \"r\": \"b\"\n  },\n  \"encrypt\": \"c\"\n}"
        );
        assert_eq!(
            ind(r#"{"paths":["/a","/b"],"tags":[],"x":{},"n":1}"#),
            "{\n  \"paths\": [\n    \"/a\",\n    \"/b\"\n  ],\n  \"tags\": [],\n  \"x\": {},\n  \"n\": 1\n}"
        );
    }

    #[test]
    fn strings_are_copied_verbatim() {
        assert_eq!(
            ind(r#"{"a":"x, {y}: \"[z]\"\\"}"#),
            "{\n  \"a\": \"x, {y}: \\\"[z]\\\"\\\\\"\n}"
        );
        // Whitespace outside strings (a tree's trailing newline) is dropped.
        assert_eq!(ind("{\"nodes\":[]}\n"), "{\n  \"nodes\": []\n}");
    }

    #[test]
    fn indented_json_parses_to_the_same_value() {
        let src = r#"{"time":"2022-08-25T17:55:00Z","tree":"ab","paths":["/x"],"hostname":"h","nested":[[1,2],[],{"k":[{}]}]}"#;
        let a: serde_json::Value = serde_json::from_str(src).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&indent_json(src.as_bytes())).unwrap();
        assert_eq!(a, b);
    }
}
