//! The same interoperability, over a real S3 server (moto) on 127.0.0.1: both tools use the
//! same bucket, each reads what the other wrote.

use crate::support::compare::{CompareOptions, compare_trees};
use crate::support::s3::{S3Server, TlsFiles};
use crate::support::tree_gen::{GenOptions, generate_tree_with_summary};
use crate::support::*;
use std::process::Command;

fn with_s3(mut cmd: Command, server: &S3Server) -> Command {
    for (k, v) in server.env() {
        cmd.env(k, v);
    }
    cmd
}

fn compare_opts(sockets: bool, xattrs: bool, restic_involved: bool) -> CompareOptions {
    CompareOptions {
        skip_sockets: !sockets,
        owner: is_root(),
        xattrs,
        // restic 0.14 stores a non-UTF-8 symlink target with U+FFFD (it has no
        // linktarget_raw), so only mover-to-mover round trips keep those bytes.
        lossy_symlink_targets: restic_involved,
        ..CompareOptions::default()
    }
}

#[test]
fn restic_checks_and_restores_mover_backup_on_s3() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("mover-writes");
    let url = server.repo_url(&bucket, "team/volume-a");
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let xattrs = generate_tree_with_summary(
        &src,
        &GenOptions {
            seed: 61,
            ..Default::default()
        },
    )
    .unwrap()
    .xattrs;

    // The first backup of a Job finds no repository and creates it.
    let out = ok(with_s3(mover(), server)
        .args(["-r", &url, "backup"])
        .arg(&src));
    assert!(out.contains("did not exist"), "{out}");
    ok(with_s3(restic(), server).args(["-r", &url, "check", "--read-data"]));

    let target = tmp.path().join("restic-restore");
    ok(with_s3(restic(), server)
        .args(["-r", &url, "restore", "latest", "--target"])
        .arg(&target));
    compare_trees(
        &src,
        &restored_path(&target, &src),
        &compare_opts(false, xattrs, true),
    )
    .unwrap_or_else(|e| panic!("restic restore from S3 differs:\n{e}"));

    let target2 = tmp.path().join("mover-restore");
    ok(with_s3(mover(), server)
        .args(["-r", &url, "restore", "latest", "--target"])
        .arg(&target2));
    compare_trees(
        &src,
        &restored_path(&target2, &src),
        &compare_opts(true, xattrs, false),
    )
    .unwrap_or_else(|e| panic!("mover restore from S3 differs:\n{e}"));
}

#[test]
fn mover_restores_restic_backup_on_s3() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("restic-writes");
    let url = server.repo_url(&bucket, "");
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let xattrs = generate_tree_with_summary(
        &src,
        &GenOptions {
            seed: 62,
            ..Default::default()
        },
    )
    .unwrap()
    .xattrs;
    ok(with_s3(restic(), server).args(["-r", &url, "init"]));
    ok(with_s3(restic(), server)
        .args(["-r", &url, "backup"])
        .arg(&src));
    let target = tmp.path().join("restore");
    ok(with_s3(mover(), server)
        .args(["-r", &url, "restore", "latest", "--target"])
        .arg(&target));
    compare_trees(
        &src,
        &restored_path(&target, &src),
        &compare_opts(false, xattrs, true),
    )
    .unwrap_or_else(|e| panic!("mover restore of restic's S3 snapshot differs:\n{e}"));

    // mover adds a second snapshot to restic's S3 repository; restic checks it.
    ok(with_s3(mover(), server)
        .args(["-r", &url, "backup", "--tag", "mover"])
        .arg(&src));
    ok(with_s3(restic(), server).args(["-r", &url, "check", "--read-data"]));
    let listed = ok(with_s3(restic(), server).args(["-r", &url, "snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

/// Over HTTPS mover sends its uploads unsigned, as restic does, and trusts the server's
/// certificate through `--cacert`: restic creates the bucket and the repository, mover backs
/// up into it, and restic checks every byte and restores it.
#[test]
fn mover_and_restic_share_a_repository_over_https() {
    let tmp = tempdir();
    let tls = TlsFiles::generate(tmp.path());
    let server = S3Server::start_tls(&tls);
    let url = server.repo_url("tls-bucket", "volume");
    let cacert = tls.cert.to_str().expect("temp path is UTF-8");
    ok(with_s3(restic(), &server).args(["-r", &url, "--cacert", cacert, "init"]));

    let src = tmp.path().join("src");
    let xattrs = generate_tree_with_summary(
        &src,
        &GenOptions {
            seed: 67,
            ..Default::default()
        },
    )
    .unwrap()
    .xattrs;
    ok(with_s3(mover(), &server)
        .args(["-r", &url, "--cacert", cacert, "backup"])
        .arg(&src));
    ok(with_s3(restic(), &server).args(["-r", &url, "--cacert", cacert, "check", "--read-data"]));

    let target = tmp.path().join("restic-restore");
    ok(with_s3(restic(), &server)
        .args([
            "-r", &url, "--cacert", cacert, "restore", "latest", "--target",
        ])
        .arg(&target));
    compare_trees(
        &src,
        &restored_path(&target, &src),
        &compare_opts(false, xattrs, true),
    )
    .unwrap_or_else(|e| panic!("restic restore over HTTPS differs:\n{e}"));
}

/// A certificate nobody vouches for is refused with a one-line error naming the endpoint's
/// certificate, and accepted with `--insecure-tls` (or `MOVER_INSECURE_TLS`, which a Velero
/// BSL's `insecureSkipTLSVerify` sets): restic then reads what mover wrote.
#[test]
fn an_untrusted_certificate_is_refused_unless_insecure_tls_is_asked_for() {
    let tmp = tempdir();
    let tls = TlsFiles::generate(tmp.path());
    let server = S3Server::start_tls(&tls);
    let url = server.repo_url("insecure-bucket", "volume");
    let cacert = tls.cert.to_str().expect("temp path is UTF-8");
    ok(with_s3(restic(), &server).args(["-r", &url, "--cacert", cacert, "init"]));

    let refused = with_s3(mover(), &server)
        .args(["-r", &url, "snapshots"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the error names the certificate: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"over an unchecked certificate").unwrap();
    ok(with_s3(mover(), &server)
        .args(["-r", &url, "--insecure-tls", "backup"])
        .arg(&src));
    ok(with_s3(mover(), &server)
        .env("MOVER_INSECURE_TLS", "true")
        .args(["-r", &url, "check", "--read-data"]));
    let target = tmp.path().join("restore");
    ok(with_s3(restic(), &server)
        .args([
            "-r", &url, "--cacert", cacert, "restore", "latest", "--target",
        ])
        .arg(&target));
    assert_eq!(
        std::fs::read(restored_path(&target, &src).join("a.txt")).unwrap(),
        b"over an unchecked certificate"
    );
}
