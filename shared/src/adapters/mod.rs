//! Implementations of the ports: `embedded` runs on SQLite files in one directory; `aws` on
//! DynamoDB and SQS (feature `aws`).

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
