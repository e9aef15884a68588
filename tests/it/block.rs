//! Block volumes: images with data, zero regions and holes, stdin streams and loop devices,
//! backed up by mover as one file node and read back by restic `dump`, and restic's own
//! `--stdin` snapshots restored by mover, byte for byte.

use crate::support::tree_gen::SplitMix64;
use crate::support::*;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

/// A sparse image of `size` bytes: random data regions, a region of written zeros, holes
/// everywhere else.
fn make_image(path: &Path, size: u64, seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = SplitMix64(seed);
    for (off, len) in [(0, 3 * MIB), (size / 3, 5 * MIB + 12345), (size - MIB, MIB)] {
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.write_all_at(&buf, off).unwrap();
    }
    f.write_all_at(&vec![0u8; 4 * MIB as usize], size / 2)
        .unwrap();
    f.sync_all().unwrap();
}

pub(crate) fn json_summary(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    serde_json::from_str(line).unwrap()
}

pub(crate) fn mover_backup(repo: &Path, args: &[&str]) -> serde_json::Value {
    json_summary(&ok(mover()
        .arg("-r")
        .arg(repo)
        .arg("--json")
        .arg("backup")
        .args(args)))
}

fn restic_dump(repo: &Path, name: &str) -> Vec<u8> {
    let out = run(restic().arg("-r").arg(repo).args(["dump", "latest", name]));
    assert!(
        out.status.success(),
        "restic dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mover_dump(repo: &Path, name: &str) -> Vec<u8> {
    let out = run(mover().arg("-r").arg(repo).args(["dump", "latest", name]));
    assert!(
        out.status.success(),
        "mover dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn same_bytes(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at offset {i}");
    }
}

fn abs(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Back up `source` (an image with `--image`, or a device), then check restic and mover
/// read it back, restore it to a file and, if given, onto `device_target`.
fn check_volume(repo: &Path, source: &Path, extra: &[&str], tmp: &Path) {
    let image = std::fs::read(source).unwrap();
    let mut args: Vec<&str> = extra.to_vec();
    let src = abs(source);
    args.push(&src);
    let s = mover_backup(repo, &args);
    assert_eq!(
        s["total_bytes_processed"].as_u64(),
        Some(image.len() as u64)
    );
    ok(restic().arg("-r").arg(repo).args(["check", "--read-data"]));
    same_bytes(&restic_dump(repo, &src), &image, "restic dump");
    same_bytes(&mover_dump(repo, &src), &image, "mover dump");
    same_bytes(
        &mover_dump(repo, src.trim_start_matches('/')),
        &image,
        "mover dump without leading slash",
    );

    let out = tmp.join("restored.img");
    ok(mover()
        .arg("-r")
        .arg(repo)
        .args(["restore", "latest", "--verify", "--target-device"])
        .arg(&out));
    same_bytes(&std::fs::read(&out).unwrap(), &image, "restored image");
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated < image.len() as u64 / 2,
        "zero regions should be holes: {allocated} bytes allocated of {}",
        image.len()
    );
}

#[test]
fn image_with_holes_round_trips_and_second_backup_adds_only_the_change() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let img = tmp.path().join("disk.img");
    let size = 64 * MIB;
    make_image(&img, size, 7);
    ok(mover().arg("-r").arg(&repo).arg("init"));
    check_volume(&repo, &img, &["--image"], tmp.path());

    // Change one region: only its chunks are new; holes are not read.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let mut patch = vec![0u8; MIB as usize];
    SplitMix64(99).fill(&mut patch);
    f.write_all_at(&patch, size / 3 + MIB).unwrap();
    drop(f);
    let s = mover_backup(&repo, &["--image", &abs(&img)]);
    assert!(s["parent"].is_string(), "parent snapshot used: {s}");
    let added = s["data_added"].as_u64().unwrap();
    assert!(added > 0 && added < 20 * MIB, "data_added {added}");
    let read = s["bytes_read"].as_u64().unwrap();
    assert!(read > 9 * MIB && read < size, "bytes_read {read}");
    assert_eq!(s["files_changed"].as_u64(), Some(1));
    same_bytes(
        &restic_dump(&repo, &abs(&img)),
        &std::fs::read(&img).unwrap(),
        "restic dump after change",
    );

    // Without --image a regular file is a tree backup, as before.
    let s = mover_backup(&repo, &[&abs(&img)]);
    assert_eq!(s["total_files_processed"].as_u64(), Some(1));
}

