//! S3 keys from an AWS shared credentials file, the way restic's minio-go chain reads one:
//! `AWS_SHARED_CREDENTIALS_FILE` (else `~/.aws/credentials` when it exists), profile
//! `AWS_PROFILE` (else `default`). Velero's BackupStorageLocation credential is such a file.
//!
//! The INI dialect: `[name]` and `[profile name]` headers (the second is the config-file
//! form; Velero hands the same file to both), `#` and `;` comments, whitespace around `=`,
//! and the keys `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`. Messages
//! name the file and the profile, never a value.

use super::StorageError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Static keys read from a profile.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SharedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SharedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCredentials { .. }")
    }
}

/// The profile's keys, or `None` when there is no file to read (or, for the default file
/// and profile, nothing in it), so the caller goes on to AWS's other providers.
///
/// A file named by `AWS_SHARED_CREDENTIALS_FILE`, or a profile named by `AWS_PROFILE`, is
/// what the user asked for: a missing file, profile or key is then an error. The default
/// `~/.aws/credentials` with the default profile is only a fallback.
pub(super) fn load(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SharedCredentials>, StorageError> {
    let named_profile = env("AWS_PROFILE");
    let explicit_file = env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from);
    let strict = explicit_file.is_some() || named_profile.is_some();
    let profile = named_profile.unwrap_or_else(|| "default".to_string());
    let file = match explicit_file {
        Some(file) => file,
        None => match env("HOME") {
            Some(home) if Path::new(&home).join(".aws/credentials").is_file() => {
                Path::new(&home).join(".aws/credentials")
            }
            _ => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&file).map_err(|source| StorageError::Io {
        context: format!("cannot read AWS shared credentials file {}", file.display()),
        source,
    })?;
    let sections = parse(&text);
    let Some(keys) = sections.get(profile.as_str()) else {
        if !strict {
            return Ok(None);
        }
        return Err(StorageError::Config(format!(
            "profile {profile:?} not found in AWS shared credentials file {}",
            file.display()
        )));
    };
    let key = |name: &str| keys.get(name).filter(|v| !v.is_empty()).cloned();
    match (key("aws_access_key_id"), key("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(SharedCredentials {
            access_key_id,
            secret_access_key,
            session_token: key("aws_session_token"),
        })),
        (None, None) if !strict => Ok(None),
        (id, _) => {
            let missing = if id.is_some() {
                "aws_secret_access_key"
            } else {
                "aws_access_key_id"
            };
            Err(StorageError::Config(format!(
                "profile {profile:?} in AWS shared credentials file {} has no {missing}",
                file.display()
            )))
        }
    }
}

/// Sections (profile name → key → value) of an AWS INI file. Keys are lower-cased; a
/// repeated section adds to the first, and a later value of a key wins.
fn parse(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.split_once(']').map(|(name, _)| name) else {
                current = None;
                continue;
            };
            let mut words = name.split_whitespace();
            let name = match (words.next(), words.next(), words.next()) {
                (Some("profile"), Some(name), None) => name,
                (Some(name), None, None) => name,
                _ => {
                    current = None;
                    continue;
                }
            };
            sections.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        let value = strip_inline_comment(value.trim());
        let value = unquote(value);
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.to_string());
    }
    sections
}

/// `value ; comment` and `value # comment`: a comment mark after whitespace ends the value.
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b'#' || b == b';') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return value[..i].trim_end();
        }
    }
    value
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FILE: &str = "\
# Velero's credential Secret, key `cloud`
[default]
aws_access_key_id=AKIDDEFAULT
aws_secret_access_key=defaultsecret

[profile backups]
  aws_access_key_id = AKIDBACKUPS   ; the backup user
aws_secret_access_key =   backupssecret
aws_session_token = \"tok/en+=\"
region = eu-west-1

[half]
aws_access_key_id = AKIDHALF

