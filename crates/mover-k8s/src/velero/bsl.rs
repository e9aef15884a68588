//! Velero BackupStorageLocation → the restic repository mover keeps for one source
//! namespace (velero.md §5, "Mover mapping"). Pure: the BSL object in, settings out.
//!
//! The repository lives at `<bucket>/<prefix>/plugins/mover/<sourceNamespace>`: Velero marks
//! a BSL Unavailable when its prefix holds a top-level directory it does not know, and
//! `plugins/` is one it allows. There is one repository per (BSL, source namespace), so a
//! DataDownload's `snapshotID` plus (BSL, `sourceNamespace`) finds the data.

use crate::api::velero::{BackupStorageLocation, SecretKeyRef};
use base64::Engine;
use mover_core::storage::Location;

/// Where a mover Job mounts the credential Secret (the whole Secret, one file per key), as
/// `jobspec` mounts a Repository's credentials file.
pub const CREDENTIALS_DIR: &str = "/credentials";
/// The Secret Velero's own pods read when a BSL names no `credential`.
pub const DEFAULT_CREDENTIAL_SECRET: &str = "cloud-credentials";
/// The key of [`DEFAULT_CREDENTIAL_SECRET`] that holds the AWS INI file.
pub const DEFAULT_CREDENTIAL_KEY: &str = "cloud";
/// The credentials file for the default Secret: [`CREDENTIALS_DIR`]`/`[`DEFAULT_CREDENTIAL_KEY`],
/// the same path Velero's pods use.
pub const DEFAULT_CREDENTIALS_FILE: &str = "/credentials/cloud";
/// The AWS profile when the BSL's `config.profile` is unset.
pub const DEFAULT_PROFILE: &str = "default";
/// Under the BSL prefix, where mover's repositories live (one per source namespace).
pub const REPOSITORY_DIR: &str = "plugins/mover";

/// How a mover Job reaches the repository of one (BSL, source namespace), and which setting
/// each field becomes in the Job:
///
/// | field | the Job gets |
/// |---|---|
/// | `url` | `RESTIC_REPOSITORY` (or `-r`) |
/// | `region` | `AWS_DEFAULT_REGION`; when `None` the S3 backend signs for `us-east-1` |
/// | `path_style` | nothing: the URL form already decides it (below) |
/// | `insecure_skip_tls_verify` | `MOVER_INSECURE_TLS=true` (`--insecure-tls`) |
/// | `ca` | a mounted PEM file named by `RESTIC_CACERT` (or `--cacert`); an inline `caCert` goes into a ConfigMap the controller keeps |
/// | `credential` | the Secret mounted at [`CREDENTIALS_DIR`], `AWS_SHARED_CREDENTIALS_FILE` = [`BslRepository::credentials_file`] |
/// | `profile` | `AWS_PROFILE` |
///
/// [`BslRepository::job_env`] returns the plain (non-secret) part of this.
///
/// Addressing: an `s3:http(s)://host/...` URL is a custom endpoint, always addressed
/// path-style; an `s3:s3.<region>.amazonaws.com/...` URL is AWS itself, virtual-hosted
/// (path-style only for bucket names with dots). So path style is asked for by choosing the
/// first form, also for AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BslRepository {
    /// The restic repository location, in a form `storage::Location::parse` reads.
    pub url: String,
    /// The same form of location for the BSL's prefix itself, where Velero keeps
    /// `backups/<name>/velero-backup.json`.
    pub root: String,
    /// The signing region: `config.region`, else the one an AWS host names. Velero would
    /// discover a missing region with GetBucketRegion; mover does not.
    pub region: Option<String>,
    /// Whether requests are addressed path-style (`endpoint/bucket/key`), as the URL form
    /// makes them.
    pub path_style: bool,
    /// The BSL's `config.insecureSkipTLSVerify`.
    pub insecure_skip_tls_verify: bool,
    /// CA certificates to trust for the endpoint.
    pub ca: Option<BslCa>,
    /// The Secret key holding the AWS shared credentials (INI) file, in [`Self::namespace`].
    pub credential: BslCredential,
    /// The profile to read from the credentials file.
    pub profile: String,
    /// The BSL's namespace, where `credential` and a `ca` Secret live.
    pub namespace: String,
}