/// A ~100 MiB stream: random data with long zero runs.
fn stream_bytes() -> Vec<u8> {
    let mut v = vec![0u8; 100 * MIB as usize];
    let mut rng = SplitMix64(5);
    for start in [0usize, 30, 55, 90] {
        let s = start * MIB as usize;
        rng.fill(&mut v[s..s + 7 * MIB as usize]);
    }
    v
}

fn pipe_into(cmd: &mut Command, data: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshot_tree(repo: &Path, host: &str) -> serde_json::Value {
    let snaps: serde_json::Value = serde_json::from_str(&ok(restic().arg("-r").arg(repo).args([
        "snapshots",
        "--json",
        "--host",
        host,
    ])))
    .unwrap();
    let tree = snaps[0]["tree"].as_str().unwrap().to_string();
    serde_json::from_str(&ok(restic()
        .arg("-r")
        .arg(repo)
        .args(["cat", "blob", &tree])))
    .unwrap()
}

#[test]
fn stdin_stream_matches_restic_stdin_both_ways() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    ok(restic().arg("-r").arg(&repo).arg("init"));
    let data = stream_bytes();
    pipe_into(
        restic().arg("-r").arg(&repo).args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "disk.img",
            "--host",
            "by-restic",
        ]),
        &data,
    );
    pipe_into(
        mover().arg("-r").arg(&repo).args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "disk.img",
            "--host",
            "by-mover",
        ]),
        &data,
    );
    let theirs = snapshot_tree(&repo, "by-restic");
    let ours = snapshot_tree(&repo, "by-mover");
    let strip = |t: &serde_json::Value| {
        let mut n = t["nodes"][0].clone();
        for k in ["mtime", "atime", "ctime"] {
            n.as_object_mut().unwrap().remove(k);
        }
        n
    };
    assert_eq!(theirs["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(strip(&ours), strip(&theirs), "file nodes differ");

    let snaps: serde_json::Value = serde_json::from_str(&ok(restic().arg("-r").arg(&repo).args([
        "snapshots",
        "--json",
        "--host",
        "by-mover",
    ])))
    .unwrap();
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/disk.img"]));
    same_bytes(
        &run(restic()
            .arg("-r")
            .arg(&repo)
            .args(["dump", "--host", "by-mover", "latest", "disk.img"]))
        .stdout,
        &data,
        "restic dump of mover's stdin snapshot",
    );

    // restic's snapshot, restored by mover.
    let out = tmp.path().join("from-restic.img");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--host", "by-restic", "--verify"])
        .arg("--target-device")
        .arg(&out));
    same_bytes(
        &std::fs::read(&out).unwrap(),
        &data,
        "mover restore of restic --stdin",
    );
}

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn attach(img: &Path) -> Result<Loop, String> {
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(img)
        .output()
        .map_err(|e| format!("cannot run losetup: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dev.is_empty() || !Path::new(&dev).exists() {
        return Err(format!("losetup gave no usable device ({dev:?})"));
    }
    Ok(Loop(dev))
}

#[test]
fn loop_device_or_image_path() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let img = tmp.path().join("vol.img");
    make_image(&img, 48 * MIB, 11);
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let dev = match attach(&img) {
        Ok(d) => d,
        Err(reason) => {
            println!("loop devices unavailable here: {reason}; checked the image path instead");
            check_volume(&repo, &img, &["--image"], tmp.path());
            return;
        }
    };
    check_volume(&repo, Path::new(&dev.0), &[], tmp.path());
    let image = std::fs::read(&img).unwrap();

    // Onto another loop device, once written in full and once trusting it is zeroed.
    let target_img: PathBuf = tmp.path().join("target.img");
    std::fs::File::create(&target_img)
        .unwrap()
        .set_len(48 * MIB)
        .unwrap();
    let target = attach(&target_img).expect("a second loop device");
    for (extra, fill) in [(&[][..], 0xAAu8), (&["--zeroed-target"][..], 0u8)] {
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(&target.0)
            .unwrap();
        dev.write_all(&vec![fill; 48 * MIB as usize]).unwrap();
        dev.sync_all().unwrap();
        drop(dev);
        ok(mover()
            .arg("-r")
            .arg(&repo)
            .args(["restore", "latest", "--verify"])
            .args(extra)
            .args(["--target-device", &target.0]));
        same_bytes(
            &std::fs::read(&target.0).unwrap(),
            &image,
            "restored loop device",
        );
    }
}
