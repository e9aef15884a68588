//! Key files: creating one for a password, finding the one a password opens, listing and
//! removing them.

use crate::crypto::kdf::{derive_key, random_salt};
use crate::crypto::{CryptoError, KdfParams, Key};
use crate::error::{Error, Result};
use crate::format::Id;
use crate::format::gotime;
use crate::format::key_file::KeyFile;
use crate::storage::{FileType, Storage};
use bytes::Bytes;

/// restic 0.14 gives up after this many key files.
const MAX_KEYS_TRIED: usize = 20;

/// Who a new key file says made it (restic's `key add --user/--host`).
#[derive(Debug, Clone, Default)]
pub struct KeyOwner {
    /// Default: the current user.
    pub username: Option<String>,
    /// Default: this host.
    pub hostname: Option<String>,
}

/// Create and store a key file that wraps `master` with `password`.
pub async fn save_new_key(
    storage: &Storage,
    master: &Key,
    password: &str,
    params: &KdfParams,
) -> Result<Id> {
    save_new_key_for(storage, master, password, params, &KeyOwner::default()).await
}

/// [`save_new_key`] recording `owner` in the key file.
pub async fn save_new_key_for(
    storage: &Storage,
    master: &Key,
    password: &str,
    params: &KdfParams,
    owner: &KeyOwner,
) -> Result<Id> {
    params
        .validate()
        .map_err(|e| Error::InvalidInput(format!("key derivation parameters: {e}")))?;
    let salt = random_salt();
    let password = password.as_bytes().to_vec();
    let params_c = *params;
    let user_key = tokio::task::spawn_blocking(move || derive_key(&password, &salt, &params_c))
        .await
        .map_err(|e| Error::task("the key derivation task", e))?
        .map_err(|e| Error::crypto("deriving key from password", e))?;
    let data = user_key.seal(&master.to_json());
    let file = KeyFile {
        created: gotime::format(&gotime::now_local()),
        username: owner
            .username
            .clone()
            .unwrap_or_else(crate::host::current_username),
        hostname: owner.hostname.clone().unwrap_or_else(crate::host::hostname),
        kdf: "scrypt".to_string(),
        n: params.n,
        r: params.r,
        p: params.p,
        salt: salt.to_vec(),
        data,
    };
    let bytes = file.encode();
    let id = Id::hash(&bytes);
    storage
        .write_named_by_hash(FileType::Key, &id, Bytes::from(bytes))
        .await?;
    Ok(id)
}

/// Every key file, decoded (an unreadable one is reported with its error), sorted by id.
pub async fn list_keys(
    storage: &Storage,
) -> Result<Vec<(Id, std::result::Result<KeyFile, String>)>> {
    let mut out = Vec::new();
    for (id, _) in storage.list(FileType::Key).await? {
        let file = match storage.read(FileType::Key, &id).await {
            Ok(raw) => KeyFile::decode(&raw).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push((id, file));
    }
    Ok(out)
}

/// Try the key files (the `RESTIC_KEY_HINT` one first) until one opens with `password`;
/// returns the key file's id with the master key.
pub async fn open_with_password(storage: &Storage, password: &str) -> Result<(Id, Key)> {
    let mut ids: Vec<Id> = storage
        .list(FileType::Key)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    if let Ok(hint) = std::env::var("RESTIC_KEY_HINT") {
        let hint = hint.to_ascii_lowercase();
        if let Some(pos) = ids.iter().position(|id| id.to_hex().starts_with(&hint)) {
            let id = ids.remove(pos);
            ids.insert(0, id);
        }
    }
    if ids.is_empty() {
        return Err(Error::corrupt(
            format!("repository {}", storage.display()),
            "no key files found in keys/",
        ));
    }
    let mut last_corrupt = None;
    let mut usable_keys = 0usize;
    for id in ids.into_iter().take(MAX_KEYS_TRIED) {
        let raw = storage.read(FileType::Key, &id).await?;
        let file = match KeyFile::decode(&raw) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(key = %id, error = %e, "skipping unreadable key file");
                last_corrupt = Some(Error::format(format!("key file {id}"), e));
                continue;
            }
        };
        let password = password.as_bytes().to_vec();
        let params = file.kdf_params();
        let salt = file.salt.clone();
        let derived = tokio::task::spawn_blocking(move || derive_key(&password, &salt, &params))
            .await
            .map_err(|e| Error::task("the key derivation task", e))?;
        let user_key = match derived {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(key = %id, error = %e, "skipping key file with bad parameters");
                last_corrupt = Some(Error::crypto(format!("key file {id}"), e));
                continue;
            }
        };
        usable_keys += 1;
        match user_key.open(&file.data) {
            Ok(plain) => {
                return Key::from_json(&plain)
                    .map(|key| (id, key))
                    .map_err(|e| Error::crypto(format!("master key in key file {id}"), e));
            }
            Err(CryptoError::MacMismatch) => continue,
            Err(e) => {
                last_corrupt = Some(Error::crypto(format!("key file {id}"), e));
                continue;
            }
        }
    }
    // A MAC mismatch on every usable key file means the password is wrong; if no key file
    // was even usable, say what was wrong with them instead.
    match last_corrupt {
        Some(e) if usable_keys == 0 => Err(e),
        _ => Err(Error::WrongPassword {
            location: storage.display().to_string(),
        }),
    }
}
