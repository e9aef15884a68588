//! Builds the object_store backend for a parsed [`Location`]: credentials from restic's
//! environment variables, `--cacert` roots, and timeouts and retries bounded so that a dead
//! endpoint fails in well under a minute. Never puts a secret into an error message.

use super::bucket::S3Bucket;
use super::known_digests::{KnownDigests, SigningCrypto};
use super::shared_credentials;
use super::{Location, StorageError, StorageOptions};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};
use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Time allowed to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed between two reads of a response; catches stalled servers.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one whole request; large enough for a 128 MiB pack on a slow link.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Retries stop once this much time has passed since the first attempt, so a dead
/// endpoint is reported after about this long (plus one connect timeout).
const RETRY_TIMEOUT: Duration = Duration::from_secs(25);
const MAX_RETRIES: usize = 10;

/// Environment variables that select AWS's own credential providers (EKS web identity,
/// ECS and EKS pod identity), passed through when no static key is set.
const AWS_PROVIDER_VARS: &[&str] = &[
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

pub(super) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            base: 3.0,
        },
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}

pub(super) fn client_options(options: &StorageOptions) -> Result<ClientOptions, StorageError> {
    let mut client = ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_read_timeout(READ_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    if options.insecure_tls {
        client = client.with_allow_invalid_certificates(true);
    }
    if options.connections > 0 {
        client = client.with_pool_max_idle_per_host(options.connections);
    }
    for file in &options.cacert {
        for cert in load_certificates(file)? {
            client = client.with_root_certificate(cert);
        }
    }
    Ok(client)
}

/// Loads every certificate of a PEM file (`--cacert`).
pub(super) fn load_certificates(file: &std::path::Path) -> Result<Vec<Certificate>, StorageError> {
    let pem = std::fs::read(file).map_err(|source| StorageError::Io {
        context: format!("cannot read CA certificate file {}", file.display()),
        source,
    })?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
        StorageError::Config(format!(
            "cannot load CA certificates from {}: {e}",
            file.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(StorageError::Config(format!(
            "no PEM certificate found in {}",
            file.display()
        )));
    }
    Ok(certs)
}

/// Makes `dir` absolute and free of `.`/`..` without requiring it to exist (init creates it).
pub(super) fn absolute_dir(dir: &std::path::Path) -> std::io::Result<PathBuf> {
    if let Ok(canonical) = std::fs::canonicalize(dir) {
        return Ok(canonical);
    }
    let absolute = std::path::absolute(dir)?;
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// A local directory as an object store rooted at `/`, with the directory as key prefix, so
/// that the directory need not exist before `init`. Writes go to a temporary file in the
/// target directory, are fsynced and renamed into place, like restic's local backend.
pub(super) fn local(
    root: &std::path::Path,
    display: &str,
) -> Result<(Arc<dyn ObjectStore>, Path), StorageError> {
    let prefix = Path::from_absolute_path(root).map_err(|e| {
        StorageError::InvalidLocation(format!("unsupported repository location {display:?}: {e}"))
    })?;
    let store = LocalFileSystem::new().with_fsync(true);
    Ok((Arc::new(store), prefix))
}

/// restic `init`'s local tree: root, `keys`, `locks`, `snapshots`, `index`, `data/00..ff`.
pub(super) fn create_local_layout(root: &std::path::Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    let mut dirs = vec![root.to_path_buf()];
    for dir in ["keys", "locks", "snapshots", "index", "data"] {
        dirs.push(root.join(dir));
    }
    for byte in 0..=255u8 {
        dirs.push(root.join("data").join(format!("{byte:02x}")));
    }
    for dir in dirs {
        builder.create(&dir).map_err(|source| StorageError::Io {
            context: format!("cannot create directory {}", dir.display()),
            source,
        })?;
    }
    Ok(())
}

/// Builds the store for a remote location; returns it with the repository's key prefix.
pub(super) fn remote(
    location: &Location,
    options: &StorageOptions,
    env: &dyn Fn(&str) -> Option<String>,
    known: Option<&Arc<KnownDigests>>,
) -> Result<(Arc<dyn ObjectStore>, Path), StorageError> {
    let client = client_options(options)?;
    let (store, prefix): (Arc<dyn ObjectStore>, &str) = match location {
        Location::S3 { prefix, .. } => {
            let store = s3_builder(location, client, env, known)?
                .build()
                .map_err(|e| build_error(location, e))?;
            (Arc::new(store), prefix.as_str())
        }
        Location::Gcs { bucket, prefix } => {
            let mut builder = GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_retry(retry_config())
                .with_http_connector(super::tls::CertificateAwareConnector)
                .with_client_options(client);
            if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
                builder = builder.with_application_credentials(path);
            }
            if let Some(token) = env("GOOGLE_ACCESS_TOKEN") {
                builder = builder.with_bearer_token(token);
            }
            let store = builder.build().map_err(|e| build_error(location, e))?;
            (Arc::new(store), prefix.as_str())
        }
        Location::Azure { container, prefix } => {
            let account = env("AZURE_ACCOUNT_NAME").ok_or_else(|| {
                StorageError::Config(
                    "AZURE_ACCOUNT_NAME is not set (needed for azure: repositories)".into(),
                )
            })?;
            let mut builder = MicrosoftAzureBuilder::new()
                .with_account(account.clone())
                .with_container_name(container)
                .with_retry(retry_config())
                .with_http_connector(super::tls::CertificateAwareConnector)
                .with_client_options(client);
            if let Some(key) = env("AZURE_ACCOUNT_KEY") {
                builder = builder.with_access_key(key);
            } else if let Some(sas) = env("AZURE_ACCOUNT_SAS") {
                builder = builder.with_config(AzureConfigKey::SasKey, sas);
            }
            if let Some(suffix) = env("AZURE_ENDPOINT_SUFFIX") {
                builder = builder.with_endpoint(format!("https://{account}.blob.{suffix}"));
            }
            let store = builder.build().map_err(|e| build_error(location, e))?;
            (Arc::new(store), prefix.as_str())
        }
        Location::Local(_) => {
            return Err(StorageError::InvalidLocation(
                "a local directory is not a remote store".into(),
            ));
        }
    };
    Ok((store, Path::from(prefix)))
}

/// The S3 client of an `s3:` location. Over TLS, request bodies are sent unsigned
/// (`UNSIGNED-PAYLOAD`), as restic's minio-go sends them: TLS protects them on the way, and
/// signing a body means hashing each uploaded byte once more on both ends (packs are
/// named by their SHA-256 and sealed blob by blob, so `check --read-data` still finds any
/// damage). Over plain HTTP the body's hash is signed, so the server refuses a body changed
/// on the way; with `known`, bodies whose hash is already known are not hashed again.
pub(super) fn s3_builder(
    location: &Location,
    client: ClientOptions,
    env: &dyn Fn(&str) -> Option<String>,
    known: Option<&Arc<KnownDigests>>,
) -> Result<AmazonS3Builder, StorageError> {
    let Location::S3 {
        endpoint,
        region,
        bucket,
        allow_http,
        ..
    } = location
    else {
        return Err(StorageError::Config(format!(
            "{} is not an S3 location",
            location.kind()
        )));
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_retry(retry_config())
        .with_http_connector(super::tls::CertificateAwareConnector)
        .with_client_options(client)
        .with_allow_http(*allow_http)
        .with_unsigned_payload(!*allow_http);
    if let Some(known) = known {
        builder = builder.with_crypto_provider(Arc::new(SigningCrypto::new(Arc::clone(known))));
    }
    builder = s3_credentials(builder, env)?;
    builder = builder.with_region(s3_region(region.as_ref(), env));
    Ok(match endpoint {
        Some(endpoint) => builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false),
        // Virtual-hosted addressing is what AWS wants, except for bucket names with
        // dots, whose TLS certificates do not match `a.b.s3.amazonaws.com`.
        None => builder.with_virtual_hosted_style_request(!bucket.contains('.')),
    })
}

/// What `init` needs to create the bucket of an `s3:` location; `None` for other backends.
pub(super) fn s3_bucket(
    location: &Location,
    options: &StorageOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<S3Bucket>, StorageError> {
    let Location::S3 {
        bucket,
        region,
        allow_http,
        ..
    } = location
    else {
        return Ok(None);
    };
    let client = client_options(options)?.with_allow_http(*allow_http);
    let builder = s3_builder(location, client.clone(), env, None)?;
    Ok(Some(S3Bucket::new(
        builder,
        client,
        bucket.clone(),
        s3_region(region.as_ref(), env),
    )))
}

/// The region an S3 location is signed for: the one its host names, else
/// `AWS_DEFAULT_REGION`, else `AWS_REGION`, else `us-east-1`.
pub(super) fn s3_region(named: Option<&String>, env: &dyn Fn(&str) -> Option<String>) -> String {
    named
        .cloned()
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| env("AWS_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// Static keys from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (both or neither, as in
/// restic), else from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
/// `~/.aws/credentials`, profile `AWS_PROFILE`), else AWS's web-identity/container providers,
/// else the instance metadata service.
fn s3_credentials(
    mut builder: AmazonS3Builder,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AmazonS3Builder, StorageError> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(key_id), Some(secret)) => {
            builder = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(secret);
            if let Some(token) = env("AWS_SESSION_TOKEN") {
                builder = builder.with_token(token);
            }
        }
        (Some(_), None) => {
            return Err(StorageError::Config(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(StorageError::Config(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            ));
        }
        (None, None) => {
            if let Some(file) = shared_credentials::load(env)? {
                builder = builder
                    .with_access_key_id(file.access_key_id)
                    .with_secret_access_key(file.secret_access_key);
                if let Some(token) = file.session_token {
                    builder = builder.with_token(token);
                }
                return Ok(builder);
            }
            for var in AWS_PROVIDER_VARS {
                if let Some(value) = env(var) {
                    if let Ok(key) = var.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value);
                    }
                }
            }
        }
    }
    Ok(builder)
}

/// Builder errors can quote configuration values; report only which setting is wrong.
fn build_error(location: &Location, e: object_store::Error) -> StorageError {
    let detail = match &e {
        object_store::Error::UnknownConfigurationKey { key, .. } => {
            format!("unknown configuration key {key}")
        }
        _ => e.to_string(),
    };
    StorageError::Config(format!(
        "cannot configure the {} backend: {detail}",
        location.kind()
    ))
}
