//! Storage tests against a local directory, an in-memory store and a moto S3 server.

use super::*;
use object_store::memory::InMemory;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn id(n: u8) -> Id {
    Id::hash(&[n])
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "AWS_ACCESS_KEY_ID" => Some("testing".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("testing-secret-value".into()),
        "AWS_DEFAULT_REGION" => Some("us-east-1".into()),
        _ => None,
    }
}

/// The same round trip for every backend.
async fn round_trip(storage: &Storage) {
    assert!(!storage.config_exists().await.unwrap());
    let err = storage.read_config().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    assert!(err.to_string().contains("config"), "{err}");

    storage
        .write_config(Bytes::from_static(b"config bytes"))
        .await
        .unwrap();
    assert!(storage.config_exists().await.unwrap());
    assert_eq!(&storage.read_config().await.unwrap()[..], b"config bytes");
    assert_eq!(
        &storage.read(FileType::Config, &id(0)).await.unwrap()[..],
        b"config bytes"
    );

    let types = [
        FileType::Key,
        FileType::Snapshot,
        FileType::Index,
        FileType::Pack,
        FileType::Lock,
    ];
    for (i, ft) in types.into_iter().enumerate() {
        assert!(storage.list(ft).await.unwrap().is_empty(), "{ft:?}");
        let a = id(i as u8 * 2);
        let b = id(i as u8 * 2 + 1);
        let data_a = Bytes::from(format!("{ft:?} a").repeat(10));
        let data_b = Bytes::from(vec![i as u8; 1000]);
        storage.write(ft, &a, data_a.clone()).await.unwrap();
        storage.write(ft, &b, data_b.clone()).await.unwrap();
        assert_eq!(storage.read(ft, &a).await.unwrap(), data_a);
        assert_eq!(storage.read(ft, &b).await.unwrap(), data_b);
        assert_eq!(storage.size(ft, &b).await.unwrap(), 1000);
        assert_eq!(
            storage.read_range(ft, &a, 3..9).await.unwrap(),
            data_a.slice(3..9)
        );
        assert!(storage.read_range(ft, &a, 5..5).await.unwrap().is_empty());

        let mut want = vec![(a, data_a.len() as u64), (b, 1000)];
        want.sort();
        assert_eq!(storage.list(ft).await.unwrap(), want, "{ft:?}");

        storage.remove(ft, &a).await.unwrap();
        storage.remove(ft, &a).await.unwrap();
        assert_eq!(storage.list(ft).await.unwrap(), vec![(b, 1000)]);
        let err = storage.read(ft, &a).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
        assert!(err.to_string().contains(&a.to_hex()), "{err}");
        let err = storage.size(ft, &a).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    }
    // Each type lists only its own files.
    for ft in types {
        assert_eq!(storage.list(ft).await.unwrap().len(), 1, "{ft:?}");
    }
    assert!(storage.list(FileType::Config).await.is_err());
}