/// Where a BSL's CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BslCa {
    /// `objectStorage.caCertRef`: a key of a Secret in the BSL's namespace.
    SecretKey { name: String, key: String },
    /// `objectStorage.caCert`, decoded from base64: the PEM text itself, which the controller
    /// has to put somewhere a Job can mount.
    Inline(String),
}

/// A key of a Secret in the BSL's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BslCredential {
    pub name: String,
    pub key: String,
}

impl BslRepository {
    /// Where the credentials file is inside a Job that mounts the credential Secret at
    /// [`CREDENTIALS_DIR`] ([`DEFAULT_CREDENTIALS_FILE`] for Velero's default Secret).
    pub fn credentials_file(&self) -> String {
        format!("{CREDENTIALS_DIR}/{}", self.credential.key)
    }

    /// The non-secret environment a mover Job needs for this repository: `RESTIC_REPOSITORY`,
    /// `AWS_DEFAULT_REGION` (when known), `AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE` and
    /// `MOVER_INSECURE_TLS` when the BSL skips TLS verification.
    /// The Job must also mount the credential Secret at [`CREDENTIALS_DIR`], and the CA as
    /// a file named by `RESTIC_CACERT` when [`Self::ca`] is set.
    pub fn job_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("RESTIC_REPOSITORY".to_string(), self.url.clone())];
        if let Some(region) = &self.region {
            env.push(("AWS_DEFAULT_REGION".into(), region.clone()));
        }
        env.push(("AWS_PROFILE".into(), self.profile.clone()));
        env.push((
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            self.credentials_file(),
        ));
        if self.insecure_skip_tls_verify {
            env.push(("MOVER_INSECURE_TLS".into(), "true".into()));
        }
        env
    }
}

/// Why a BSL does not map onto a repository mover can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BslError {
    #[error("BackupStorageLocation {bsl} has no spec.objectStorage")]
    NoObjectStorage { bsl: String },
    #[error("BackupStorageLocation {bsl} has an empty spec.objectStorage.bucket")]
    NoBucket { bsl: String },
    #[error(
        "BackupStorageLocation {bsl} has provider {provider:?}: mover stores only in S3 \
         (provider aws, or another provider with config.s3Url)"
    )]
    UnsupportedProvider { bsl: String, provider: String },
    #[error("BackupStorageLocation {bsl} has config.s3Url {s3_url:?}: {why}")]
    BadS3Url {
        bsl: String,
        s3_url: String,
        why: String,
    },
    #[error("BackupStorageLocation {bsl}: {why}")]
    BadCaCert { bsl: String, why: String },
    #[error("BackupStorageLocation {bsl}: spec.credential must name a Secret and a key")]
    BadCredential { bsl: String },
    #[error("BackupStorageLocation {bsl}: the source namespace is empty")]
    NoNamespace { bsl: String },
    #[error("BackupStorageLocation {bsl} maps to an unusable repository location: {why}")]
    Location { bsl: String, why: String },
}