[role]
role_arn = arn:aws:iam::123456789012:role/backup
source_profile = default
";

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn profiles_are_read_with_both_header_forms_and_loose_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "cloud", FILE);

        let env = env_of(&[("AWS_SHARED_CREDENTIALS_FILE", &file)]);
        let creds = load(&env).unwrap().unwrap();
        assert_eq!(creds.access_key_id, "AKIDDEFAULT");
        assert_eq!(creds.secret_access_key, "defaultsecret");
        assert_eq!(creds.session_token, None);

        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &file),
            ("AWS_PROFILE", "backups"),
        ]);
        let creds = load(&env).unwrap().unwrap();
        assert_eq!(creds.access_key_id, "AKIDBACKUPS");
        assert_eq!(creds.secret_access_key, "backupssecret");
        assert_eq!(creds.session_token.as_deref(), Some("tok/en+="));
    }

    #[test]
    fn a_missing_profile_or_key_names_the_file_and_profile_but_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "cloud", FILE);
        for (profile, want) in [
            ("nope", "profile \"nope\" not found"),
            ("half", "has no aws_secret_access_key"),
            ("role", "has no aws_access_key_id"),
        ] {
            let env = env_of(&[
                ("AWS_SHARED_CREDENTIALS_FILE", &file),
                ("AWS_PROFILE", profile),
            ]);
            let err = load(&env).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains(&file), "{err}");
            for secret in ["AKID", "defaultsecret", "backupssecret", "tok/en"] {
                assert!(!err.contains(secret), "{err}");
            }
        }

        let env = env_of(&[(
            "AWS_SHARED_CREDENTIALS_FILE",
            &dir.path().join("missing").display().to_string(),
        )]);
        let err = load(&env).unwrap_err().to_string();
        assert!(
            err.contains("cannot read AWS shared credentials file"),
            "{err}"
        );
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn the_home_file_is_used_only_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let env = env_of(&[("HOME", &home)]);
        assert_eq!(load(&env).unwrap(), None);

        write(
            dir.path(),
            ".aws/credentials",
            "[other]\naws_access_key_id=a\n",
        );
        // Default file and profile: a file without `[default]` is no error.
        assert_eq!(load(&env).unwrap(), None);
        // A profile asked for by name must be there.
        let named = env_of(&[("HOME", &home), ("AWS_PROFILE", "missing")]);
        assert!(load(&named).is_err());

        write(dir.path(), ".aws/credentials", FILE);
        assert_eq!(load(&env).unwrap().unwrap().access_key_id, "AKIDDEFAULT");
        assert_eq!(load(&env_of(&[])).unwrap(), None);
    }

    #[test]
    fn comments_quotes_and_odd_lines() {
        let sections = parse(
            "top=level\n[ a ]\nk = v # c\nq='x y'\n; gone = 1\n#gone=2\nnot a pair\n\
             [profile  b]\nK=V\n[a]\nk=later\n[broken\nz=1\n",
        );
        assert_eq!(sections["a"]["k"], "later");
        assert_eq!(sections["a"]["q"], "x y");
        assert!(!sections["a"].contains_key("; gone"));
        assert_eq!(sections["b"]["k"], "V");
        assert_eq!(sections.len(), 2);
        assert_eq!(strip_inline_comment("abc#def"), "abc#def");
    }

    /// What the S3 backend ends up configured with.
    #[test]
    fn the_s3_backend_takes_keys_from_the_file_unless_the_environment_has_them() {
        use object_store::aws::AmazonS3ConfigKey;
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "cloud", FILE);
        let location = super::super::Location::parse("s3:http://minio:9000/velero").unwrap();
        let builder = |env: &dyn Fn(&str) -> Option<String>| {
            super::super::backends::s3_builder(
                &location,
                object_store::ClientOptions::new(),
                env,
                None,
            )
        };

        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &file),
            ("AWS_PROFILE", "backups"),
        ]);
        let b = builder(&env).unwrap();
        let get = |key| b.get_config_value(&key);
        assert_eq!(
            get(AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some("AKIDBACKUPS")
        );
        assert_eq!(
            get(AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some("backupssecret")
        );
        assert_eq!(get(AmazonS3ConfigKey::Token).as_deref(), Some("tok/en+="));

        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &file),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ]);
        let b = builder(&env).unwrap();
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::AccessKeyId)
                .as_deref(),
            Some("AKIDENV")
        );

        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &file),
            ("AWS_PROFILE", "half"),
        ]);
        let err = builder(&env).unwrap_err().to_string();
        assert!(err.contains("half") && !err.contains("AKIDHALF"), "{err}");
    }
}
