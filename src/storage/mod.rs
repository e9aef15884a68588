//! One struct over `Arc<dyn object_store::ObjectStore>` that knows restic's paths.

pub mod url;

use crate::error::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path} not found")]
    NotFound { path: String },
}

impl StorageError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StorageError::NotFound { .. } => ErrorClass::NotFound,
        }
    }
}
