//! The one top-level error type. Each layer has its own `thiserror` enum; they all map into
//! [`Error`], whose [`Error::class`] drives exit codes, Kubernetes conditions and log fields.

use crate::compress::CompressError;
use crate::crypto::CryptoError;
use crate::format::FormatError;
use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code of a run stopped by a signal or a cancel request (restic 0.17+: 130).
pub const EXIT_CANCELED: i32 = 130;

/// Broad classes of failure. Exit codes follow from the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// The repository (or a named object in it) does not exist.
    NotFound,
    /// No key file opens with the given password.
    WrongPassword,
    /// The repository is locked by another process in a conflicting way.
    Locked,
    /// Data read from the repository failed verification or decoding.
    Corrupt,
    /// The user asked for something invalid (bad flag, unknown snapshot, bad path).
    InvalidInput,
    /// A transient failure (network, throttling); retrying may succeed.
    Retryable,
    /// Local file system I/O failed.
    Io,
    /// The run was asked to stop (SIGINT, SIGTERM, a cancel request).
    Canceled,
    /// mover itself failed: a worker panicked, or an invariant of its own broke. A bug to
    /// report, never the input's fault.
    Internal,
}

impl ErrorClass {
    /// Process exit code for this class (restic's codes where restic has one).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::NotFound => 10,
            ErrorClass::Locked => 11,
            ErrorClass::WrongPassword => 12,
            ErrorClass::Canceled => EXIT_CANCELED,
            _ => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::NotFound => "not_found",
            ErrorClass::WrongPassword => "wrong_password",
            ErrorClass::Locked => "locked",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::Retryable => "retryable",
            ErrorClass::Io => "io",
            ErrorClass::Canceled => "canceled",
            ErrorClass::Internal => "internal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// restic 0.18's words, which scripts match (`Is there a repository at the following
    /// location?`), with the location on the last line as restic prints it.
    #[error(
        "repository does not exist: unable to open config file: {detail}\nIs there a repository at the following location?\n{location}"
    )]
    RepositoryNotFound { location: String, detail: String },
    #[error("wrong password or no key found in {location}")]
    WrongPassword { location: String },
    /// `detail` is restic's account of the lock held (`repository is already locked by
    /// PID ...`), so the message reads as restic 0.18's.
    #[error("unable to create lock in backend: {detail}")]
    Locked { detail: String },
    /// The lock protecting a run could not be refreshed before others may call it stale.
    #[error("lock lost: {detail}")]
    LockLost { detail: String },
    #[error("{reason}")]
    Canceled { reason: String },
    #[error("{what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// No snapshot matches a selection (`latest` with filters, an id prefix): restic's
    /// "failed to find snapshot: no snapshot found", with what was asked after it.
    #[error("failed to find snapshot: {restic}{detail}")]
    SnapshotNotFound { restic: String, detail: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{what}: {source}")]
    Format {
        what: String,
        #[source]
        source: FormatError,
    },
    #[error("{what}: {source}")]
    Crypto {
        what: String,
        #[source]
        source: CryptoError,
    },
    #[error("{what}: {source}")]
    Compress {
        what: String,
        #[source]
        source: CompressError,
    },
    /// Entries the run could not handle; it went on with the others and ended with these.
    #[error("{what} finished with {count} errors, the first: {first}")]
    Incomplete {
        what: String,
        count: usize,
        first: String,
    },
    /// A worker task ended without its result: it panicked or was dropped.
    #[error("{what} failed: {source}")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A blob that cannot go into a pack.
    #[error("{what}: {source}")]
    Pack {
        what: String,
        #[source]
        source: crate::repo::packer::PackWriteError,
    },
    /// A service beside the repository failed (the Kubernetes API server), with the class
    /// its front end gave the failure.
    #[error("{detail}")]
    Service { detail: String, class: ErrorClass },
    /// An invariant of mover's own broke, or a worker stopped without saying why.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::RepositoryNotFound { .. } => ErrorClass::NotFound,
            Error::WrongPassword { .. } => ErrorClass::WrongPassword,
            Error::Locked { .. } => ErrorClass::Locked,
            Error::LockLost { .. } => ErrorClass::Retryable,
            Error::Canceled { .. } => ErrorClass::Canceled,
            Error::Corrupt { .. }
            | Error::Format { .. }
            | Error::Crypto { .. }
            | Error::Compress { .. } => ErrorClass::Corrupt,
            // Only a missing repository is "not found" (exit 10); a missing snapshot is a
            // bad argument, and a missing object the repository refers to is damage.
            Error::NotFound { .. } | Error::SnapshotNotFound { .. } => ErrorClass::InvalidInput,
            Error::InvalidInput(_) => ErrorClass::InvalidInput,
            Error::Io { .. } => ErrorClass::Io,
            Error::Storage(e) => match e.class() {
                ErrorClass::NotFound => ErrorClass::Corrupt,
                c => c,
            },
            Error::Incomplete { .. } => ErrorClass::Io,
            Error::Pack { source, .. } => match source {
                crate::repo::packer::PackWriteError::BlobTooLarge { .. } => {
                    ErrorClass::InvalidInput
                }
                crate::repo::packer::PackWriteError::PackFull { .. } => ErrorClass::Internal,
            },
            Error::Task { .. } | Error::Internal(_) => ErrorClass::Internal,
            Error::Service { class, .. } => *class,
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.class().exit_code()
    }

    /// Whether storage said the object does not exist (a lock removed meanwhile, a missing
    /// pack), whatever class that has for the operation.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Storage(e) => e.class() == ErrorClass::NotFound,
            Error::NotFound { .. }
            | Error::SnapshotNotFound { .. }
            | Error::RepositoryNotFound { .. } => true,
            _ => false,
        }
    }

    /// A worker task that ended without its result.
    pub fn task(what: impl Into<String>, source: tokio::task::JoinError) -> Error {
        Error::Task {
            what: what.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn format(what: impl Into<String>, source: FormatError) -> Error {
        Error::Format {
            what: what.into(),
            source,
        }
    }

    pub fn crypto(what: impl Into<String>, source: CryptoError) -> Error {
        Error::Crypto {
            what: what.into(),
            source,
        }
    }

    pub fn compress(what: impl Into<String>, source: CompressError) -> Error {
        Error::Compress {
            what: what.into(),
            source,
        }
    }

    /// The whole cause chain on one line, as `main` prints it.
    pub fn chain_string(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            if !out.contains(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        out
    }
}
