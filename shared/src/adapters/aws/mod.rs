//! The AWS shape's adapters: SQS for the job queue, one DynamoDB table for every store
//! (`docs/dynamodb.md`), an S3 bucket for import files, EventBridge Scheduler for waits over 15
//! minutes. `app::aws` wires them from the environment.

mod dynamo;
pub mod meter;
mod s3;
mod scheduler;
mod sqs;

pub use dynamo::DynamoStore;
pub use s3::{S3Files, UPLOAD_PREFIX};
pub use scheduler::{plan as plan_schedules, schedule_name, Planned, ScheduleTarget, Schedules};
pub use sqs::SqsQueue;

/// The text of an SDK error with its causes, for logs and `StoreError`s.
pub(crate) fn sdk_text<E: std::error::Error + 'static>(e: &E) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}