fn bsl_name(bsl: &BackupStorageLocation) -> String {
    format!(
        "{}/{}",
        bsl.metadata.namespace.as_deref().unwrap_or_default(),
        bsl.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Go's `strconv.ParseBool` truth values, which the AWS plugin uses for its flags.
fn truthy(value: Option<&String>) -> bool {
    matches!(
        value.map(|v| v.trim()),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn config<'a>(bsl: &'a BackupStorageLocation, key: &str) -> Option<&'a String> {
    bsl.spec.config.get(key).filter(|v| !v.trim().is_empty())
}

/// Velero's `GetBackendType`: a provider without `/` is one of Velero's own plugins.
enum Backend {
    Aws,
    OtherKnown,
    Unknown,
}

fn backend(provider: &str) -> Backend {
    let provider = provider.trim();
    let full = if provider.contains('/') {
        provider.to_string()
    } else {
        format!("velero.io/{provider}")
    };
    match full.as_str() {
        "velero.io/aws" => Backend::Aws,
        "velero.io/azure" | "velero.io/gcp" | "velero.io/fs" => Backend::OtherKnown,
        _ => Backend::Unknown,
    }
}

/// `config.s3Url` split into scheme and host; as in Velero, a path other than `""`/`/` is
/// an error.
fn parse_s3_url(bsl: &str, s3_url: &str) -> Result<(&'static str, String), BslError> {
    let bad = |why: &str| BslError::BadS3Url {
        bsl: bsl.to_string(),
        s3_url: s3_url.to_string(),
        why: why.to_string(),
    };
    let trimmed = s3_url.trim();
    let (scheme, rest) = if let Some(rest) = trimmed.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(bad("expected an http:// or https:// URL"));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if host.contains(['@', '?', '#']) {
        return Err(bad("expected only a scheme, a host and an optional port"));
    }
    if !(path.is_empty() || path == "/") {
        return Err(bad(
            "a path is not allowed (the bucket goes in objectStorage.bucket)",
        ));
    }
    Ok((scheme, host.to_string()))
}

/// An AWS S3 host (`s3.amazonaws.com`, `s3.<region>.amazonaws.com`, ...), port removed.
fn is_aws_host(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.ends_with(".amazonaws.com") || name.ends_with(".amazonaws.com.cn")
}

/// The repository of `source_namespace`'s volumes in `bsl` (velero.md §5 "Mover mapping").
pub fn repository_for(
    bsl: &BackupStorageLocation,
    source_namespace: &str,
) -> Result<BslRepository, BslError> {
    let name = bsl_name(bsl);
    let s3_url = config(bsl, "s3Url");
    match backend(&bsl.spec.provider) {
        Backend::Aws => {}
        Backend::Unknown if s3_url.is_some() => {}
        Backend::OtherKnown | Backend::Unknown => {
            return Err(BslError::UnsupportedProvider {
                bsl: name,
                provider: bsl.spec.provider.clone(),
            });
        }
    }
    let storage = bsl
        .spec
        .object_storage
        .as_ref()
        .ok_or_else(|| BslError::NoObjectStorage { bsl: name.clone() })?;
    let bucket = storage.bucket.trim().trim_matches('/');
    if bucket.is_empty() {
        return Err(BslError::NoBucket { bsl: name });
    }
    let source_namespace = source_namespace.trim();
    if source_namespace.is_empty() {
        return Err(BslError::NoNamespace { bsl: name });
    }
    let prefix = storage
        .prefix
        .as_deref()
        .unwrap_or_default()
        .trim()
        .trim_matches('/');
    let mut path = bucket.to_string();
    if !prefix.is_empty() {
        path = format!("{path}/{prefix}");
    }
    let path = format!("{path}/{REPOSITORY_DIR}/{source_namespace}");

    let force_path_style = truthy(config(bsl, "s3ForcePathStyle"));
    let region = config(bsl, "region").map(|r| r.trim().to_string());
    let url = match s3_url {
        Some(s3_url) => {
            let (scheme, host) = parse_s3_url(&name, s3_url)?;
            if scheme == "https" && is_aws_host(&host) && !force_path_style {
                format!("s3:{host}/{path}")
            } else {
                format!("s3:{scheme}://{host}/{path}")
            }
        }
        None => {
            let host = match &region {
                Some(region) => format!("s3.{region}.amazonaws.com"),
                None => "s3.amazonaws.com".to_string(),
            };
            if force_path_style {
                format!("s3:https://{host}/{path}")
            } else {
                format!("s3:{host}/{path}")
            }
        }
    };
    let location = Location::parse(&url).map_err(|e| BslError::Location {
        bsl: name.clone(),
        why: e.to_string(),
    })?;
    let Location::S3 {
        endpoint,
        region: url_region,
        bucket: parsed_bucket,
        ..
    } = &location
    else {
        return Err(BslError::Location {
            bsl: name,
            why: format!("{url} is not an S3 location"),
        });
    };
    let path_style = endpoint.is_some() || parsed_bucket.contains('.');

    let ca = match (&storage.ca_cert_ref, storage.ca_cert.as_deref()) {
        (Some(SecretKeyRef { name: n, key, .. }), _) if !n.is_empty() && !key.is_empty() => {
            Some(BslCa::SecretKey {
                name: n.clone(),
                key: key.clone(),
            })
        }
        (Some(_), _) => {
            return Err(BslError::BadCaCert {
                bsl: name,
                why: "objectStorage.caCertRef must name a Secret and a key".into(),
            });
        }
        (None, Some(b64)) if !b64.trim().is_empty() => Some(BslCa::Inline(decode_ca(&name, b64)?)),
        (None, _) => None,
    };

    let credential = match &bsl.spec.credential {
        Some(c) if !c.name.is_empty() && !c.key.is_empty() => BslCredential {
            name: c.name.clone(),
            key: c.key.clone(),
        },
        Some(_) => return Err(BslError::BadCredential { bsl: name }),
        None => BslCredential {
            name: DEFAULT_CREDENTIAL_SECRET.into(),
            key: DEFAULT_CREDENTIAL_KEY.into(),
        },
    };

    Ok(BslRepository {
        region: region.or_else(|| url_region.clone()),
        path_style,
        insecure_skip_tls_verify: truthy(config(bsl, "insecureSkipTLSVerify")),
        ca,
        credential,
        profile: config(bsl, "profile")
            .map(|p| p.trim().to_string())
            .unwrap_or_else(|| DEFAULT_PROFILE.to_string()),
        namespace: bsl.metadata.namespace.clone().unwrap_or_default(),
        root: url
            .strip_suffix(&format!("/{REPOSITORY_DIR}/{source_namespace}"))
            .unwrap_or(&url)
            .to_string(),
        url,
    })
}

fn decode_ca(bsl: &str, b64: &str) -> Result<String, BslError> {
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| BslError::BadCaCert {
            bsl: bsl.to_string(),
            why: format!("objectStorage.caCert is not base64: {e}"),
        })?;
    String::from_utf8(bytes).map_err(|_| BslError::BadCaCert {
        bsl: bsl.to_string(),
        why: "objectStorage.caCert is not a PEM text".into(),
    })
}

/// Fails unless Velero has validated `bsl` as Available (reading is then possible).
pub fn check_available(bsl: &BackupStorageLocation) -> Result<(), String> {
    let name = bsl_name(bsl);
    let status = bsl.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Available") => Ok(()),
        Some(phase) => {
            let message = status
                .and_then(|s| s.message.as_deref())
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            Err(format!(
                "BackupStorageLocation {name} is {phase}, not Available{message}"
            ))
        }
        None => Err(format!(
            "BackupStorageLocation {name} is not validated by Velero yet (no status.phase)"
        )),
    }
}

