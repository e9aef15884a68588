//! Parses restic repository location strings (`-r`, `RESTIC_REPOSITORY`) into a [`Location`].
//! Pure: no I/O, no environment, no logging. Backends mover does not speak (sftp, rest, b2,
//! swift, rclone) are rejected here with an error naming the scheme.

use super::StorageError;
use std::path::PathBuf;

/// Where a repository lives, as parsed from a restic location string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on the local file system.
    Local(PathBuf),
    /// Amazon S3 or an S3-compatible server.
    S3 {
        /// `None` for AWS itself; otherwise the endpoint URL (`https://host[:port]` or
        /// `http://host:port`), addressed path-style.
        endpoint: Option<String>,
        /// AWS region named by an `s3.<region>.amazonaws.com` host, if any.
        region: Option<String>,
        bucket: String,
        /// Key prefix without leading or trailing `/`; empty for the bucket root.
        prefix: String,
        /// Plain HTTP allowed (`s3:http://...`).
        allow_http: bool,
    },
    /// Google Cloud Storage.
    Gcs { bucket: String, prefix: String },
    /// Azure Blob Storage.
    Azure { container: String, prefix: String },
}

/// Schemes restic knows but mover does not implement.
const UNSUPPORTED_SCHEMES: &[&str] = &["sftp", "rest", "b2", "swift", "rclone"];

impl Location {
    /// Parses a restic location string.
    pub fn parse(s: &str) -> Result<Location, StorageError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid(s, "the repository location is empty"));
        }
        let scheme = s.split_once(':').map(|(scheme, _)| scheme);
        match scheme {
            Some("local") => parse_local(s, &s["local:".len()..]),
            Some("s3") => parse_s3(s),
            Some("gs") => {
                let (bucket, prefix) = parse_bucket_colon_prefix(s, "gs")?;
                Ok(Location::Gcs { bucket, prefix })
            }
            Some("azure") => {
                let (container, prefix) = parse_bucket_colon_prefix(s, "azure")?;
                Ok(Location::Azure { container, prefix })
            }
            Some(scheme) if UNSUPPORTED_SCHEMES.contains(&scheme) => Err(invalid(
                s,
                &format!(
                    "the `{scheme}:` backend is not supported (supported: a local path, \
                     `local:`, `s3:`, `gs:`, `azure:`)"
                ),
            )),
            Some(scheme) if !looks_like_path(s) => Err(invalid(
                s,
                &format!(
                    "unknown scheme `{scheme}:`; if the repository is in a local directory, \
                     add a `local:` prefix"
                ),
            )),
            _ => parse_local(s, s),
        }
    }

    /// A short name for the backend kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Location::Local(_) => "local",
            Location::S3 { .. } => "s3",
            Location::Gcs { .. } => "gs",
            Location::Azure { .. } => "azure",
        }
    }
}

fn invalid(location: &str, why: &str) -> StorageError {
    StorageError::InvalidLocation(format!(
        "unsupported repository location {location:?}: {why}"
    ))
}

/// restic's `isPath`: absolute, backslash, parent-relative or Windows drive paths.
fn looks_like_path(s: &str) -> bool {
    if s.starts_with('/') || s.starts_with('\\') || s.starts_with("../") || s.starts_with("..\\") {
        return true;
    }
    let b = s.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
}

fn parse_local(original: &str, path: &str) -> Result<Location, StorageError> {
    if path.is_empty() {
        return Err(invalid(original, "the local path is empty"));
    }
    Ok(Location::Local(PathBuf::from(path)))
}

/// `gs:bucket:/prefix` and `azure:container:/prefix`.
fn parse_bucket_colon_prefix(s: &str, scheme: &str) -> Result<(String, String), StorageError> {
    let rest = &s[scheme.len() + 1..];
    let Some((bucket, path)) = rest.split_once(':') else {
        return Err(invalid(
            s,
            &format!("expected `{scheme}:<bucket>:/<prefix>` (bucket name or path not found)"),
        ));
    };
    if bucket.is_empty() {
        return Err(invalid(s, "the bucket name is empty"));
    }
    Ok((bucket.to_string(), clean_prefix(s, path)?))
}

