//! mover restores every snapshot of the repositories restic made in testdata/, and what it
//! writes matches restic's own view recorded in each manifest.

use crate::support::*;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

const FIXTURES: [&str; 5] = [
    "restic-0.14-v1-tree",
    "restic-0.14-v2-tree",
    "restic-0.14-v2-nocomp-tree",
    "restic-0.14-v2-tiny-repo",
    "restic-testdata-small-repo-v1",
];

fn manifest(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.manifest.json"));
    let text = std::fs::read_to_string(&path).expect("read manifest");
    serde_json::from_str(&text).expect("parse manifest")
}

fn node_path(node: &serde_json::Value) -> PathBuf {
    if let Some(b64) = node["path_b64"].as_str() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("path_b64");
        PathBuf::from(std::ffi::OsStr::from_bytes(&raw))
    } else {
        PathBuf::from(node["path"].as_str().expect("path"))
    }
}

fn check_snapshot(name: &str, repo: &std::path::Path, snap: &serde_json::Value) {
    let tmp = tempdir();
    let target = tmp.path().join("restore");
    let id = snap["id"].as_str().expect("id");
    ok(mover()
        .arg("-r")
        .arg(repo)
        .args(["restore", id, "--target"])
        .arg(&target));
    let mut inodes: HashMap<u64, u64> = HashMap::new();
    let nodes = snap["nodes"].as_array().expect("nodes");
    assert!(!nodes.is_empty());
    for node in nodes {
        let rel = node_path(node);
        let path = target.join(&rel);
        let ctx = format!("{name} snapshot {} {}", &id[..8], rel.display());
        let md =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{ctx}: not restored: {e}"));
        let kind = node["type"].as_str().unwrap();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let actual_kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "chardev"
        } else {
            "dev"
        };
        assert_eq!(actual_kind, kind, "{ctx}: type");
        if kind != "symlink" {
            let mode = u32::from_str_radix(node["mode"].as_str().unwrap(), 8).unwrap();
            assert_eq!(md.mode() & 0o7777, mode, "{ctx}: mode");
        }
        if is_root() {
            assert_eq!(md.uid() as u64, node["uid"].as_u64().unwrap(), "{ctx}: uid");
            assert_eq!(md.gid() as u64, node["gid"].as_u64().unwrap(), "{ctx}: gid");
        }
        let mtime = &node["mtime"];
        assert_eq!(
            md.mtime(),
            mtime["secs"].as_i64().unwrap(),
            "{ctx}: mtime secs"
        );
        assert_eq!(
            md.mtime_nsec(),
            mtime["nanos"].as_i64().unwrap(),
            "{ctx}: mtime nanos"
        );
        match kind {
            "file" => {
                let data = std::fs::read(&path).unwrap();
                assert_eq!(
                    data.len() as u64,
                    node["size"].as_u64().unwrap(),
                    "{ctx}: size"
                );
                let digest = hex::encode(Sha256::digest(&data));
                assert_eq!(digest, node["sha256"].as_str().unwrap(), "{ctx}: content");
            }
            "symlink" => {
                let target = std::fs::read_link(&path).unwrap();
                assert_eq!(
                    target.to_string_lossy(),
                    node["linktarget"].as_str().unwrap(),
                    "{ctx}: link target"
                );
            }
            _ => {}
        }
        if let Some(xattrs) = node["xattrs"].as_array() {
            for x in xattrs {
                let want = base64::engine::general_purpose::STANDARD
                    .decode(x["value_b64"].as_str().unwrap())
                    .unwrap();
                let got = xattr::get(&path, x["name"].as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{ctx}: xattr: {e}"));
                assert_eq!(got, Some(want), "{ctx}: xattr value");
            }
        }
        // Names that shared an inode in the source share one after restore.
        if node["links"].as_u64().unwrap_or(1) > 1 && kind == "file" {
            let src_inode = node["inode"].as_u64().unwrap();
            let prev = inodes.insert(src_inode, md.ino());
            if let Some(prev) = prev {
                assert_eq!(prev, md.ino(), "{ctx}: hard link not recreated");
            }
        }
    }
}

#[test]
fn mover_restores_every_fixture_snapshot_like_restic() {
    for name in FIXTURES {
        let m = manifest(name);
        let tmp = tempdir();
        let repo = unpack_fixture(name, tmp.path());
        // Same snapshot ids as restic lists.
        let listed: serde_json::Value = serde_json::from_str(&ok(mover()
            .arg("-r")
            .arg(&repo)
            .args(["snapshots", "--json"])))
        .expect("snapshots json");
        let mut ours: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        let mut theirs: Vec<&str> = m["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}: snapshot ids");
        for snap in m["snapshots"].as_array().unwrap() {
            check_snapshot(name, &repo, snap);
        }
    }
}

#[test]
fn mover_cat_config_matches_fixture() {
    for name in FIXTURES {
        let m = manifest(name);
        let tmp = tempdir();
        let repo = unpack_fixture(name, tmp.path());
        let cfg: serde_json::Value =
            serde_json::from_str(&ok(mover().arg("-r").arg(&repo).args(["cat", "config"])))
                .expect("config json");
        assert_eq!(cfg["version"], m["repository_version"], "{name}");
        assert_eq!(cfg["id"], m["repository_id"], "{name}");
        assert_eq!(cfg["chunker_polynomial"], m["chunker_polynomial"], "{name}");
    }
}

#[test]
fn mover_dumps_restic_stdin_snapshot() {
    let m = manifest("restic-0.14-v2-tree");
    let tmp = tempdir();
    let repo = unpack_fixture("restic-0.14-v2-tree", tmp.path());
    let snap = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"] == serde_json::json!(["stdin"]))
        .expect("stdin snapshot in manifest");
    let node = &snap["nodes"][0];
    let out =
        run(mover()
            .arg("-r")
            .arg(&repo)
            .args(["dump", snap["id"].as_str().unwrap(), "disk.img"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() as u64, node["size"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha256::digest(&out.stdout)),
        node["sha256"].as_str().unwrap()
    );
}
