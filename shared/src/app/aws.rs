//! The AWS shape's wiring: settings from the Lambda environment (names in template.yaml), the
//! SDK clients built once from `aws_config`, so `AWS_ENDPOINT_URL` points them at an emulator with
//! no code change, and the adapters assembled into a [`Herald`].

use std::sync::Arc;

use super::{Herald, Settings, Stores};
use crate::adapters::aws::{sdk_text, DynamoStore, ScheduleTarget, Schedules, SqsQueue};
use crate::providers::{sandbox::Sandbox, Providers};

/// A required setting is missing or malformed; start-up stops and names it.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError { name, problem: "is not set; it must name the resource (see template.yaml)".into() }),
    }
}

fn optional_number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => {
            v.parse().map_err(|_| ConfigError { name, problem: format!("\"{v}\" is not a number") })
        }
        _ => Ok(default),
    }
}

/// The AWS configuration, from environment variables.
#[derive(Clone)]
pub struct AwsConfig {
    /// `TABLE_NAME`: the DynamoDB table.
    pub table: String,
    /// `QUEUE_URL`: the SQS queue of send jobs.
    pub queue_url: String,
    pub settings: Settings,
    /// Provider settings from `HERALD_*` variables, named without the prefix.
    pub provider_settings: std::collections::HashMap<String, String>,
    /// `PROVIDER_SECRETS_ARN`: a Secrets Manager secret whose JSON object overlays them.
    pub secrets_arn: Option<String>,
    /// The bucket import files wait in (`IMPORT_BUCKET`); without it imports answer `501`.
    pub import_bucket: Option<String>,
    /// Lines of an import chunk written to DynamoDB at once (`IMPORT_LINES_AT_ONCE`, 16).
    pub import_lines_at_once: usize,
    /// Where waits over 15 minutes are scheduled (`SCHEDULE_GROUP`, `QUEUE_ARN`,
    /// `SCHEDULER_ROLE_ARN`, `DEAD_LETTER_QUEUE_ARN`); without a group they hop on the queue.
    pub schedules: Option<ScheduleTarget>,
}

/// Names the provider settings present, never their values (they include credentials).
impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.provider_settings.keys().collect();
        keys.sort();
        f.debug_struct("AwsConfig")
            .field("table", &self.table)
            .field("queue_url", &self.queue_url)
            .field("settings", &self.settings)
            .field("provider_settings", &keys)
            .field("secrets_arn", &self.secrets_arn)
            .field("import_bucket", &self.import_bucket)
            .field("import_lines_at_once", &self.import_lines_at_once)
            .field("schedules", &self.schedules)
            .finish()
    }
}

impl AwsConfig {
    pub fn from_env() -> Result<AwsConfig, ConfigError> {
        let mut settings = Settings::default();
        settings.max_attempts = optional_number("MAX_ATTEMPTS", settings.max_attempts)?;
        settings.max_receives = optional_number("MAX_RECEIVE_COUNT", settings.max_receives)?;
        let timeout = optional_number("PROVIDER_TIMEOUT_SECONDS", settings.provider_timeout.as_secs())?;
        settings.provider_timeout = std::time::Duration::from_secs(timeout);
        let rps = optional_number("TENANT_RPS", settings.tenant_limits.requests_per_second)?;
        let rpm = optional_number("TENANT_RECIPIENTS_PER_MINUTE", settings.tenant_limits.recipients_per_minute)?;
        settings.tenant_limits =
            crate::service::admission::Limits::per_tenant(rps, rpm, ("TENANT_RPS", "TENANT_RECIPIENTS_PER_MINUTE"))
                .map_err(|problem| ConfigError {
                    name: if rps < 0.5 { "TENANT_RPS" } else { "TENANT_RECIPIENTS_PER_MINUTE" },
                    problem,
                })?;
        let provider_settings = crate::providers::config::env_settings();
        let secrets_arn = std::env::var("PROVIDER_SECRETS_ARN").ok().filter(|a| !a.is_empty());
        if secrets_arn.is_none() {
            // Without a secret to complete them, the settings must stand on their own: fail now.
            crate::providers::config::ProviderConfig::from_map(&provider_settings)
                .map_err(|e| ConfigError { name: "HERALD_*", problem: e.to_string() })?;
        }
        Ok(AwsConfig {
            table: required("TABLE_NAME")?,
            queue_url: required("QUEUE_URL")?,
            settings,
            provider_settings,
            secrets_arn,
            import_bucket: std::env::var("IMPORT_BUCKET").ok().filter(|b| !b.trim().is_empty()),
            import_lines_at_once: optional_number("IMPORT_LINES_AT_ONCE", 16)?,
            schedules: schedule_target()?,
        })
    }

