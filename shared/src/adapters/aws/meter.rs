//! What Herald costs on AWS, counted on the wire: an SDK interceptor that counts every SQS,
//! DynamoDB and EventBridge Scheduler request attempt the adapters make (retries included, as AWS
//! bills them) and the DynamoDB capacity units each one consumes, computed from the items in the
//! request and the answer with DynamoDB's published sizing rules.
//!
//! Capacity rules applied (on-demand mode):
//! - a write costs one unit per started KiB of the item written (`PutItem`, each `PutRequest` of a
//!   `BatchWriteItem`); `UpdateItem` and `DeleteItem` are counted as one unit, which is exact
//!   while the item touched stays under 1 KiB (Herald's rows and markers do); transactions cost
//!   twice;
//! - a read costs one unit per started 4 KiB returned when strongly consistent, half when
//!   eventually consistent, and at least that for an item not found; a `Query` rounds the sum of
//!   the items it returned; transactions cost twice.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The counts so far.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MeterCounts {
    /// Request attempts per `service:Operation` (e.g. `sqs:SendMessageBatch`).
    pub requests: BTreeMap<String, u64>,
    /// DynamoDB read capacity units.
    pub read_units: f64,
    /// DynamoDB write capacity units.
    pub write_units: f64,
}

impl MeterCounts {
    /// Request attempts to one service (`sqs`, `dynamodb` or `scheduler`).
    pub fn requests_to(&self, service: &str) -> u64 {
        let prefix = format!("{service}:");
        self.requests.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, n)| n).sum()
    }
}

/// A shared counter; clone the interceptor it hands out into each client's configuration.
#[derive(Debug, Default, Clone)]
pub struct Meter {
    counts: Arc<Mutex<MeterCounts>>,
}

impl Meter {
    pub fn new() -> Meter {
        Meter::default()
    }

    pub fn counts(&self) -> MeterCounts {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = MeterCounts::default();
    }

    pub fn interceptor(&self) -> MeterInterceptor {
        MeterInterceptor { meter: self.clone() }
    }

    fn add(&self, op: String, read: f64, write: f64) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.requests.entry(op).or_default() += 1;
        c.read_units += read;
        c.write_units += write;
    }

    fn add_units(&self, read: f64) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).read_units += read;
    }

    /// SDK clients for `sdk` whose every request is counted here.
    pub fn clients(&self, sdk: &aws_config::SdkConfig) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
        let ddb = aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(self.interceptor()).build();
        let sqs = aws_sdk_sqs::config::Builder::from(sdk).interceptor(self.interceptor()).build();
        (aws_sdk_dynamodb::Client::from_conf(ddb), aws_sdk_sqs::Client::from_conf(sqs))
    }

    /// An EventBridge Scheduler client for `sdk` whose every request is counted here.
    pub fn scheduler_client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_scheduler::Client {
        let conf = aws_sdk_scheduler::config::Builder::from(sdk).interceptor(self.interceptor()).build();
        aws_sdk_scheduler::Client::from_conf(conf)
    }
}

#[derive(Debug, Clone)]
pub struct MeterInterceptor {
    meter: Meter,
}

/// What the request side learnt that the answer's read units depend on.
#[derive(Debug, Clone)]
struct ReadPricing {
    op: String,
    /// Units per 4 KiB: 1 strongly consistent, 0.5 eventually; doubled in transactions.
    per_block: f64,
}

impl Storable for ReadPricing {
    type Storer = StoreReplace<Self>;
}

impl Intercept for MeterInterceptor {
    fn name(&self) -> &'static str {
        "HeraldMeter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        // REST services (EventBridge Scheduler) name the operation only in the SDK's metadata.
        let metadata = cfg.load::<Metadata>();
        let (service, op) = match (target.split_once('.'), metadata) {
            (Some((s, op)), _) if s.starts_with("DynamoDB") => ("dynamodb", op),
            (Some((s, op)), _) if s.starts_with("AmazonSQS") => ("sqs", op),
            (_, Some(m)) if m.service().eq_ignore_ascii_case("scheduler") => ("scheduler", m.name()),
            (Some((_, op)), _) => ("other", op),
            (None, _) => ("other", "unknown"),
        };
        let (service, op) = (service, op.to_string());
        let op = op.as_str();
        let body: Value = request.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
        let write = if service == "dynamodb" { write_units(op, &body) } else { 0.0 };
        self.meter.add(format!("{service}:{op}"), 0.0, write);
        if service == "dynamodb" {
            if let Some(per_block) = read_pricing(op, &body) {
                cfg.interceptor_state().store_put(ReadPricing { op: op.to_string(), per_block });
            }
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(pricing) = cfg.load::<ReadPricing>().cloned() else { return Ok(()) };
        let body: Value =
            context.response().body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
        self.meter.add_units(read_units(&pricing, &body));
        Ok(())
    }
}

const KIB: f64 = 1024.0;
const READ_BLOCK: f64 = 4096.0;

fn blocks(bytes: usize, block: f64) -> f64 {
    (bytes as f64 / block).ceil().max(1.0)
}