/// Fails unless `bsl` is Available and writable (`spec.accessMode` is not `ReadOnly`), as a
/// backup into it needs.
pub fn check_usable(bsl: &BackupStorageLocation) -> Result<(), String> {
    check_available(bsl)?;
    if bsl.spec.access_mode.as_deref().map(str::trim) == Some("ReadOnly") {
        return Err(format!(
            "BackupStorageLocation {} is ReadOnly (spec.accessMode), so mover does not write to it",
            bsl_name(bsl)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::velero::{
        BackupStorageLocationSpec, BackupStorageLocationStatus, ObjectStorageLocation,
    };

    fn bsl(provider: &str, prefix: Option<&str>, config: &[(&str, &str)]) -> BackupStorageLocation {
        let mut b = BackupStorageLocation::new(
            "default",
            BackupStorageLocationSpec {
                provider: provider.into(),
                object_storage: Some(ObjectStorageLocation {
                    bucket: "velero".into(),
                    prefix: prefix.map(str::to_string),
                    ..Default::default()
                }),
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
        );
        b.metadata.namespace = Some("velero".into());
        b.status = Some(BackupStorageLocationStatus {
            phase: Some("Available".into()),
            ..Default::default()
        });
        b
    }

    fn repo(b: &BackupStorageLocation) -> BslRepository {
        repository_for(b, "app").unwrap_or_else(|e| panic!("{e}"))
    }

    fn s3(url: &str) -> Location {
        Location::parse(url).unwrap()
    }

    #[test]
    fn an_http_s3_url_keeps_its_scheme_and_is_path_style() {
        let r = repo(&bsl(
            "aws",
            Some("cluster-a"),
            &[("s3Url", "http://minio.velero:9000"), ("region", "minio")],
        ));
        assert_eq!(
            r.url,
            "s3:http://minio.velero:9000/velero/cluster-a/plugins/mover/app"
        );
        assert_eq!(r.root, "s3:http://minio.velero:9000/velero/cluster-a");
        assert_eq!(r.region.as_deref(), Some("minio"));
        assert!(r.path_style);
        assert_eq!(
            s3(&r.url),
            Location::S3 {
                endpoint: Some("http://minio.velero:9000".into()),
                region: None,
                bucket: "velero".into(),
                prefix: "cluster-a/plugins/mover/app".into(),
                allow_http: true,
            }
        );
    }

    #[test]
    fn an_https_s3_url_with_a_trailing_slash() {
        let r = repo(&bsl(
            "aws",
            None,
            &[("s3Url", "https://s3.example.com:8443/")],
        ));
        assert_eq!(
            r.url,
            "s3:https://s3.example.com:8443/velero/plugins/mover/app"
        );
        assert!(r.path_style);
        let Location::S3 {
            endpoint,
            allow_http,
            ..
        } = s3(&r.url)
        else {
            panic!()
        };
        assert_eq!(endpoint.as_deref(), Some("https://s3.example.com:8443"));
        assert!(!allow_http);
    }

    #[test]
    fn an_s3_url_with_a_path_or_without_a_scheme_is_refused() {
        for bad in [
            "http://minio:9000/velero",
            "minio:9000",
            "ftp://x",
            "http://",
            "http://u:p@h",
        ] {
            let err = repository_for(&bsl("aws", None, &[("s3Url", bad)]), "app").unwrap_err();
            assert!(matches!(err, BslError::BadS3Url { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("velero/default"), "{err}");
        }
    }

    #[test]
    fn without_s3_url_it_is_aws_with_the_region_in_the_host() {
        let r = repo(&bsl("aws", Some("c"), &[("region", "eu-west-1")]));
        assert_eq!(
            r.url,
            "s3:s3.eu-west-1.amazonaws.com/velero/c/plugins/mover/app"
        );
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert!(!r.path_style);
        assert_eq!(
            s3(&r.url),
            Location::S3 {
                endpoint: None,
                region: Some("eu-west-1".into()),
                bucket: "velero".into(),
                prefix: "c/plugins/mover/app".into(),
                allow_http: false,
            }
        );

        // No region: the global endpoint; the backend then signs for us-east-1.
        let r = repo(&bsl("velero.io/aws", None, &[]));
        assert_eq!(r.url, "s3:s3.amazonaws.com/velero/plugins/mover/app");
        assert_eq!(r.region, None);
        assert!(!r.job_env().iter().any(|(k, _)| k == "AWS_DEFAULT_REGION"));
    }

    #[test]
    fn force_path_style_makes_aws_an_endpoint() {
        let r = repo(&bsl(
            "aws",
            None,
            &[("region", "us-west-2"), ("s3ForcePathStyle", "true")],
        ));
        assert_eq!(
            r.url,
            "s3:https://s3.us-west-2.amazonaws.com/velero/plugins/mover/app"
        );
        assert!(r.path_style);
        assert_eq!(r.region.as_deref(), Some("us-west-2"));
        let Location::S3 { endpoint, .. } = s3(&r.url) else {
            panic!()
        };
        assert_eq!(
            endpoint.as_deref(),
            Some("https://s3.us-west-2.amazonaws.com")
        );

        // An AWS s3Url without it stays virtual-hosted, with the host's region.
        let r = repo(&bsl(
            "aws",
            None,
            &[("s3Url", "https://s3.ap-south-1.amazonaws.com")],
        ));
        assert_eq!(
            r.url,
            "s3:s3.ap-south-1.amazonaws.com/velero/plugins/mover/app"
        );
        assert!(!r.path_style);
        assert_eq!(r.region.as_deref(), Some("ap-south-1"));
    }

    #[test]
    fn the_prefix_is_trimmed_and_omitted_when_empty() {
        let url =
            |prefix: Option<&str>| repo(&bsl("aws", prefix, &[("s3Url", "http://m:9000")])).url;
        assert_eq!(url(None), "s3:http://m:9000/velero/plugins/mover/app");
        assert_eq!(url(Some("")), "s3:http://m:9000/velero/plugins/mover/app");
        assert_eq!(url(Some("/")), "s3:http://m:9000/velero/plugins/mover/app");
        assert_eq!(
            url(Some("/a/b/")),
            "s3:http://m:9000/velero/a/b/plugins/mover/app"
        );
        let mut b = bsl("aws", Some("x"), &[("s3Url", "http://m:9000")]);
        b.spec.object_storage.as_mut().unwrap().bucket = "/velero/".into();
        assert_eq!(repo(&b).url, "s3:http://m:9000/velero/x/plugins/mover/app");
    }

    #[test]
    fn ca_cert_ref_wins_over_inline_ca_cert() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let mut b = bsl("aws", None, &[("s3Url", "https://m")]);
        b.spec.object_storage.as_mut().unwrap().ca_cert = Some(b64.clone());
        assert_eq!(repo(&b).ca, Some(BslCa::Inline(pem.into())));
        b.spec.object_storage.as_mut().unwrap().ca_cert_ref = Some(SecretKeyRef {
            name: "minio-ca".into(),
            key: "ca.crt".into(),
            optional: None,
        });
        assert_eq!(
            repo(&b).ca,
            Some(BslCa::SecretKey {
                name: "minio-ca".into(),
                key: "ca.crt".into()
            })
        );
        let mut bad = bsl("aws", None, &[("s3Url", "https://m")]);
        bad.spec.object_storage.as_mut().unwrap().ca_cert = Some("not base64!".into());
        assert!(matches!(
            repository_for(&bad, "app"),
            Err(BslError::BadCaCert { .. })
        ));
        assert_eq!(repo(&bsl("aws", None, &[])).ca, None);
    }

    #[test]
    fn profile_and_credential_selection() {
        let r = repo(&bsl("aws", None, &[]));
        assert_eq!(r.profile, "default");
        assert_eq!(
            r.credential,
            BslCredential {
                name: "cloud-credentials".into(),
                key: "cloud".into()
            }
        );
        assert_eq!(r.credentials_file(), DEFAULT_CREDENTIALS_FILE);
        assert_eq!(r.namespace, "velero");

        let mut b = bsl("aws", None, &[("profile", "backups"), ("region", "minio")]);
        b.spec.credential = Some(SecretKeyRef {
            name: "bsl-creds".into(),
            key: "aws".into(),
            optional: None,
        });
        let r = repo(&b);
        assert_eq!(r.profile, "backups");
        assert_eq!(r.credential.name, "bsl-creds");
        assert_eq!(
            r.job_env(),
            [
                ("RESTIC_REPOSITORY", r.url.as_str()),
                ("AWS_DEFAULT_REGION", "minio"),
                ("AWS_PROFILE", "backups"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/credentials/aws"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );

        b.spec.credential = Some(SecretKeyRef::default());
        assert!(matches!(
            repository_for(&b, "app"),
            Err(BslError::BadCredential { .. })
        ));
    }

    #[test]
    fn insecure_skip_tls_verify_is_read_as_go_reads_booleans() {
        assert!(!repo(&bsl("aws", None, &[])).insecure_skip_tls_verify);
        for yes in ["true", "True", "1"] {
            let b = bsl("aws", None, &[("insecureSkipTLSVerify", yes)]);
            assert!(repo(&b).insecure_skip_tls_verify, "{yes}");
        }
        let b = bsl("aws", None, &[("insecureSkipTLSVerify", "false")]);
        assert!(!repo(&b).insecure_skip_tls_verify);
    }

    #[test]
    fn providers_other_than_s3_are_refused_by_name() {
        for provider in ["azure", "velero.io/gcp", "gcp", "fs"] {
            let err =
                repository_for(&bsl(provider, None, &[("s3Url", "http://m")]), "app").unwrap_err();
            assert!(err.to_string().contains(provider), "{err}");
        }
        let err = repository_for(&bsl("example.com/ceph", None, &[]), "app").unwrap_err();
        assert!(matches!(err, BslError::UnsupportedProvider { .. }));
        assert!(err.to_string().contains("example.com/ceph"), "{err}");
        // An unknown provider with an s3Url counts as S3, as in Velero.
        let r = repo(&bsl(
            "example.com/ceph",
            None,
            &[("s3Url", "http://ceph:7480")],
        ));
        assert_eq!(r.url, "s3:http://ceph:7480/velero/plugins/mover/app");
    }

    #[test]
    fn missing_pieces_are_errors() {
        let mut b = bsl("aws", None, &[]);
        b.spec.object_storage = None;
        assert!(matches!(
            repository_for(&b, "app"),
            Err(BslError::NoObjectStorage { .. })
        ));
        let mut b = bsl("aws", None, &[]);
        b.spec.object_storage.as_mut().unwrap().bucket = " / ".into();
        assert!(matches!(
            repository_for(&b, "app"),
            Err(BslError::NoBucket { .. })
        ));
        assert!(matches!(
            repository_for(&bsl("aws", None, &[]), ""),
            Err(BslError::NoNamespace { .. })
        ));
    }

    #[test]
    fn read_only_and_unavailable_locations_are_refused() {
        let ok = bsl("aws", None, &[]);
        check_usable(&ok).unwrap();

        let mut read_only = ok.clone();
        read_only.spec.access_mode = Some("ReadOnly".into());
        let err = check_usable(&read_only).unwrap_err();
        assert!(
            err.contains("velero/default") && err.contains("ReadOnly"),
            "{err}"
        );
        check_available(&read_only).unwrap();

        let mut unavailable = ok.clone();
        unavailable.status = Some(BackupStorageLocationStatus {
            phase: Some("Unavailable".into()),
            message: Some(
                "BackupStorageLocation \"default\" is unavailable: bucket not found".into(),
            ),
            ..Default::default()
        });
        let err = check_usable(&unavailable).unwrap_err();
        assert!(err.contains("velero/default is Unavailable"), "{err}");
        assert!(err.contains("bucket not found"), "{err}");

        let mut unvalidated = ok;
        unvalidated.status = None;
        let err = check_usable(&unvalidated).unwrap_err();
        assert!(err.contains("not validated"), "{err}");
    }
}