fn parse_s3(s: &str) -> Result<Location, StorageError> {
    if let Some(url) = s.strip_prefix("s3:http://") {
        return parse_s3_url(s, url, true);
    }
    if let Some(url) = s.strip_prefix("s3:https://") {
        return parse_s3_url(s, url, false);
    }
    let rest = s
        .strip_prefix("s3://")
        .or_else(|| s.strip_prefix("s3:"))
        .unwrap_or_default();
    // First element: endpoint host (or region host), then bucket, then prefix.
    let mut parts = rest.splitn(3, '/');
    let host = parts.next().unwrap_or_default();
    let bucket = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid(s, "the S3 host is empty"));
    }
    if bucket.is_empty() {
        return Err(invalid(
            s,
            "expected `s3:<host>/<bucket>[/<prefix>]` (bucket name not found)",
        ));
    }
    let prefix = clean_prefix(s, prefix)?;
    let bucket = bucket.to_string();
    if let Some(region) = aws_region(host) {
        return Ok(Location::S3 {
            endpoint: None,
            region,
            bucket,
            prefix,
            allow_http: false,
        });
    }
    Ok(Location::S3 {
        endpoint: Some(format!("https://{host}")),
        region: None,
        bucket,
        prefix,
        allow_http: false,
    })
}

/// `s3:http(s)://host[:port]/bucket[/prefix]`; `url` is what follows the scheme's `//`.
fn parse_s3_url(s: &str, url: &str, http: bool) -> Result<Location, StorageError> {
    let (host, path) = url.split_once('/').unwrap_or((url, ""));
    if host.is_empty() {
        return Err(invalid(s, "the S3 endpoint host is empty"));
    }
    if host.contains('@') {
        return Err(invalid(
            s,
            "credentials in the URL are not supported; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(invalid(s, "the S3 bucket name is empty"));
    }
    let scheme = if http { "http" } else { "https" };
    Ok(Location::S3 {
        endpoint: Some(format!("{scheme}://{host}")),
        region: None,
        bucket: bucket.to_string(),
        prefix: clean_prefix(s, prefix)?,
        allow_http: http,
    })
}

/// `Some(None)` for `s3.amazonaws.com`, `Some(Some(region))` for `s3.<region>.amazonaws.com`
/// (also `s3-<region>` and dualstack forms), `None` for any other host.
fn aws_region(host: &str) -> Option<Option<String>> {
    let name = host.strip_suffix(".amazonaws.com")?;
    if name == "s3" {
        return Some(None);
    }
    let region = name
        .strip_prefix("s3.dualstack.")
        .or_else(|| name.strip_prefix("s3."))
        .or_else(|| name.strip_prefix("s3-"))?;
    if region.is_empty() || region.contains('.') {
        return None;
    }
    Some(Some(region.to_string()))
}

/// Go's `path.Clean` applied to an object key prefix, then stripped of the leading `/`.
/// `..` segments that would escape the prefix are rejected: object stores would store them
/// literally, which no restic backend does on purpose.
fn clean_prefix(original: &str, prefix: &str) -> Result<String, StorageError> {
    let mut out: Vec<&str> = Vec::new();
    for seg in prefix.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() && !prefix.starts_with('/') {
                    return Err(invalid(original, "the prefix must not start with `..`"));
                }
            }
            seg => out.push(seg),
        }
    }
    Ok(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(
        endpoint: Option<&str>,
        region: Option<&str>,
        bucket: &str,
        prefix: &str,
        allow_http: bool,
    ) -> Location {
        Location::S3 {
            endpoint: endpoint.map(str::to_string),
            region: region.map(str::to_string),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            allow_http,
        }
    }

    fn parse(s: &str) -> Location {
        Location::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match Location::parse(s) {
            Ok(l) => panic!("{s} parsed as {l:?}"),
            Err(e) => {
                assert!(matches!(e, StorageError::InvalidLocation(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn local_paths() {
        assert_eq!(parse("/srv/repo"), Location::Local("/srv/repo".into()));
        assert_eq!(
            parse("relative/dir"),
            Location::Local("relative/dir".into())
        );
        assert_eq!(parse("repo"), Location::Local("repo".into()));
        assert_eq!(
            parse("local:/srv/repo"),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(parse("local:rel"), Location::Local("rel".into()));
        assert_eq!(parse("/srv/a:b"), Location::Local("/srv/a:b".into()));
        assert_eq!(parse("../x:y"), Location::Local("../x:y".into()));
        assert_eq!(parse("C:\\repo"), Location::Local("C:\\repo".into()));
        assert_eq!(parse("C:/repo"), Location::Local("C:/repo".into()));
    }

    #[test]
    fn host_path_strings_need_local_prefix() {
        let e = parse_err("host:path");
        assert!(e.contains("`local:`"), "{e}");
        assert!(e.contains("`host:`"), "{e}");
        parse_err("./a:b");
        parse_err("local:");
        parse_err("");
    }

    #[test]
    fn unsupported_backends_name_the_scheme() {
        for (s, scheme) in [
            ("sftp:user@host:/srv/repo", "sftp"),
            ("rest:http://host:8000/", "rest"),
            ("b2:bucket:prefix", "b2"),
            ("swift:container:/prefix", "swift"),
            ("rclone:remote:path", "rclone"),
        ] {
            let e = parse_err(s);
            assert!(e.contains("unsupported repository location"), "{e}");
            assert!(e.contains(&format!("`{scheme}:`")), "{e}");
        }
    }

    #[test]
    fn s3_aws_hosts() {
        assert_eq!(
            parse("s3:s3.amazonaws.com/bucket"),
            s3(None, None, "bucket", "", false)
        );
        assert_eq!(
            parse("s3:s3.us-east-1.amazonaws.com/bucket/prefix"),
            s3(None, Some("us-east-1"), "bucket", "prefix", false)
        );
        assert_eq!(
            parse("s3://s3.eu-west-3.amazonaws.com/b/p/q"),
            s3(None, Some("eu-west-3"), "b", "p/q", false)
        );
        assert_eq!(
            parse("s3:s3-eu-west-1.amazonaws.com/b"),
            s3(None, Some("eu-west-1"), "b", "", false)
        );
    }

    #[test]
    fn s3_custom_hosts_use_https_path_style() {
        assert_eq!(
            parse("s3:minio.local/bucket/prefix"),
            s3(Some("https://minio.local"), None, "bucket", "prefix", false)
        );
        assert_eq!(
            parse("s3://minio.local:9000/bucket"),
            s3(Some("https://minio.local:9000"), None, "bucket", "", false)
        );
        assert_eq!(
            parse("s3:https://server:9000/bucket/a/b"),
            s3(Some("https://server:9000"), None, "bucket", "a/b", false)
        );
        assert_eq!(
            parse("s3:http://localhost:9000/bucket"),
            s3(Some("http://localhost:9000"), None, "bucket", "", true)
        );
        assert_eq!(
            parse("s3:http://127.0.0.1:5000/bucket/prefix/"),
            s3(
                Some("http://127.0.0.1:5000"),
                None,
                "bucket",
                "prefix",
                true
            )
        );
    }

    #[test]
    fn s3_prefix_is_cleaned() {
        for (s, prefix) in [
            ("s3:host/b/a//b/", "a/b"),
            ("s3:host/b/./a/./b", "a/b"),
            ("s3:host/b/a/../c", "c"),
            ("s3:host/b/a/..", ""),
            ("s3:host/b/", ""),
            ("s3:http://h:1/b//x/", "x"),
        ] {
            match parse(s) {
                Location::S3 { prefix: p, .. } => assert_eq!(p, prefix, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        parse_err("s3:host/b/../escape");
    }

    #[test]
    fn s3_malformed() {
        parse_err("s3:");
        parse_err("s3:host");
        parse_err("s3:host/");
        parse_err("s3://");
        parse_err("s3:http://host:9000");
        parse_err("s3:http://host:9000/");
        parse_err("s3:http:///bucket");
        parse_err("s3:https://user:secret@host/bucket");
    }

    #[test]
    fn gs_and_azure() {
        assert_eq!(
            parse("gs:bucket:/prefix"),
            Location::Gcs {
                bucket: "bucket".into(),
                prefix: "prefix".into()
            }
        );
        assert_eq!(
            parse("gs:bucket:/"),
            Location::Gcs {
                bucket: "bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            parse("gs:bucket:/a//b/./c/"),
            Location::Gcs {
                bucket: "bucket".into(),
                prefix: "a/b/c".into()
            }
        );
        assert_eq!(
            parse("azure:container:/prefix/x"),
            Location::Azure {
                container: "container".into(),
                prefix: "prefix/x".into()
            }
        );
        assert_eq!(
            parse("azure:container:/"),
            Location::Azure {
                container: "container".into(),
                prefix: "".into()
            }
        );
        parse_err("gs:bucket");
        parse_err("gs::/prefix");
        parse_err("azure:container");
    }

    #[test]
    fn kind_names() {
        assert_eq!(parse("/r").kind(), "local");
        assert_eq!(parse("s3:h/b").kind(), "s3");
        assert_eq!(parse("gs:b:/").kind(), "gs");
        assert_eq!(parse("azure:c:/").kind(), "azure");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Location::parse(&s);
        }

        #[test]
        fn cleaned_prefix_has_no_empty_or_dot_segments(p in "[a-z./]{0,30}") {
            if let Ok(c) = clean_prefix("x", &p) {
                if !c.is_empty() {
                    for seg in c.split('/') {
                        proptest::prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                    }
                }
            }
        }
    }
}