fn write_units(op: &str, body: &Value) -> f64 {
    let put = |item: &Value| blocks(item_size(item), KIB);
    match op {
        "PutItem" => put(&body["Item"]),
        "UpdateItem" | "DeleteItem" => 1.0,
        "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .flat_map(|requests| requests.as_array().into_iter().flatten())
            .map(|r| if r.get("PutRequest").is_some() { put(&r["PutRequest"]["Item"]) } else { 1.0 })
            .sum(),
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| 2.0 * if t.get("Put").is_some() { put(&t["Put"]["Item"]) } else { 1.0 })
            .sum(),
        _ => 0.0,
    }
}

fn read_pricing(op: &str, body: &Value) -> Option<f64> {
    let consistent = |v: &Value| if v["ConsistentRead"].as_bool() == Some(true) { 1.0 } else { 0.5 };
    match op {
        "GetItem" | "Query" | "Scan" => Some(consistent(body)),
        "BatchGetItem" => {
            // Herald asks one table per call; take its setting.
            body["RequestItems"].as_object().and_then(|t| t.values().next()).map(consistent).or(Some(0.5))
        }
        "TransactGetItems" => Some(2.0),
        _ => None,
    }
}

fn read_units(pricing: &ReadPricing, answer: &Value) -> f64 {
    let each = |items: &Value| -> f64 {
        items.as_array().into_iter().flatten().map(|i| blocks(item_size(i), READ_BLOCK) * pricing.per_block).sum()
    };
    match pricing.op.as_str() {
        "GetItem" => blocks(item_size(&answer["Item"]), READ_BLOCK) * pricing.per_block,
        "Query" | "Scan" => {
            let total: usize = answer["Items"].as_array().into_iter().flatten().map(item_size).sum();
            blocks(total, READ_BLOCK) * pricing.per_block
        }
        "BatchGetItem" => answer["Responses"].as_object().into_iter().flat_map(|t| t.values()).map(each).sum(),
        "TransactGetItems" => answer["Responses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| blocks(item_size(&r["Item"]), READ_BLOCK) * pricing.per_block)
            .sum(),
        _ => 0.0,
    }
}

/// An item's size by DynamoDB's rules: each attribute's name plus its value.
pub fn item_size(item: &Value) -> usize {
    item.as_object().map(|m| m.iter().map(|(name, v)| name.len() + value_size(v)).sum()).unwrap_or(0)
}

fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|m| m.iter().next()) else { return 0 };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        // Numbers: about one byte per two significant digits, plus one.
        "N" => inner.as_str().map_or(0, |n| n.trim_start_matches(['-', '0']).replace('.', "").len().div_ceil(2) + 1),
        // Binary arrives base64-encoded.
        "B" => inner.as_str().map_or(0, |b| b.len() / 4 * 3),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" => inner.as_array().into_iter().flatten().map(|s| s.as_str().map_or(0, str::len)).sum(),
        "M" => 3 + inner.as_object().map_or(0, |m| m.iter().map(|(n, v)| n.len() + value_size(v) + 1).sum()),
        "L" => 3 + inner.as_array().map_or(0, |l| l.iter().map(|v| value_size(v) + 1).sum()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_sizes_follow_dynamodbs_rules() {
        let item = json!({"pk": {"S": "T#a#ROW#r1"}, "ver": {"N": "12"}, "ok": {"BOOL": true}});
        assert_eq!(item_size(&item), 2 + 10 + 3 + 2 + 2 + 1);
    }

    #[test]
    fn writes_cost_a_unit_per_started_kib_and_double_in_transactions() {
        let small = json!({"Item": {"pk": {"S": "x"}}});
        assert_eq!(write_units("PutItem", &small), 1.0);
        let big = json!({"Item": {"doc": {"S": "x".repeat(1500)}}});
        assert_eq!(write_units("PutItem", &big), 2.0);
        let batch = json!({"RequestItems": {"t": [
            {"PutRequest": {"Item": {"pk": {"S": "a"}}}},
            {"PutRequest": {"Item": {"doc": {"S": "x".repeat(2100)}}}},
            {"DeleteRequest": {"Key": {"pk": {"S": "b"}}}}
        ]}});
        assert_eq!(write_units("BatchWriteItem", &batch), 1.0 + 3.0 + 1.0);
        let tx = json!({"TransactItems": [{"Put": {"Item": {"pk": {"S": "a"}}}}, {"Delete": {"Key": {}}}]});
        assert_eq!(write_units("TransactWriteItems", &tx), 4.0);
    }

    #[test]
    fn reads_cost_by_consistency_and_size() {
        let strong = ReadPricing {
            op: "GetItem".into(),
            per_block: read_pricing("GetItem", &json!({"ConsistentRead": true})).unwrap(),
        };
        assert_eq!(read_units(&strong, &json!({"Item": {"pk": {"S": "a"}}})), 1.0);
        assert_eq!(read_units(&strong, &json!({})), 1.0, "a miss still costs");
        let eventual = ReadPricing { op: "Query".into(), per_block: read_pricing("Query", &json!({})).unwrap() };
        let items: Vec<Value> = (0..3).map(|_| json!({"doc": {"S": "x".repeat(2000)}})).collect();
        assert_eq!(read_units(&eventual, &json!({"Items": items})), 1.0, "6 KB rounds to two 4 KB blocks at 0.5");
    }
}
