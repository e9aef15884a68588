//! Errors of the Kubernetes layer: an API call that failed (named by what it did), an engine
//! error from `ops`, or a spec the controller cannot act on. Each has a class, so the
//! controller can tell requeue (transient) from Failed (terminal) and the in-Job runner can
//! pick its exit code.

use mover_core::error::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Engine(#[from] mover_core::error::Error),
    /// The spec asks for something that cannot be done; retrying will not help.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Error {
        Error::Kube {
            what: what.into(),
            source,
        }
    }

    /// The engine's class for engine errors; API errors are transient except a refusal
    /// (403, 422), which the same request will meet again.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Engine(e) => e.class(),
            Error::Invalid(_) => ErrorClass::InvalidInput,
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 || s.code == 422 => ErrorClass::InvalidInput,
                _ => ErrorClass::Retryable,
            },
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.class().exit_code()
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 404)
    }

    /// The cause chain on one line.
    pub fn chain_string(&self) -> String {
        match self {
            Error::Engine(e) => e.chain_string(),
            other => {
                let mut out = other.to_string();
                let mut cur = std::error::Error::source(other);
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
    }
}

/// The name of an error class as it appears in status (`WrongPassword`, `Retryable`, ...).
pub fn class_name(class: ErrorClass) -> String {
    format!("{class:?}")
}
