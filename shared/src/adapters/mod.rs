//! Implementations of the ports: `embedded` runs on SQLite files in one directory; `aws` on
//! DynamoDB and SQS (feature `aws`).

#[cfg(feature = "aws")]
pub mod aws;
pub mod cached_keys;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(any(feature = "aws", feature = "embedded"))]
mod rows;