#[tokio::test]
async fn local_round_trip_and_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let location = root.to_str().unwrap().to_string();
    let storage = Storage::open_with_env(&location, &StorageOptions::default(), no_env).unwrap();
    assert!(storage.is_local());
    assert_eq!(storage.display(), location);
    // Opening creates nothing; reading a missing repository is NotFound, not an I/O error.
    assert!(!root.exists());
    assert!(storage.list(FileType::Pack).await.unwrap().is_empty());
    assert!(!storage.config_exists().await.unwrap());

    storage.create_layout().await.unwrap();
    for dir in [
        "keys",
        "locks",
        "snapshots",
        "index",
        "data",
        "data/00",
        "data/ff",
    ] {
        assert!(root.join(dir).is_dir(), "{dir}");
    }
    let data_dirs = std::fs::read_dir(root.join("data")).unwrap().count();
    assert_eq!(data_dirs, 256);
    assert!(!root.join("tmp").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("keys"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // Idempotent.
    storage.create_layout().await.unwrap();

    round_trip(&storage).await;

    // Files sit where restic puts them, and no temporary files are left behind.
    let pack = id(7);
    storage
        .write(FileType::Pack, &pack, Bytes::from_static(b"pack"))
        .await
        .unwrap();
    let hex = pack.to_hex();
    let on_disk = root.join("data").join(&hex[..2]).join(&hex);
    assert_eq!(std::fs::read(&on_disk).unwrap(), b"pack");
    assert_eq!(std::fs::read(root.join("config")).unwrap(), b"config bytes");
    let leftovers: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains('#'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn local_list_skips_foreign_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let storage = Storage::open_with_env(
        &format!("local:{}", root.display()),
        &StorageOptions::default(),
        no_env,
    )
    .unwrap();
    storage.create_layout().await.unwrap();
    let good = id(1);
    storage
        .write(FileType::Snapshot, &good, Bytes::from_static(b"s"))
        .await
        .unwrap();
    let hex = good.to_hex();
    // restic's temporary names, upper case, short names, nested files.
    for name in [
        format!("{hex}-tmp-123456"),
        hex.to_uppercase(),
        "abc".to_string(),
    ] {
        std::fs::write(root.join("snapshots").join(name), b"x").unwrap();
    }
    std::fs::create_dir(root.join("snapshots").join("sub")).unwrap();
    std::fs::write(root.join("snapshots/sub").join(id(2).to_hex()), b"x").unwrap();
    // A pack file directly under data/ is not in the default layout.
    std::fs::write(root.join("data").join(id(3).to_hex()), b"x").unwrap();
    assert_eq!(
        storage.list(FileType::Snapshot).await.unwrap(),
        vec![(good, 1)]
    );
    assert!(storage.list(FileType::Pack).await.unwrap().is_empty());
}

#[tokio::test]
async fn relative_local_path_is_resolved() {
    let storage =
        Storage::open_with_env("some/../relative-repo", &StorageOptions::default(), no_env)
            .unwrap();
    assert!(storage.is_local());
    let root = storage.local_root.clone().unwrap();
    assert!(root.is_absolute());
    assert!(root.ends_with("relative-repo"));
    assert!(!root.to_str().unwrap().contains(".."));
}

#[tokio::test]
async fn memory_round_trip_with_prefix() {
    let memory = Arc::new(InMemory::new());
    let storage = Storage::from_store(memory.clone(), "some/prefix", "mem:/some/prefix".into());
    assert!(!storage.is_local());
    round_trip(&storage).await;
    // A layout call is a no-op for object stores.
    storage.create_layout().await.unwrap();

    let keys: BTreeSet<String> = memory
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("some/prefix/")),
        "{keys:?}"
    );
    assert!(keys.contains("some/prefix/config"));
    let pack = keys
        .iter()
        .find(|k| k.starts_with("some/prefix/data/"))
        .unwrap();
    let parts: Vec<_> = pack.split('/').collect();
    assert_eq!(parts.len(), 5, "{pack}");
    assert_eq!(parts[3], &parts[4][..2]);
}

#[tokio::test]
async fn short_range_read_is_corrupt() {
    let storage = Storage::from_store(Arc::new(InMemory::new()), "", "mem:".into());
    let pack = id(1);
    storage
        .write(FileType::Pack, &pack, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let err = storage
        .read_range(FileType::Pack, &pack, 5..20)
        .await
        .unwrap_err();
    // Either the store refuses the range or it returns fewer bytes; never success.
    assert!(
        matches!(
            err.class(),
            ErrorClass::Corrupt | ErrorClass::InvalidInput | ErrorClass::Io
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&pack.to_hex()), "{err}");
}

#[test]
fn unsupported_locations_are_invalid_input() {
    for location in ["sftp:host:/srv", "rest:http://h/", "host:path", ""] {
        let err = Storage::open_with_env(location, &StorageOptions::default(), no_env).unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidInput, "{location}: {err}");
    }
}

