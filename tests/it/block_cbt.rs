//! Changed block tracking: `backup --image IMG --parent ID --changed-ranges FILE` reads only
//! the changed ranges (and the chunks around them), and its snapshot lists exactly the blobs
//! a full re-read lists; restic checks it and dumps the same bytes.

use crate::block::mover_backup as backup;
use crate::support::tree_gen::SplitMix64;
use crate::support::*;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// The content list of the one file in snapshot `id`, read by restic.
fn content_of(repo: &Path, id: &str) -> serde_json::Value {
    let cat = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&ok(restic().arg("-r").arg(repo).args(["cat"]).args(args))).unwrap()
    };
    let mut tree = cat(&["snapshot", id])["tree"].as_str().unwrap().to_string();
    loop {
        let t = cat(&["blob", &tree]);
        let node = &t["nodes"][0];
        match node["type"].as_str() {
            Some("dir") => tree = node["subtree"].as_str().unwrap().to_string(),
            _ => return node["content"].clone(),
        }
    }
}

/// A sparse 96 MiB image: random regions, holes between them.
fn make_image(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(96 * MIB).unwrap();
    let mut rng = SplitMix64(17);
    for (off, len) in [(0, 20 * MIB), (30 * MIB, 40 * MIB), (90 * MIB, 6 * MIB)] {
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.write_all_at(&buf, off).unwrap();
    }
}

#[test]
fn changed_ranges_read_the_changes_and_list_the_blobs_of_a_full_read() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let img = tmp.path().join("disk.img");
    make_image(&img);
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let img_arg = img.to_str().unwrap();
    let first = backup(&repo, &["--image", "--host", "cbt", img_arg]);
    let parent = first["snapshot_id"].as_str().unwrap().to_string();

    // Scattered 64 KiB writes (into data and into a hole), and 2 MiB more at the end.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let mut rng = SplitMix64(5);
    let mut ranges = String::from("# offset length\n");
    for off in [3 * MIB + 4096, 25 * MIB, 50 * MIB + 77, 93 * MIB, 96 * MIB] {
        let len = if off == 96 * MIB { 2 * MIB } else { 64 * 1024 };
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.write_all_at(&buf, off).unwrap();
        ranges.push_str(&format!("{off} {len}\n"));
    }
    drop(f);
    let list = tmp.path().join("ranges.txt");
    std::fs::write(&list, ranges).unwrap();

    let cbt = backup(
        &repo,
        &[
            "--image",
            "--host",
            "cbt",
            "--parent",
            &parent,
            "--changed-ranges",
            list.to_str().unwrap(),
            img_arg,
        ],
    );
    let read = cbt["bytes_read"].as_u64().unwrap();
    assert!(read > 0 && read < 32 * MIB, "bytes_read {read} of 98 MiB");
    assert_eq!(cbt["total_bytes_processed"].as_u64(), Some(98 * MIB));
    assert_eq!(cbt["parent"].as_str(), Some(parent.as_str()));
    let full = backup(&repo, &["--image", "--host", "full", "--force", img_arg]);
    assert!(full["bytes_read"].as_u64().unwrap() > 60 * MIB);
    // The full re-read stores no data the changed-range backup did not already store.
    assert_eq!(full["data_blobs"].as_u64(), Some(0), "{full}");
    let (cbt_id, full_id) = (
        cbt["snapshot_id"].as_str().unwrap(),
        full["snapshot_id"].as_str().unwrap(),
    );
    assert_eq!(content_of(&repo, cbt_id), content_of(&repo, full_id));

    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    let dumped = run(restic()
        .arg("-r")
        .arg(&repo)
        .args(["dump", cbt_id, img_arg]));
    assert!(dumped.status.success());
    assert!(
        dumped.stdout == std::fs::read(&img).unwrap(),
        "restic dump differs"
    );
    let out = tmp.path().join("restored.img");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", cbt_id, "--verify", "--target-device"])
        .arg(&out));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
}

#[test]
fn changed_ranges_without_a_parent_or_well_formed_lines_are_refused_before_anything() {
    let tmp = tempdir();
    let repo = tmp.path().join("never-created");
    let img = tmp.path().join("disk.img");
    std::fs::write(&img, vec![1u8; 4096]).unwrap();
    let list = tmp.path().join("ranges.txt");
    std::fs::write(&list, "0 4096\n").unwrap();
    let (img_arg, list_arg) = (img.to_str().unwrap(), list.to_str().unwrap());
    let refused = |args: &[&str], says: &str| {
        let out = run(mover().arg("-r").arg(&repo).arg("backup").args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(!repo.exists(), "{args:?} created the repository");
    };
    refused(
        &["--image", "--changed-ranges", list_arg, img_arg],
        "--changed-ranges needs --parent",
    );
    refused(
        &["--parent", "latest", "--changed-ranges", list_arg, img_arg],
        "needs a block device or --image",
    );
    std::fs::write(&list, "0 4096\n12 x\n").unwrap();
    refused(
        &[
            "--image",
            "--parent",
            "latest",
            "--changed-ranges",
            list_arg,
            img_arg,
        ],
        "line 2",
    );
}
