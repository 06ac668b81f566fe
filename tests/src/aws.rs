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

/// Empties the emulator at `endpoint` (`POST /moto-api/reset`).
pub async fn reset_emulator(endpoint: &str) -> Result<(), String> {
    match reqwest::Client::new().post(format!("{endpoint}/moto-api/reset")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("cannot reset the AWS emulator at {endpoint}: it answered {}", r.status())),
        Err(e) => Err(format!("cannot reset the AWS emulator at {endpoint}: {e}")),
    }
}

/// Herald's table, queue and dead-letter queue, as template.yaml declares them.
pub struct Resources {
    pub table: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub queue_arn: String,
    pub dlq_arn: String,
}

/// Creates Herald's resources on a (freshly reset) emulator: the table with its TTL, the
/// dead-letter queue and the job queue redriving to it after `max_receives`.
pub async fn create_resources(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    max_receives: u32,
) -> Resources {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
    };
    use aws_sdk_sqs::types::QueueAttributeName;
    let table = "herald".to_string();
    let key =
        |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().unwrap();
    let attribute = |name: &str| {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .expect("create table");
    ddb.update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().enabled(true).attribute_name("expires_at").build().unwrap(),
        )
        .send()
        .await
        .expect("enable TTL");
    let dlq_url = sqs.create_queue().queue_name("herald-jobs-dlq").send().await.unwrap().queue_url.unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let queue_url = sqs
        .create_queue()
        .queue_name("herald-jobs")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string(),
        )
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = queue_arn(sqs, &queue_url).await;
    Resources { table, queue_url, dlq_url, queue_arn, dlq_arn }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attrs = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await;
    attrs.unwrap().attributes.unwrap()[&QueueAttributeName::QueueArn].clone()
}

/// The schedule group template.yaml declares, and the role its schedules send with (the emulator
/// does not check roles).
pub const SCHEDULE_GROUP: &str = "herald-jobs";
pub const SCHEDULER_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/herald-scheduler";

pub async fn create_schedule_group(scheduler: &aws_sdk_scheduler::Client) {
    scheduler.create_schedule_group().name(SCHEDULE_GROUP).send().await.expect("create the schedule group");
}

/// EventBridge Scheduler, played by hand (the emulator stores schedules but never fires them):
/// every schedule of the group puts its input on the queue its target names, then deletes itself
/// as `ActionAfterCompletion: DELETE` does. Answers what was fired: (expression, input).
pub async fn fire_schedules(
    scheduler: &aws_sdk_scheduler::Client,
    sqs: &aws_sdk_sqs::Client,
    queues: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut fired = Vec::new();
    for name in schedule_names(scheduler).await {
        let s = scheduler.get_schedule().group_name(SCHEDULE_GROUP).name(&name).send().await.expect("get schedule");
        let target = s.target().expect("a schedule has a target");
        let url = queues.iter().find(|(arn, _)| *arn == target.arn()).map(|(_, url)| *url);
        let url = url.unwrap_or_else(|| panic!("schedule {name} targets {}, not a queue of the stack", target.arn()));
        let input = target.input().unwrap_or_default().to_string();
        sqs.send_message().queue_url(url).message_body(&input).send().await.expect("the target's SendMessage");
        scheduler.delete_schedule().group_name(SCHEDULE_GROUP).name(&name).send().await.expect("delete schedule");
        fired.push((s.schedule_expression().unwrap_or_default().to_string(), input));
    }
    fired
}

/// The names of the group's schedules.
pub async fn schedule_names(scheduler: &aws_sdk_scheduler::Client) -> Vec<String> {
    let out = scheduler.list_schedules().group_name(SCHEDULE_GROUP).max_results(100).send().await;
    out.expect("list schedules").schedules().iter().map(|s| s.name().unwrap_or_default().to_string()).collect()
}

/// The Lambda event source mapping of the job queue, played by hand: receive a batch, build the
/// SQS event the send function gets, delete what it did not report as failed.
pub struct EventSource {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    /// The records' `eventSourceARN`, as the mapping sets it (the send function tells the jobs
    /// queue from the dead-letter queue by it).
    source_arn: Option<String>,
}

impl EventSource {
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: &str) -> EventSource {
        EventSource { sqs, queue_url: queue_url.to_string(), source_arn: None }
    }

    /// Records that name `arn` as their source.
    pub fn with_arn(mut self, arn: &str) -> EventSource {
        self.source_arn = Some(arn.to_string());
        self
    }

    /// Up to `max` messages, waiting up to `wait_seconds` for the first.
    pub async fn receive(&self, max: i32, wait_seconds: i32) -> aws_lambda_events::event::sqs::SqsEvent {
        use serde_json::{json, Value};
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let records: Vec<Value> = out
            .messages()
            .iter()
            .map(|m| {
                let attrs: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect())
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": attrs, "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                    "eventSourceARN": self.source_arn,
                })
            })
            .collect();
        serde_json::from_value(json!({"Records": records})).expect("an SQS event")
    }

    /// Deletes, in one `DeleteMessageBatch`, every record of `event` not named in `failed`.
    pub async fn settle(&self, event: &aws_lambda_events::event::sqs::SqsEvent, failed: &[String]) {
        use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
        let entries: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .filter(|r| !r.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .expect("entry")
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let out = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("delete batch");
        assert!(out.failed().is_empty(), "the queue refused deletes: {:?}", out.failed());
    }
}
