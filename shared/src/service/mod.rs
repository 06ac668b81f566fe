//! The use cases. They know the ports, never axum, SQLite, SQS or DynamoDB.

pub mod admission;
pub mod callbacks;
pub mod cancel;
pub mod catalog;
pub mod dead_letters;
pub mod deliver;
pub mod events;
pub mod fanout;
pub mod imports;
pub mod ingest;
pub mod key_cache;
pub mod keys;
pub mod recount;
pub mod render;
pub mod schedule;
pub mod segments;
mod settings;
mod twilio_status;
pub mod worker;

pub use settings::Settings;

use crate::domain::FieldErrors;
use crate::ports::{ContactWriteError, StoreError};
use crate::retry::Policy;

/// Why a use case refused or failed. The HTTP layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input broke rules; every broken rule is listed.
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    /// No such thing in the caller's tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The tenant is over its sending allowance: try again after this long.
    #[error("over the tenant's sending rate; retry in {} s", .0.as_secs_f64().ceil())]
    RateLimited(std::time::Duration),
    /// The input clashes with stored state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FieldErrors> for ServiceError {
    fn from(e: FieldErrors) -> Self {
        ServiceError::Invalid(e)
    }
}

impl From<ContactWriteError> for ServiceError {
    fn from(e: ContactWriteError) -> Self {
        match e {
            ContactWriteError::KeyTaken { field, other } => {
                let mut errs = FieldErrors::new();
                errs.push(field, format!("already belongs to contact {other}"));
                ServiceError::Invalid(errs)
            }
            ContactWriteError::Store(s) => ServiceError::Store(s),
        }
    }
}

/// Runs a store call up to `tries` times while it fails with [`StoreError::Unavailable`], under
/// [`Policy::STORE`]: a store blinks, so a write that matters should not give up at the first
/// error; a call that never answers is cut off at the policy's deadline (or the API call's, if
/// sooner). Callers must only retry calls that are safe to repeat.
pub async fn retry_store<T, F, Fut>(what: &str, tries: u32, call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let retryable = |e: &StoreError| matches!(e, StoreError::Unavailable(_));
    Policy::STORE.tries(tries).run(what, call, retryable, StoreError::Unavailable).await
}
