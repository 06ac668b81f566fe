//! The send Lambda's entry point: configuration from the environment at start-up, clients built
//! on the first batch, once per process.

use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;
use tokio::sync::OnceCell;

use aws_lambda_events::event::sqs::SqsEvent;
use herald::app::aws::{AwsConfig, ConfigError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    // Reading the environment is cheap, so a missing setting still stops start-up; the clients
    // wait for the first batch, so the runtime hears from a cold process sooner (BENCHMARKS.md 4).
    let config = AwsConfig::from_env()?;
    let (config, herald) = (&config, &OnceCell::new());
    let connect = move || async move { Ok::<_, ConfigError>(Arc::new(config.clone().connect().await?)) };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let h = herald.get_or_try_init(connect).await?.clone();
        Ok::<_, lambda_runtime::Error>(herald_send::handle_batch(h, event.payload).await)
    }))
    .await
}
