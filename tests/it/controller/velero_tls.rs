//! Velero BSLs on an HTTPS endpoint with a certificate of its own: one gives the CA inline
//! (`objectStorage.caCert`, base64 PEM), one turns verification off
//! (`config.insecureSkipTLSVerify`). A DataUpload into each completes, and restic, trusting
//! the certificate, finds the snapshot and restores the bytes.

use super::harness::{controller, random_bytes};
use super::plane::{plane, scratch, setup};
use super::velero::{VELERO_NS, data_upload, take_snapshot, velero_namespace, wait_phase};
use crate::support::PASSWORD;
use crate::support::s3::{S3Server, TlsFiles};
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use mover::k8s::api::velero::{BackupStorageLocation, DataUpload};
use mover::k8s::velero::{CA_CONFIG_MAP_KEY, ca_config_map_name, repository_name};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsls_with_an_inline_ca_or_without_verification_reach_an_https_endpoint() {
    let plane = plane();
    let (client, node, app) = setup("velero-tls").await;
    let _c = controller(plane).await;
    velero_namespace(&client).await;
    let tmp = scratch();
    let tls = TlsFiles::generate(tmp.path());
    let s3 = S3Server::start_tls(&tls);
    let pem = std::fs::read_to_string(&tls.cert).unwrap();
    let bucket = format!("{app}-tls");
    let bsls: Api<BackupStorageLocation> = Api::namespaced(client.clone(), VELERO_NS);
    let inline_ca = format!("{app}-inline-ca");
    let insecure = format!("{app}-insecure");
    for (name, ca, config) in [
        (
            &inline_ca,
            Some(base64::engine::general_purpose::STANDARD.encode(&pem)),
            json!({}),
        ),
        (&insecure, None, json!({"insecureSkipTLSVerify": "true"})),
    ] {
        let mut config = config;
        config["region"] = json!("us-east-1");
        config["s3ForcePathStyle"] = json!("true");
        config["s3Url"] = json!(s3.endpoint);
        let mut storage = json!({"bucket": bucket, "prefix": name});
        if let Some(ca) = ca {
            storage["caCert"] = json!(ca);
        }
        let bsl: BackupStorageLocation = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": {"name": name},
            "spec": {"provider": "aws", "accessMode": "ReadWrite", "objectStorage": storage,
                "credential": {"name": "cloud-credentials", "key": "cloud"},
                "config": config}}))
        .unwrap();
        bsls.create(&PostParams::default(), &bsl).await.unwrap();
        bsls.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Available"}})),
        )
        .await
        .unwrap();
    }

    let source = super::harness::claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    let bytes = random_bytes(3_000_000, 41);
    std::fs::write(source.join("over-tls.bin"), &bytes).unwrap();
    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    for bsl in [&inline_ca, &insecure] {
        let vs = take_snapshot(&client, node, &app, "data").await;
        let du = uploads
            .create(
                &PostParams::default(),
                &data_upload(&app, "data", &vs, "mover", bsl),
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        let done = wait_phase(
            &uploads,
            &du.name_any(),
            &["Completed", "Failed", "Canceled"],
            &app,
            node,
            &mut seen,
        )
        .await;
        let st = done.status.unwrap();
        assert_eq!(
            st.phase.as_deref(),
            Some("Completed"),
            "{bsl}: {:?} {seen:?}",
            st.message
        );
        let id = st.snapshot_id.unwrap();

        let url = format!("{}/plugins/mover/{app}", s3.repo_url(&bucket, bsl));
        let target = tmp.path().join(format!("restore-{bsl}"));
        let out = crate::support::restic()
            .args(["-r", &url, "--cacert"])
            .arg(&tls.cert)
            .args(["restore", &id, "--target"])
            .arg(&target)
            .env("RESTIC_PASSWORD", PASSWORD)
            .envs(s3.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bsl}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let restored = find_file(&target, "over-tls.bin");
        assert_eq!(std::fs::read(restored).unwrap(), bytes, "{bsl}");
    }

    // The inline CA sits in a ConfigMap beside the Repository, as the BSL gave it.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), VELERO_NS);
    let map = maps
        .get(&ca_config_map_name(&repository_name(&inline_ca, &app)))
        .await
        .unwrap();
    assert_eq!(
        map.data.unwrap().get(CA_CONFIG_MAP_KEY).map(String::as_str),
        Some(pem.as_str())
    );
}

/// The one file named `name` under `dir` (restic puts it under the snapshot's path).
pub(super) fn find_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == name) {
                return p;
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    panic!("{name} not found under {}", dir.display());
}