#[test]
fn half_set_aws_credentials_are_rejected() {
    let only_key = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| "AKIDEXAMPLE".to_string());
    let err = Storage::open_with_env("s3:h/b", &StorageOptions::default(), only_key).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidInput);
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!err.to_string().contains("AKIDEXAMPLE"), "{err}");

    let only_secret = |name: &str| (name == "AWS_SECRET_ACCESS_KEY").then(|| "s3cr3t".to_string());
    let err =
        Storage::open_with_env("s3:h/b", &StorageOptions::default(), only_secret).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidInput);
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn remote_stores_open_without_contacting_anything() {
    let options = StorageOptions::default();
    for location in [
        "s3:s3.amazonaws.com/bucket/prefix",
        "s3:s3.eu-west-1.amazonaws.com/my.dotted.bucket",
        "s3:https://minio.example:9000/bucket",
    ] {
        let storage = Storage::open_with_env(location, &options, test_env).unwrap();
        assert_eq!(storage.display(), location);
        assert!(!format!("{storage:?}").contains("testing-secret-value"));
    }
    let azure = |name: &str| match name {
        "AZURE_ACCOUNT_NAME" => Some("account".to_string()),
        "AZURE_ACCOUNT_KEY" => Some("a2V5".to_string()),
        _ => None,
    };
    Storage::open_with_env("azure:container:/prefix", &options, azure).unwrap();
    let err = Storage::open_with_env("azure:container:/prefix", &options, no_env).unwrap_err();
    assert!(err.to_string().contains("AZURE_ACCOUNT_NAME"), "{err}");
}

/// ISRG Root X1, a public root CA certificate, to check that `--cacert` files load.
const ISRG_ROOT_X1: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIFazCCA1OgAwIBAgIRAIIQz7DSQONZRGPgu2OCiwAwDQYJKoZIhvcNAQELBQAw\n\
TzELMAkGA1UEBhMCVVMxKTAnBgNVBAoTIEludGVybmV0IFNlY3VyaXR5IFJlc2Vh\n\
cmNoIEdyb3VwMRUwEwYDVQQDEwxJU1JHIFJvb3QgWDEwHhcNMTUwNjA0MTEwNDM4\n\
WhcNMzUwNjA0MTEwNDM4WjBPMQswCQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJu\n\
ZXQgU2VjdXJpdHkgUmVzZWFyY2ggR3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBY\n\
MTCCAiIwDQYJKoZIhvcNAQEBBQADggIPADCCAgoCggIBAK3oJHP0FDfzm54rVygc\n\
h77ct984kIxuPOZXoHj3dcKi/vVqbvYATyjb3miGbESTtrFj/RQSa78f0uoxmyF+\n\
0TM8ukj13Xnfs7j/EvEhmkvBioZxaUpmZmyPfjxwv60pIgbz5MDmgK7iS4+3mX6U\n\
A5/TR5d8mUgjU+g4rk8Kb4Mu0UlXjIB0ttov0DiNewNwIRt18jA8+o+u3dpjq+sW\n\
T8KOEUt+zwvo/7V3LvSye0rgTBIlDHCNAymg4VMk7BPZ7hm/ELNKjD+Jo2FR3qyH\n\
B5T0Y3HsLuJvW5iB4YlcNHlsdu87kGJ55tukmi8mxdAQ4Q7e2RCOFvu396j3x+UC\n\
B5iPNgiV5+I3lg02dZ77DnKxHZu8A/lJBdiB3QW0KtZB6awBdpUKD9jf1b0SHzUv\n\
KBds0pjBqAlkd25HN7rOrFleaJ1/ctaJxQZBKT5ZPt0m9STJEadao0xAH0ahmbWn\n\
OlFuhjuefXKnEgV4We0+UXgVCwOPjdAvBbI+e0ocS3MFEvzG6uBQE3xDk3SzynTn\n\
jh8BCNAw1FtxNrQHusEwMFxIt4I7mKZ9YIqioymCzLq9gwQbooMDQaHWBfEbwrbw\n\
qHyGO0aoSCqI3Haadr8faqU9GY/rOPNk3sgrDQoo//fb4hVC1CLQJ13hef4Y53CI\n\
rU7m2Ys6xt0nUW7/vGT1M0NPAgMBAAGjQjBAMA4GA1UdDwEB/wQEAwIBBjAPBgNV\n\
HRMBAf8EBTADAQH/MB0GA1UdDgQWBBR5tFnme7bl5AFzgAiIyBpY9umbbjANBgkq\n\
hkiG9w0BAQsFAAOCAgEAVR9YqbyyqFDQDLHYGmkgJykIrGF1XIpu+ILlaS/V9lZL\n\
ubhzEFnTIZd+50xx+7LSYK05qAvqFyFWhfFQDlnrzuBZ6brJFe+GnY+EgPbk6ZGQ\n\
3BebYhtF8GaV0nxvwuo77x/Py9auJ/GpsMiu/X1+mvoiBOv/2X/qkSsisRcOj/KK\n\
NFtY2PwByVS5uCbMiogziUwthDyC3+6WVwW6LLv3xLfHTjuCvjHIInNzktHCgKQ5\n\
ORAzI4JMPJ+GslWYHb4phowim57iaztXOoJwTdwJx4nLCgdNbOhdjsnvzqvHu7Ur\n\
TkXWStAmzOVyyghqpZXjFaH3pO3JLF+l+/+sKAIuvtd7u+Nxe5AW0wdeRlN8NwdC\n\
jNPElpzVmbUq4JUagEiuTDkHzsxHpFKVK7q4+63SM1N95R1NbdWhscdCb+ZAJzVc\n\
oyi3B43njTOQ5yOf+1CceWxG1bQVs5ZufpsMljq4Ui0/1lvh+wjChP4kqKOJ2qxq\n\
4RgqsahDYVvTH9w7jXbyLeiNdd8XM2w9U/t7y0Ff/9yi0GE44Za4rF2LN9d11TPA\n\
mRGunUHBcnWEvgJBQl9nJEiU0Zsnvgc/ubhPgXRR4Xq37Z0j4r7g1SgEEzwxA57d\n\
emyPxgcYxn/eR44/KJ4EBs+lVDR3veyJm+kXQ99b21/+jh5Xos1AnX5iItreGCc=\n\
-----END CERTIFICATE-----\n\
";

