//! The send Lambda's entry point: configuration from the environment, clients built once.

use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use herald::adapters::aws::AwsConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let h = Arc::new(AwsConfig::from_env()?.connect().await?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let h = h.clone();
        async move { Ok::<_, lambda_runtime::Error>(herald_send::handle_batch(h, event.payload).await) }
    }))
    .await
}