    /// Builds the clients once and wires a Herald on them.
    pub async fn connect(self) -> Result<Herald, ConfigError> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let mut provider_settings = self.provider_settings.clone();
        if let Some(arn) = &self.secrets_arn {
            provider_settings.extend(read_secret(&sdk, arn).await?);
        }
        let provider_config = crate::providers::config::ProviderConfig::from_map(&provider_settings)
            .map_err(|e| ConfigError { name: "HERALD_* / PROVIDER_SECRETS_ARN", problem: e.to_string() })?;
        let store = Arc::new(
            DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), self.table)
                .with_lines_at_once(self.import_lines_at_once),
        );
        let mut queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), self.queue_url);
        if let Some(target) = self.schedules {
            queue = queue.with_schedules(Schedules::new(aws_sdk_scheduler::Client::new(&sdk), target));
        }
        let queue = Arc::new(queue);
        // A channel without a configured provider falls back to the sandbox, which records sends
        // in the table, so a deployment can be tried end to end before providers are set up.
        let sandbox = Arc::new(Sandbox::new(store.clone(), Default::default()));
        let client = crate::providers::http::client(self.settings.provider_timeout + std::time::Duration::from_secs(1));
        let providers = Providers::from_config(&provider_config, client, sandbox, store.clone(), false)
            .map_err(|problem| ConfigError { name: "HERALD_*", problem })?
            .with_ses(&provider_config, &sdk);
        let mut stores = Stores::from_one(store.clone()).with_events(store.clone());
        let dead_letters: Arc<dyn crate::ports::DeadLetters> = store.clone();
        if let Some(bucket) = self.import_bucket {
            // An emulator on an endpoint URL takes buckets in the path, not in the host name.
            let path_style = std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| !e.is_empty());
            let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).build();
            let files = Arc::new(crate::adapters::aws::S3Files::new(aws_sdk_s3::Client::from_conf(s3), bucket));
            stores.imports = Some((store, files));
        }
        let herald = Herald::new(stores, queue, providers, self.settings).with_provider_config(provider_config);
        Ok(herald.with_dead_letters(dead_letters))
    }
}

/// The schedule group and what its schedules need, all or nothing: a group without the queue's ARN
/// or the role would fail at the first long wait, so it stops start-up instead.
fn schedule_target() -> Result<Option<ScheduleTarget>, ConfigError> {
    let Some(group) = std::env::var("SCHEDULE_GROUP").ok().filter(|g| !g.trim().is_empty()) else {
        return Ok(None);
    };
    let need = |name: &'static str| {
        required(name)
            .map_err(|_| ConfigError { name, problem: "is needed with SCHEDULE_GROUP (see template.yaml)".into() })
    };
    Ok(Some(ScheduleTarget {
        group,
        queue_arn: need("QUEUE_ARN")?,
        role_arn: need("SCHEDULER_ROLE_ARN")?,
        dead_letter_arn: std::env::var("DEAD_LETTER_QUEUE_ARN").ok().filter(|a| !a.trim().is_empty()),
    }))
}

/// The provider settings held in a Secrets Manager secret: a JSON object of strings, named like
/// the `HERALD_*` variables (with or without the prefix). Never logged.
async fn read_secret(
    sdk: &aws_config::SdkConfig,
    arn: &str,
) -> Result<std::collections::HashMap<String, String>, ConfigError> {
    let fail = |problem: String| ConfigError { name: "PROVIDER_SECRETS_ARN", problem };
    let out = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| fail(format!("cannot read the secret: {}", sdk_text(&e))))?;
    let text = out.secret_string.ok_or_else(|| fail("the secret has no string value".into()))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|_| fail("the secret must be a JSON object of strings".into()))?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.strip_prefix("HERALD_").unwrap_or(&k).to_string(), s)),
            _ => Err(fail(format!("the secret's {k} must be a string"))),
        })
        .collect()
}

/// The table alone, from `TABLE_NAME` and the standard AWS environment (for `herald keys`).
pub async fn store_from_env() -> Result<DynamoStore, ConfigError> {
    let table = required("TABLE_NAME")?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table))
}