#[test]
fn cacert_files_are_loaded_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("ca.pem");
    std::fs::write(&good, format!("{ISRG_ROOT_X1}{ISRG_ROOT_X1}")).unwrap();
    assert_eq!(backends::load_certificates(&good).unwrap().len(), 2);
    let options = StorageOptions {
        cacert: vec![good],
        connections: 2,
        ..Default::default()
    };
    Storage::open_with_env("s3:https://minio.example/bucket", &options, test_env).unwrap();

    let bad = tmp.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let options = StorageOptions {
        cacert: vec![bad.clone()],
        connections: 2,
        ..Default::default()
    };
    let err =
        Storage::open_with_env("s3:https://minio.example/bucket", &options, test_env).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidInput);
    assert!(err.to_string().contains("bad.pem"), "{err}");

    let missing = StorageOptions {
        cacert: vec![tmp.path().join("missing.pem")],
        connections: 2,
        ..Default::default()
    };
    let err = Storage::open_with_env("gs:bucket:/", &missing, test_env).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Io);
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn dead_endpoint_fails_fast_and_names_it() {
    let location = "s3:http://127.0.0.1:1/bucket/prefix";
    let storage = Storage::open_with_env(location, &StorageOptions::default(), test_env).unwrap();
    let start = Instant::now();
    let err = storage.read_config().await.unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.class(), ErrorClass::Retryable, "{err:?}");
    assert!(elapsed < Duration::from_secs(45), "took {elapsed:?}");
    let msg = err.to_string();
    assert!(msg.contains(location), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(!msg.contains("testing-secret-value"), "{msg}");
}

/// A moto S3 server on a free port, killed on drop.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run moto_server ({e}); install it with `pip install 'moto[server]'`")
            });
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.request("GET", "/").is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        moto
    }

    fn request(&self, method: &str, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    }

    fn create_bucket(&self, name: &str) {
        let reply = self.request("PUT", &format!("/{name}")).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "{reply}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn s3_round_trip_through_moto() {
    let moto = Moto::start();
    moto.create_bucket("bucket");
    let location = format!("s3:http://127.0.0.1:{}/bucket/some/prefix", moto.port);
    let storage = Storage::open_with_env(&location, &StorageOptions::default(), test_env).unwrap();
    assert!(!storage.is_local());
    round_trip(&storage).await;
    // create_layout makes no objects.
    storage.create_layout().await.unwrap();

    // A missing bucket reads as a missing repository.
    let missing = format!("s3:http://127.0.0.1:{}/no-such-bucket", moto.port);
    let storage = Storage::open_with_env(&missing, &StorageOptions::default(), test_env).unwrap();
    let err = storage.read_config().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err:?}");
    assert!(!storage.config_exists().await.unwrap());
}

