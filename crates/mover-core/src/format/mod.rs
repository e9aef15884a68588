//! Pure byte and JSON formats of a restic repository. No I/O, no logging.

pub mod config_file;
pub mod gojson;
pub mod gotime;
pub mod id;
pub mod index;
pub mod key_file;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;

pub use id::{BlobId, Id, PackId, SnapshotId, TreeId};

/// Errors from decoding repository files and structures.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl FormatError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// The two kinds of blobs a pack holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

impl std::fmt::Display for BlobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
