//! AWS SDK clients for tests: against the emulator (moto) or a fake of our own, with static
//! test credentials and an explicit endpoint.

use aws_sdk_dynamodb::config::{Credentials, Region};

/// An SDK configuration for `endpoint`.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "herald-tests"))
        .load()
        .await
}

/// The emulator's endpoint. With the `aws-emulator` feature on, a missing emulator is a failure,
/// never a silent pass.
pub fn emulator_endpoint() -> String {
    match std::env::var("HERALD_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!(
            "the aws-emulator suites need the AWS emulator: run scripts/test.sh, or start `moto_server -H 127.0.0.1 -p PORT` and set HERALD_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT"
        ),
    }
}