#[test]
fn s3_bodies_are_signed_over_http_only() {
    use object_store::aws::AmazonS3ConfigKey;
    for (location, signed) in [
        ("s3:http://127.0.0.1:9000/bucket", true),
        ("s3:https://minio.example:9000/bucket", false),
        ("s3:s3.amazonaws.com/bucket/prefix", false),
    ] {
        let parsed = Location::parse(location).unwrap();
        let builder =
            backends::s3_builder(&parsed, object_store::ClientOptions::new(), &test_env, None)
                .unwrap();
        let unsigned = builder.get_config_value(&AmazonS3ConfigKey::UnsignedPayload);
        assert_eq!(
            unsigned.as_deref(),
            Some(if signed { "false" } else { "true" }),
            "{location}"
        );
    }
}

#[tokio::test]
async fn limits_pace_writes_and_reads_over_all_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let location = tmp.path().to_str().unwrap().to_string();
    let options = StorageOptions {
        limit_upload_kib: 1024,
        limit_download_kib: 2048,
        direct_io: false,
        ..Default::default()
    };
    let storage = Storage::open_with_env(&location, &options, no_env).unwrap();
    storage.create_layout().await.unwrap();
    let data = Bytes::from(vec![7u8; 512 << 10]);
    // Four concurrent writes of 512 KiB at 1 MiB/s: the first passes at once, the
    // other three wait for their slots (1.5 s in all).
    let start = Instant::now();
    let ids: Vec<Id> = (1..=4u8).map(id).collect();
    let writes = ids
        .iter()
        .map(|i| storage.write(FileType::Snapshot, i, data.clone()));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1400), "writes took {took:?}");
    assert!(took < Duration::from_secs(5), "writes took {took:?}");

    // Reads are paced by their own limit: 4 × 512 KiB at 2 MiB/s is 0.75 s of waiting.
    let start = Instant::now();
    for n in 1..=4u8 {
        let got = storage
            .read_range(FileType::Snapshot, &id(n), 0..(512 << 10))
            .await
            .unwrap();
        assert_eq!(got.len(), 512 << 10);
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(700), "reads took {took:?}");
    assert!(took < Duration::from_secs(4), "reads took {took:?}");

    // Without limits the same writes do not wait.
    let plain = Storage::open_with_env(&location, &StorageOptions::default(), no_env).unwrap();
    let start = Instant::now();
    for n in 5..=8u8 {
        plain
            .write(FileType::Snapshot, &id(n), data.clone())
            .await
            .unwrap();
    }
    assert!(start.elapsed() < Duration::from_millis(700));
}

#[tokio::test]
async fn exists_tells_a_missing_object_from_a_present_one() {
    let store = Arc::new(InMemory::new());
    let storage = Storage::from_store(store.clone(), "cluster-a", "memory".into());
    let key = Path::from("cluster-a/backups/nightly/velero-backup.json");
    store
        .put(&key, PutPayload::from_static(b"{}"))
        .await
        .unwrap();
    assert!(
        storage
            .exists("backups/nightly/velero-backup.json")
            .await
            .unwrap()
    );
    assert!(
        !storage
            .exists("backups/weekly/velero-backup.json")
            .await
            .unwrap()
    );
    assert!(
        storage
            .exists("/backups//nightly/velero-backup.json")
            .await
            .unwrap()
    );
}

#[test]
fn uploads_in_flight_follow_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |connections| StorageOptions {
        connections,
        ..StorageOptions::default()
    };
    let local = |n| Storage::open_with_env(dir.path().to_str().unwrap(), &opts(n), no_env).unwrap();
    // A local disk: at most two packs in flight, at least one.
    assert_eq!(local(5).upload_concurrency(), 2);
    assert_eq!(local(1).upload_concurrency(), 1);
    assert_eq!(local(0).upload_concurrency(), 1);
    // A remote store: its connections.
    let remote =
        |n| Storage::open_with_env("s3:http://127.0.0.1:9/bucket", &opts(n), test_env).unwrap();
    assert_eq!(remote(5).upload_concurrency(), 5);
    assert_eq!(remote(12).upload_concurrency(), 12);
}
