//! Dead-lettered jobs on the table (`docs/dynamodb.md`, "Dead letters"): the send function
//! records each job SQS moves to the dead-letter queue here, tenant-keyed, so a tenant can list
//! and redrive its own. A list item per dead letter, ordered by when it died, and a pointer by
//! message id that a redrive finds it with; the two are written and removed together.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::{doc, key, s, text, unavailable, with_doc, DynamoStore, TransactError};
use crate::domain::{Job, TenantId};
use crate::ports::{DeadLetter, DeadLetterCursor, DeadLetterPage, DeadLetters, StoreError, StoreResult};

/// A tenant's dead letters, oldest first: one partition, read a page at a time.
fn list_pk(tenant: &str) -> String {
    format!("T#{tenant}#DEAD")
}

/// `{dead_at ms, 13 digits}#{message id}`: sorts as the list does in every store.
fn list_sk(dead_ms: i64, id: &str) -> String {
    format!("{dead_ms:013}#{id}")
}

fn pointer_pk(tenant: &str, id: &str) -> String {
    format!("T#{tenant}#DEADID#{id}")
}

const POINTER_SK: &str = "DEAD";

/// What the list item's `doc` keeps; the id is its own attribute.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    job: Job,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    receive_count: u32,
    dead_at: DateTime<Utc>,
}

fn read(item: &super::Item) -> StoreResult<DeadLetter> {
    let stored: Stored = doc(item)?;
    let id = text(item, "id").ok_or_else(|| StoreError::Corrupt("dead letter without an id".into()))?;
    Ok(DeadLetter {
        id,
        job: stored.job,
        reason: stored.reason,
        receive_count: stored.receive_count,
        dead_at: stored.dead_at,
    })
}

impl DynamoStore {
    async fn dead_pointer(&self, tenant: &str, id: &str) -> StoreResult<Option<String>> {
        let pointer = self.get(pointer_pk(tenant, id), POINTER_SK, true).await?;
        Ok(pointer.and_then(|p| text(&p, "list_sk")))
    }

    fn dead_put(&self, item: super::Item, only_new: bool) -> StoreResult<TransactWriteItem> {
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        if only_new {
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        Ok(TransactWriteItem::builder().put(put.build().map_err(unavailable)?).build())
    }

    fn dead_delete(&self, pk: String, sk: &str, must_exist: bool) -> StoreResult<TransactWriteItem> {
        let mut del = Delete::builder().table_name(&self.table).set_key(Some(key(pk, sk)));
        if must_exist {
            del = del.condition_expression("attribute_exists(pk)");
        }
        Ok(TransactWriteItem::builder().delete(del.build().map_err(unavailable)?).build())
    }
}

#[async_trait]
impl DeadLetters for DynamoStore {
    async fn put_dead_letter(&self, dead: &DeadLetter) -> StoreResult<()> {
        let tenant = dead.job.tenant_id.as_str();
        let sk = list_sk(dead.dead_at.timestamp_millis(), &dead.id);
        let stored = Stored {
            job: dead.job.clone(),
            reason: dead.reason.clone(),
            receive_count: dead.receive_count,
            dead_at: dead.dead_at,
        };
        let mut item = with_doc(key(list_pk(tenant), sk.clone()), &stored)?;
        item.insert("id".into(), s(&dead.id));
        let mut pointer = key(pointer_pk(tenant, &dead.id), POINTER_SK);
        pointer.insert("list_sk".into(), s(&sk));
        let writes = vec![self.dead_put(pointer, true)?, self.dead_put(item, false)?];
        match self.transact(writes).await {
            Ok(()) => Ok(()),
            Err(TransactError::Store(e)) => Err(e),
            // SQS hands a message over at least once: one kept already stays as it was.
            Err(TransactError::Canceled) if self.dead_pointer(tenant, &dead.id).await?.is_some() => Ok(()),
            Err(TransactError::Canceled) => Err(StoreError::Unavailable("keeping a dead letter was cancelled".into())),
        }
    }

    async fn list_dead_letters(
        &self,
        tenant: &TenantId,
        cursor: Option<&DeadLetterCursor>,
        limit: u32,
    ) -> StoreResult<DeadLetterPage> {
        // One more than the page, to know whether the list goes on.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(list_pk(tenant)))
            .limit(limit.saturating_add(1).min(1_000) as i32);
        // A key condition takes no empty string: the first page has none on `sk`.
        if let Some(c) = cursor {
            query = query
                .key_condition_expression("pk = :pk AND sk > :after")
                .expression_attribute_values(":after", s(list_sk(c.dead_ms, &c.id)));
        }
        let out = query.send().await.map_err(unavailable)?;
        let mut items = out.items.unwrap_or_default();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let dead_letters = items.iter().map(read).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = dead_letters.last().filter(|_| more).map(DeadLetterCursor::after);
        Ok(DeadLetterPage { dead_letters, next_cursor })
    }

    async fn take_dead_letter(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<DeadLetter>> {
        let Some(sk) = self.dead_pointer(tenant, id).await? else { return Ok(None) };
        let Some(item) = self.get(list_pk(tenant), &sk, true).await? else { return Ok(None) };
        let dead = read(&item)?;
        let writes = vec![
            self.dead_delete(pointer_pk(tenant, id), POINTER_SK, true)?,
            self.dead_delete(list_pk(tenant), &sk, false)?,
        ];
        match self.transact(writes).await {
            Ok(()) => Ok(Some(dead)),
            Err(TransactError::Store(e)) => Err(e),
            // Another taker removed it first, or a write raced this one: say which.
            Err(TransactError::Canceled) if self.dead_pointer(tenant, id).await?.is_none() => Ok(None),
            Err(TransactError::Canceled) => Err(StoreError::Unavailable("taking a dead letter was cancelled".into())),
        }
    }
}
