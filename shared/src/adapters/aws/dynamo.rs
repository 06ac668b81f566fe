//! Every store port on one DynamoDB table; `docs/dynamodb.md` lists each key and access pattern.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, PutRequest, Select, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::sdk_text;
use crate::domain::{
    ids::new_id, now, Campaign, Contact, ContactDraft, ContactKey, RecipientRow, RecountStep, SendRequest, Status,
    Template, TenantId,
};
use crate::ports::*;
use crate::retry::Policy;

mod dead_letters;
mod events;
mod imports;
mod listing;
mod segments;

type Item = HashMap<String, AttributeValue>;

/// `BatchWriteItem` takes 25 items, `BatchGetItem` 100 keys.
const WRITE_BATCH: usize = 25;
const GET_BATCH: usize = 100;
/// Re-sending unprocessed batch work: DynamoDB leaves items unprocessed when a partition is
/// throttled, so the waits may grow longer than a store call's.
const BATCH_RETRY: Policy = Policy {
    base: std::time::Duration::from_millis(25),
    cap: std::time::Duration::from_secs(2),
    tries: 10,
    deadline: std::time::Duration::from_secs(10),
};
/// Tries for optimistic-concurrency conflicts.
const OCC_TRIES: u32 = 8;
/// See [`DynamoStore::with_count_stall`].
const COUNT_STALL: Duration = Duration::from_secs(300);

pub struct DynamoStore {
    client: Client,
    table: String,
    /// Lines of an import chunk written at once.
    lines_at_once: usize,
    /// Row moves not yet added to the status counters.
    moves: counts::Moves,
    /// How long counters must stay still, with rows pending, before a recount is asked for.
    count_stall: Duration,
    /// The request listing's day markers this process has written.
    markers: listing::Markers,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn unavailable<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(sdk_text(&e))
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn doc<T: DeserializeOwned>(item: &Item) -> StoreResult<T> {
    let raw = text(item, "doc").ok_or_else(|| StoreError::Corrupt("item has no doc".into()))?;
    serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn with_doc<T: Serialize>(mut item: Item, value: &T) -> StoreResult<Item> {
    item.insert("doc".into(), s(serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))?));
    Ok(item)
}

fn tenant_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}
fn contact_pk(tenant: &str, id: &str) -> String {
    format!("T#{tenant}#CONTACT#{id}")
}
fn ckey_pk(tenant: &str, k: &ContactKey) -> String {
    format!("T#{tenant}#CKEY#{}", k.as_key())
}
fn request_pk(tenant: &str, id: &str) -> String {
    format!("T#{tenant}#REQ#{id}")
}
fn row_pk(tenant: &str, id: &str) -> String {
    format!("T#{tenant}#ROW#{id}")
}

/// Whether an SDK error is a failed condition (another writer moved first).
macro_rules! condition_failed {
    ($e:expr) => {
        matches!(&$e, aws_sdk_dynamodb::error::SdkError::ServiceError(se) if se.err().is_conditional_check_failed_exception())
    };
}

mod counts;

impl DynamoStore {
    pub fn new(client: Client, table: String) -> DynamoStore {
        DynamoStore {
            client,
            table,
            lines_at_once: 16,
            moves: Default::default(),
            count_stall: COUNT_STALL,
            markers: Default::default(),
        }
    }

    /// Asks for a recount once counters have stayed still this long with rows pending (five
    /// minutes unless set: far beyond the send function's 30 s, so every move a live process
    /// noted has been flushed).
    pub fn with_count_stall(mut self, stall: Duration) -> DynamoStore {
        self.count_stall = stall;
        self
    }

    /// Writes this many lines of an import chunk at once (16 unless set; at least 1).
    pub fn with_lines_at_once(mut self, n: usize) -> DynamoStore {
        self.lines_at_once = n.max(1);
        self
    }

    async fn get(&self, pk: String, sk: &str, consistent: bool) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    async fn put(&self, item: Item) -> StoreResult<()> {
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }

    /// Puts `item` if `condition` holds; `Ok(false)` when it does not.
    async fn put_if(&self, item: Item, condition: &str, values: Item) -> StoreResult<bool> {
        let mut req =
            self.client.put_item().table_name(&self.table).set_item(Some(item)).condition_expression(condition);
        if !values.is_empty() {
            req = req.set_expression_attribute_values(Some(values));
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed!(e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete(&self, pk: String, sk: &str) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Every item of a partition whose sort key starts with `prefix`.
    async fn query_prefix(&self, pk: String, prefix: &str) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":p", s(prefix))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// Writes items in groups of 25, re-sending `UnprocessedItems` with backoff until none are left.
    pub async fn batch_put(&self, items: Vec<Item>) -> StoreResult<()> {
        let puts = items
            .into_iter()
            .map(|i| {
                let put = PutRequest::builder().set_item(Some(i)).build().map_err(unavailable)?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.batch_write(puts).await
    }

    /// Sends puts and deletes in groups of 25, re-sending `UnprocessedItems` with backoff until
    /// none are left.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> StoreResult<()> {
        for chunk in requests.chunks(WRITE_BATCH) {
            let mut pending: Vec<WriteRequest> = chunk.to_vec();
            let mut attempts = BATCH_RETRY.attempts();
            while !pending.is_empty() {
                if !attempts.next().await {
                    return Err(StoreError::Unavailable(format!(
                        "DynamoDB left {} item(s) unprocessed after {} tries",
                        pending.len(),
                        attempts.tried()
                    )));
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(unavailable)?;
                pending = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Reads items by key in groups of 100, re-asking for `UnprocessedKeys`. Order is not kept.
    async fn batch_get(&self, keys: Vec<Item>, projection: Option<&str>) -> StoreResult<Vec<Item>> {
        self.batch_get_with(keys, projection, false).await
    }

    /// [`Self::batch_get`], strongly consistent when `consistent` (twice the read units).
    async fn batch_get_with(
        &self,
        keys: Vec<Item>,
        projection: Option<&str>,
        consistent: bool,
    ) -> StoreResult<Vec<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(GET_BATCH) {
            let mut pending = Some(chunk.to_vec());
            let mut attempts = BATCH_RETRY.attempts();
            while let Some(keys) = pending.take().filter(|k| !k.is_empty()) {
                if !attempts.next().await {
                    return Err(StoreError::Unavailable("DynamoDB left keys unprocessed".into()));
                }
                let mut ka = KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(consistent);
                if let Some(p) = projection {
                    ka = ka.projection_expression(p).expression_attribute_names("#st", "status");
                }
                let out_page = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka.build().map_err(unavailable)?)
                    .send()
                    .await
                    .map_err(unavailable)?;
                out.extend(out_page.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default());
                pending = out_page.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys);
            }
        }
        Ok(out)
    }

    /// Counts the items of partition `pk`: `Select=COUNT` queries, paged by DynamoDB's 1 MB read
    /// limit.
    async fn count_partition(&self, pk: String, consistent: bool) -> StoreResult<u64> {
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .select(Select::Count)
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            count += page.count.max(0) as u64;
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(count),
            }
        }
    }

    async fn read_row(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<(RecipientRow, i64)>> {
        let Some(item) = self.get(row_pk(tenant, id), "ROW", true).await? else { return Ok(None) };
        Ok(Some((doc(&item)?, number(&item, "ver").unwrap_or(0))))
    }

    fn row_item(row: &RecipientRow, ver: i64) -> StoreResult<Item> {
        let mut item = key(row_pk(&row.tenant_id, &row.id), "ROW");
        item.insert("status".into(), s(row.status.as_str()));
        item.insert("ver".into(), n(ver));
        with_doc(item, row)
    }

    /// Read, change, write back if nobody wrote in between; `f` answers what to return and
    /// whether to write. Retries from the read on a conflict.
    async fn update_row<R>(
        &self,
        tenant: &TenantId,
        id: &str,
        f: impl FnMut(&mut RecipientRow) -> (R, bool),
        missing: R,
    ) -> StoreResult<R> {
        self.update_read_row(tenant, id, None, f, missing).await
    }

    /// [`Self::update_row`] starting from a row (and its version) the caller has just read.
    async fn update_read_row<R>(
        &self,
        tenant: &TenantId,
        id: &str,
        mut read: Option<(RecipientRow, i64)>,
        mut f: impl FnMut(&mut RecipientRow) -> (R, bool),
        missing: R,
    ) -> StoreResult<R> {
        for _ in 0..OCC_TRIES {
            let read = match read.take() {
                Some(r) => Some(r),
                None => self.read_row(tenant, id).await?,
            };
            let Some((mut row, ver)) = read else { return Ok(missing) };
            let before = row.status;
            let (answer, write) = f(&mut row);
            if !write {
                return Ok(answer);
            }
            let item = Self::row_item(&row, ver + 1)?;
            if self.put_if(item, "ver = :v", HashMap::from([(":v".to_string(), n(ver))])).await? {
                self.note_move(&row, Some(before));
                return Ok(answer);
            }
        }
        Err(StoreError::Unavailable(format!("row {id} kept changing under {OCC_TRIES} tries")))
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TransactError> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let canceled = matches!(&e, aws_sdk_dynamodb::error::SdkError::ServiceError(se) if se.err().is_transaction_canceled_exception());
                if canceled {
                    Err(TransactError::Canceled)
                } else {
                    Err(TransactError::Store(unavailable(e)))
                }
            }
        }
    }

    fn contact_put(&self, tenant: &str, c: &Contact, only_new: bool) -> StoreResult<TransactWriteItem> {
        let item = with_doc(key(contact_pk(tenant, &c.id), "CONTACT"), c)?;
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        if only_new {
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        Ok(TransactWriteItem::builder().put(put.build().map_err(unavailable)?).build())
    }

    fn key_put(&self, tenant: &str, k: &ContactKey, contact_id: &str) -> StoreResult<TransactWriteItem> {
        let mut item = key(ckey_pk(tenant, k), "CKEY");
        item.insert("contact_id".into(), s(contact_id));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR contact_id = :me")
            .expression_attribute_values(":me", s(contact_id))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The contact holding the first of `keys` that any contact holds.
    async fn find_by_any_key(&self, tenant: &TenantId, keys: &[ContactKey]) -> StoreResult<Option<Contact>> {
        for k in keys {
            if let Some(c) = self.find_contact(tenant, k).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    async fn owner(&self, tenant: &TenantId, k: &ContactKey) -> StoreResult<Option<String>> {
        Ok(self.get(ckey_pk(tenant, k), "CKEY", true).await?.and_then(|i| text(&i, "contact_id")))
    }

    /// Writes a contact and its keys atomically; names a key another contact holds.
    async fn write_contact(&self, tenant: &TenantId, c: &Contact, only_new: bool) -> Result<bool, ContactWriteError> {
        let old: Vec<ContactKey> = if only_new {
            vec![]
        } else {
            self.get(contact_pk(tenant, &c.id), "CONTACT", true)
                .await?
                .map(|i| doc::<Contact>(&i))
                .transpose()?
                .map(|c| c.keys())
                .unwrap_or_default()
        };
        let new = c.keys();
        let mut items = vec![self.contact_put(tenant, c, only_new)?];
        for k in &new {
            items.push(self.key_put(tenant, k, &c.id)?);
        }
        for k in old.iter().filter(|k| !new.contains(k)) {
            let del = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(ckey_pk(tenant, k), "CKEY")))
                .condition_expression("contact_id = :me")
                .expression_attribute_values(":me", s(&c.id))
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().delete(del).build());
        }
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TransactError::Store(e)) => Err(e.into()),
            Err(TransactError::Canceled) => {
                for k in &new {
                    if let Some(other) = self.owner(tenant, k).await?.filter(|o| *o != c.id) {
                        return Err(ContactWriteError::KeyTaken { field: k.field(), other });
                    }
                }
                Ok(false)
            }
        }
    }
}

enum TransactError {
    Canceled,
    Store(StoreError),
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

// ---------------------------------------------------------------- keys

#[async_trait]
impl ApiKeys for DynamoStore {
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let mut item = key("TENANTS", format!("TENANT#{tenant}"));
        item.insert("created_at".into(), n(millis(now())));
        self.put_if(item, "attribute_not_exists(pk)", HashMap::new()).await
    }

    async fn count_tenants(&self) -> StoreResult<u64> {
        self.count_partition("TENANTS".into(), false).await
    }

    async fn get_settings(&self, tenant: &TenantId) -> StoreResult<TenantSettings> {
        Ok(self.get_entry(tenant, "SETTINGS").await?.unwrap_or_default())
    }

    async fn put_settings(&self, tenant: &TenantId, settings: &TenantSettings) -> StoreResult<()> {
        self.put_entry(tenant, "SETTINGS".into(), settings).await
    }

    async fn insert_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        let attrs = |mut item: Item| {
            item.insert("hash".into(), AttributeValue::B(k.hash.to_vec().into()));
            item.insert("lookup".into(), s(&k.lookup));
            item.insert("prefix".into(), s(&k.display_prefix));
            item.insert("tenant".into(), s(&k.tenant_id));
            item.insert("created_at".into(), n(millis(k.created_at)));
            if let Some(r) = k.revoked_at {
                item.insert("revoked_at".into(), n(millis(r)));
            }
            item
        };
        let by_hash = attrs(key(format!("KEY#{}", k.lookup), "KEY"));
        let by_tenant = attrs(key(tenant_pk(&k.tenant_id), format!("KEY#{}", k.lookup)));
        let puts = [by_hash, by_tenant]
            .into_iter()
            .map(|item| {
                let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().map_err(unavailable)?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect::<StoreResult<Vec<_>>>()?;
        match self.transact(puts).await {
            Ok(()) => Ok(()),
            Err(TransactError::Store(e)) => Err(e),
            Err(TransactError::Canceled) => Err(StoreError::Unavailable("storing the key was cancelled".into())),
        }
    }

    async fn find_key(&self, lookup: &str) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self.get(format!("KEY#{lookup}"), "KEY", false).await?.map(|i| key_record(&i)).transpose()?)
    }

    async fn revoke_key(&self, tenant: &TenantId, lookup: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        // Both copies of the key (by hash, by tenant) say revoked, or neither does.
        let update = |pk: String, sk: String| -> StoreResult<TransactWriteItem> {
            let u = aws_sdk_dynamodb::types::Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk, sk)))
                .update_expression("SET revoked_at = :at")
                .condition_expression("tenant = :t AND attribute_not_exists(revoked_at)")
                .expression_attribute_values(":at", n(millis(at)))
                .expression_attribute_values(":t", s(tenant))
                .build()
                .map_err(unavailable)?;
            Ok(TransactWriteItem::builder().update(u).build())
        };
        let items =
            vec![update(format!("KEY#{lookup}"), "KEY".into())?, update(tenant_pk(tenant), format!("KEY#{lookup}"))?];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TransactError::Canceled) => Ok(false),
            Err(TransactError::Store(e)) => Err(e),
        }
    }

    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyRecord>> {
        let items = self.query_prefix(tenant_pk(tenant), "KEY#").await?;
        let mut keys = items.iter().map(key_record).collect::<StoreResult<Vec<_>>>()?;
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }
}

fn key_record(item: &Item) -> StoreResult<ApiKeyRecord> {
    let at = |name| number(item, name).and_then(DateTime::from_timestamp_millis);
    let hash = item
        .get("hash")
        .and_then(|v| v.as_b().ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_ref()).ok())
        .ok_or_else(|| StoreError::Corrupt("key item has no 32-byte hash".into()))?;
    Ok(ApiKeyRecord {
        lookup: text(item, "lookup").unwrap_or_default(),
        hash,
        display_prefix: text(item, "prefix").unwrap_or_default(),
        tenant_id: text(item, "tenant")
            .map(TenantId::new)
            .ok_or_else(|| StoreError::Corrupt("key item has no tenant".into()))?,
        created_at: at("created_at").unwrap_or_default(),
        revoked_at: at("revoked_at"),
    })
}

// ---------------------------------------------------------------- catalog

impl DynamoStore {
    async fn put_entry<T: Serialize>(&self, tenant: &TenantId, sk: String, value: &T) -> StoreResult<()> {
        self.put(with_doc(key(tenant_pk(tenant), sk), value)?).await
    }

    async fn get_entry<T: DeserializeOwned>(&self, tenant: &TenantId, sk: &str) -> StoreResult<Option<T>> {
        self.get(tenant_pk(tenant), sk, true).await?.map(|i| doc(&i)).transpose()
    }

    async fn list_entries<T: DeserializeOwned>(&self, tenant: &TenantId, prefix: &str) -> StoreResult<Vec<T>> {
        self.query_prefix(tenant_pk(tenant), prefix).await?.iter().map(doc).collect()
    }
}

#[async_trait]
impl Catalog for DynamoStore {
    async fn put_template(&self, tenant: &TenantId, t: &Template) -> StoreResult<()> {
        self.put_entry(tenant, format!("TEMPLATE#{}", t.id), t).await
    }
    async fn get_template(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Template>> {
        self.get_entry(tenant, &format!("TEMPLATE#{id}")).await
    }
    async fn delete_template(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        self.delete(tenant_pk(tenant), &format!("TEMPLATE#{id}")).await
    }
    async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<Template>> {
        self.list_entries(tenant, "TEMPLATE#").await
    }
    async fn put_campaign(&self, tenant: &TenantId, c: &Campaign) -> StoreResult<()> {
        self.put_entry(tenant, format!("CAMPAIGN#{}", c.id), c).await
    }
    async fn create_campaign(&self, tenant: &TenantId, c: &Campaign) -> StoreResult<bool> {
        let item = with_doc(key(tenant_pk(tenant), format!("CAMPAIGN#{}", c.id)), c)?;
        self.put_if(item, "attribute_not_exists(pk)", Item::new()).await
    }
    async fn get_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Campaign>> {
        self.get_entry(tenant, &format!("CAMPAIGN#{id}")).await
    }
    async fn delete_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        self.delete(tenant_pk(tenant), &format!("CAMPAIGN#{id}")).await
    }
    async fn list_campaigns(&self, tenant: &TenantId) -> StoreResult<Vec<Campaign>> {
        self.list_entries(tenant, "CAMPAIGN#").await
    }
}

// ---------------------------------------------------------------- contacts

#[async_trait]
impl Contacts for DynamoStore {
    async fn get_contact(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Contact>> {
        self.get(contact_pk(tenant, id), "CONTACT", true).await?.map(|i| doc(&i)).transpose()
    }

    async fn find_contact(&self, tenant: &TenantId, k: &ContactKey) -> StoreResult<Option<Contact>> {
        match self.owner(tenant, k).await? {
            Some(id) => self.get_contact(tenant, &id).await,
            None => Ok(None),
        }
    }

    async fn put_contact(&self, tenant: &TenantId, c: &Contact) -> Result<(), ContactWriteError> {
        for _ in 0..OCC_TRIES {
            if self.write_contact(tenant, c, false).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!("contact {} kept changing", c.id)).into())
    }

    async fn upsert_contact(
        &self,
        tenant: &TenantId,
        d: &ContactDraft,
        merge: bool,
    ) -> Result<(Contact, bool), ContactWriteError> {
        let keys = d.keys();
        for _ in 0..OCC_TRIES {
            match self.find_by_any_key(tenant, &keys).await? {
                Some(existing) if !merge => return Ok((existing, false)),
                Some(mut existing) => {
                    existing.apply(d);
                    if self.write_contact(tenant, &existing, false).await? {
                        return Ok((existing, false));
                    }
                }
                None => {
                    let mut c = Contact::new(new_id("ct"));
                    c.apply(d);
                    // Only-new writes: a racing creator makes this one cancel, and the next
                    // round finds the winner.
                    match self.write_contact(tenant, &c, true).await {
                        Ok(true) => return Ok((c, true)),
                        Ok(false) | Err(ContactWriteError::KeyTaken { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(StoreError::Unavailable("contact lookup kept racing".into()).into())
    }
}

// ---------------------------------------------------------------- requests and rows

#[async_trait]
impl RowCounters for DynamoStore {
    async fn flush_counts(&self) -> StoreResult<()> {
        self.flush_moves().await
    }
}

#[async_trait]
impl RequestLog for DynamoStore {
    async fn insert_request(&self, request: &SendRequest, rows: &[RecipientRow]) -> StoreResult<()> {
        // Rows first: a request item is only ever visible with all its rows behind it.
        let items = rows.iter().map(|r| Self::row_item(r, 0)).collect::<StoreResult<Vec<_>>>()?;
        self.batch_put(items).await?;
        self.put_count_base(&request.tenant_id, &request.id, rows, request.audience.is_some()).await?;
        // Listed before it is stored: a listing skips an index item whose request is missing.
        self.put_listing(request).await?;
        self.put(with_doc(key(request_pk(&request.tenant_id, &request.id), "REQ"), request)?).await
    }

    async fn get_request(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<SendRequest>> {
        self.get(request_pk(tenant, id), "REQ", false).await?.map(|i| doc(&i)).transpose()
    }

    async fn list_rows(
        &self,
        tenant: &TenantId,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<RecipientRow>> {
        let Some(req) = self.get_request(tenant, request_id).await? else { return Ok(vec![]) };
        let from = after.map(|a| a + 1).unwrap_or(0);
        let ids: Vec<String> = if req.audience.is_some() {
            self.fanned_out_ids(tenant, request_id, from, limit).await?
        } else {
            let to = from.saturating_add(limit).min(req.row_count);
            (from..to).map(|seq| RecipientRow::id_for(request_id, seq)).collect()
        };
        let keys = ids.iter().map(|id| key(row_pk(tenant, id), "ROW")).collect();
        let mut rows =
            self.batch_get(keys, None).await?.iter().map(doc::<RecipientRow>).collect::<StoreResult<Vec<_>>>()?;
        rows.sort_by_key(|r| r.seq);
        rows.retain(|r| r.seq >= from);
        rows.truncate(limit as usize);
        Ok(rows)
    }

    async fn count_rows(&self, tenant: &TenantId, request_id: &str) -> StoreResult<RowCounts> {
        if let Some(counts) = self.counted_rows(tenant, request_id).await? {
            return Ok(counts);
        }
        // A request stored before counters were kept: its rows, read.
        let Some(req) = self.get_request(tenant, request_id).await? else { return Ok(RowCounts::default()) };
        let ids: Vec<String> = if req.audience.is_some() {
            self.fanned_out_ids(tenant, request_id, 0, u32::MAX).await?
        } else {
            (0..req.row_count).map(|seq| RecipientRow::id_for(request_id, seq)).collect()
        };
        let keys = ids.iter().map(|id| key(row_pk(tenant, id), "ROW")).collect();
        let by_status = counts::tally(self.batch_get(keys, Some("#st")).await?.iter())?;
        Ok(RowCounts { by_status, stalled: false })
    }

    async fn recount(
        &self,
        tenant: &TenantId,
        request_id: &str,
        step: Option<RecountStep>,
    ) -> StoreResult<Option<RecountStep>> {
        self.recount_step(tenant, request_id, step).await
    }

    async fn add_rows(&self, tenant: &TenantId, request_id: &str, rows: &[RecipientRow]) -> StoreResult<Vec<String>> {
        if self.progress(tenant, request_id).await?.canceled_at.is_some() {
            return Ok(Vec::new());
        }
        // The page index first: a row exists only once its page lists it.
        let mut pages: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for r in rows {
            pages.entry(r.seq / INDEX_BAND).or_default().push(r.id.clone());
        }
        for (page, ids) in pages {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(pages_pk(tenant, request_id), format!("P#{page:010}"))))
                .update_expression("ADD #ids :ids")
                .expression_attribute_names("#ids", "ids")
                .expression_attribute_values(":ids", AttributeValue::Ss(ids))
                .send()
                .await
                .map_err(unavailable)?;
        }
        // Each row only if absent: a page expanded again must never reset a row already sent.
        let queued = futures::stream::iter(rows.iter().cloned().map(|r| self.put_new_row(tenant, r)))
            .buffer_unordered(ROW_PUTS_AT_ONCE)
            .collect::<Vec<StoreResult<Option<String>>>>()
            .await;
        queued.into_iter().filter_map(Result::transpose).collect()
    }

    async fn finish_fan_out(&self, tenant: &TenantId, request_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(request_pk(tenant, request_id), "PROGRESS")))
            .update_expression("SET fanned_out_at = if_not_exists(fanned_out_at, :t)")
            .expression_attribute_values(":t", n(millis(at)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn fail_fan_out(
        &self,
        tenant: &TenantId,
        request_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(request_pk(tenant, request_id), "PROGRESS")))
            .update_expression("SET fanned_out_at = :t, fan_out_error = :e")
            // A fan-out already over keeps its time and reason.
            .condition_expression("attribute_not_exists(fanned_out_at)")
            .expression_attribute_values(":t", n(millis(at)))
            .expression_attribute_values(":e", s(reason))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if condition_failed!(e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn cancel_request(
        &self,
        tenant: &TenantId,
        request_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(request_pk(tenant, request_id), "PROGRESS")))
            .update_expression("SET canceled_at = if_not_exists(canceled_at, :t)")
            .expression_attribute_values(":t", n(millis(at)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(unavailable)?;
        let first =
            out.attributes.as_ref().and_then(|a| number(a, "canceled_at")).and_then(DateTime::from_timestamp_millis);
        Ok(first.unwrap_or(at))
    }

    async fn progress(&self, tenant: &TenantId, request_id: &str) -> StoreResult<Progress> {
        let Some(item) = self.get(request_pk(tenant, request_id), "PROGRESS", true).await? else {
            return Ok(Progress::default());
        };
        let at = |name| number(&item, name).and_then(DateTime::from_timestamp_millis);
        Ok(Progress {
            fanned_out_at: at("fanned_out_at"),
            canceled_at: at("canceled_at"),
            fan_out_error: text(&item, "fan_out_error"),
        })
    }

    async fn list_requests(
        &self,
        tenant: &TenantId,
        source: Option<&str>,
        cursor: Option<&RequestCursor>,
        limit: u32,
    ) -> StoreResult<RequestPage> {
        self.newest_requests(tenant, source, cursor, limit).await
    }
}

/// Rows put at once by one fan-out page (each a conditional `PutItem`).
const ROW_PUTS_AT_ONCE: usize = 32;
/// `seq`s per row index item: 1,000 row ids stay far under DynamoDB's 400 KB item limit.
const INDEX_BAND: u32 = 1_000;

fn pages_pk(tenant: &str, request_id: &str) -> String {
    format!("T#{tenant}#REQ#{request_id}#PAGES")
}

impl DynamoStore {
    /// Puts a fan-out row unless one has its id; its id if it is waiting (`queued`, `scheduled`) afterwards.
    async fn put_new_row(&self, tenant: &TenantId, row: RecipientRow) -> StoreResult<Option<String>> {
        if self.put_if(Self::row_item(&row, 0)?, "attribute_not_exists(pk)", HashMap::new()).await? {
            self.note_move(&row, None);
            return Ok(Some(row.id));
        }
        let stored = self.read_row(tenant, &row.id).await?;
        Ok(stored.filter(|(row, _)| row.status.is_waiting()).map(|(row, _)| row.id))
    }

    /// Up to `limit` ids of an audience request's rows from `seq` `from` on, as its fan-out page
    /// items list them (rows of earlier seqs in the first page are dropped by the caller).
    async fn fanned_out_ids(
        &self,
        tenant: &TenantId,
        request_id: &str,
        from: u32,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let first = format!("P#{:010}", from / INDEX_BAND);
        let mut ids = Vec::new();
        // A contact in two of the audience's segments is listed in two bands: one row.
        let mut seen = std::collections::HashSet::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk >= :first")
                .expression_attribute_values(":pk", s(pages_pk(tenant, request_id)))
                .expression_attribute_values(":first", s(&first))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items.unwrap_or_default() {
                if let Some(AttributeValue::Ss(page)) = item.get("ids") {
                    ids.extend(page.iter().filter(|id| seen.insert(id.to_string())).cloned());
                }
                // A band holds at most `INDEX_BAND` rows: enough bands for `limit` rows past `from`.
                if ids.len() as u64 >= u64::from(limit) + u64::from(INDEX_BAND) {
                    return Ok(ids);
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(ids),
            }
        }
    }
}

#[async_trait]
impl RowLeases for DynamoStore {
    async fn claim_row(
        &self,
        tenant: &TenantId,
        row_id: &str,
        at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        let Some(read) = self.read_row(tenant, row_id).await? else { return Ok(Claim::Missing) };
        // Read strongly before the claim: once a cancel has been answered, no claim goes through.
        let canceled = self.progress(tenant, &read.0.request_id).await?.canceled_at.is_some();
        self.update_read_row(
            tenant,
            row_id,
            Some(read),
            |row| {
                if canceled && !matches!(row.status, Status::Sending) {
                    let write = row.cancel(at);
                    return (Claim::Done(row.clone()), write);
                }
                let c = row.claim(at, lease_until);
                let write = c.took_lease();
                (c, write)
            },
            Claim::Missing,
        )
        .await
    }

    async fn finish_row(&self, tenant: &TenantId, row_id: &str, attempt: u32, outcome: Outcome) -> StoreResult<bool> {
        let pointer = match (&outcome.provider, &outcome.external_message_id) {
            // The sandbox sends no callbacks; every other provider's may name only its own id.
            (Some(p), Some(ext)) if p != "sandbox" => Some((p.clone(), ext.clone())),
            _ => None,
        };
        let done = self
            .update_row(
                tenant,
                row_id,
                |row| {
                    let ok = row.finish(attempt, outcome.clone(), now());
                    (ok, ok)
                },
                false,
            )
            .await?;
        if let (true, Some((provider, ext))) = (done, pointer) {
            let mut item = key(format!("EXT#{provider}#{ext}"), "EXT");
            item.insert("tenant".into(), s(tenant));
            item.insert("row_id".into(), s(row_id));
            self.put(item).await?;
        }
        Ok(done)
    }

    async fn advance_row(
        &self,
        tenant: &TenantId,
        row_id: &str,
        status: Status,
        at: DateTime<Utc>,
        error: Option<String>,
    ) -> StoreResult<bool> {
        self.update_row(
            tenant,
            row_id,
            |row| {
                let ok = row.advance(status, at, error.clone());
                (ok, ok)
            },
            false,
        )
        .await
    }

    async fn fail_pending(&self, tenant: &TenantId, row_id: &str, message: &str) -> StoreResult<bool> {
        self.update_row(
            tenant,
            row_id,
            |row| {
                let ok = row.fail_pending(message, now());
                (ok, ok)
            },
            false,
        )
        .await
    }
}

#[async_trait]
impl StatusLookup for DynamoStore {
    async fn get_row(&self, tenant: &TenantId, row_id: &str) -> StoreResult<Option<RecipientRow>> {
        Ok(self.read_row(tenant, row_id).await?.map(|(r, _)| r))
    }

    async fn find_by_external_id(&self, provider: &str, external_id: &str) -> StoreResult<Option<(TenantId, String)>> {
        let item = self.get(format!("EXT#{provider}#{external_id}"), "EXT", true).await?;
        Ok(item.and_then(|i| Some((TenantId::new(text(&i, "tenant")?), text(&i, "row_id")?))))
    }
}

// ---------------------------------------------------------------- idempotency

#[async_trait]
impl Idempotency for DynamoStore {
    async fn begin(
        &self,
        tenant: &TenantId,
        k: &str,
        fingerprint: &str,
        at: DateTime<Utc>,
        lock: Duration,
    ) -> StoreResult<Begin> {
        let pk = format!("T#{tenant}#IDEM#{k}");
        let t = millis(at);
        for _ in 0..OCC_TRIES {
            let existing = self.get(pk.clone(), "IDEM", true).await?;
            let condition = match &existing {
                None => ("attribute_not_exists(pk)".to_string(), HashMap::new()),
                Some(item) => {
                    let done = item.get("done").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
                    let expires_ms = number(item, "expires_at").unwrap_or(0) * 1000;
                    let locked_at = number(item, "locked_at").unwrap_or(0);
                    let same = text(item, "fp").as_deref() == Some(fingerprint);
                    let expired = done && expires_ms < t;
                    let stale = !done && locked_at + lock.as_millis() as i64 <= t;
                    if !expired {
                        if !same {
                            return Ok(Begin::Mismatch);
                        }
                        if done {
                            return Ok(Begin::Replay(StoredResponse {
                                status: number(item, "status").unwrap_or(200) as u16,
                                body: text(item, "body").unwrap_or_default(),
                            }));
                        }
                        if !stale {
                            return Ok(Begin::InProgress);
                        }
                    }
                    // Take over only the record we read: its lock time has not moved since.
                    match item.get("locked_at") {
                        Some(seen) => {
                            ("locked_at = :seen".to_string(), HashMap::from([(":seen".to_string(), seen.clone())]))
                        }
                        None => ("attribute_not_exists(locked_at)".to_string(), HashMap::new()),
                    }
                }
            };
            let mut item = key(pk.clone(), "IDEM");
            item.insert("fp".into(), s(fingerprint));
            item.insert("done".into(), AttributeValue::Bool(false));
            item.insert("locked_at".into(), n(t));
            // TTL is in epoch seconds; an abandoned lock disappears on its own a day later.
            item.insert("expires_at".into(), n(t / 1000 + 24 * 3600));
            if self.put_if(item, &condition.0, condition.1).await? {
                return Ok(Begin::New);
            }
        }
        Ok(Begin::InProgress)
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        k: &str,
        resp: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("T#{tenant}#IDEM#{k}"), "IDEM")))
            .update_expression("SET done = :t, #st = :s, body = :b, expires_at = :e")
            // Completes a key that `begin` recorded; never creates one.
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":s", n(resp.status))
            .expression_attribute_values(":b", s(&resp.body))
            .expression_attribute_values(":e", n(expires_at.timestamp()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if condition_failed!(e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn abandon(&self, tenant: &TenantId, k: &str) -> StoreResult<()> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("T#{tenant}#IDEM#{k}"), "IDEM")))
            .condition_expression("done = :f")
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if condition_failed!(e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

// ---------------------------------------------------------------- tenant webhook endpoints

#[async_trait]
impl WebhookEndpoints for DynamoStore {
    async fn get_webhook(&self, tenant: &TenantId) -> StoreResult<Option<WebhookEndpoint>> {
        self.get_entry(tenant, "WEBHOOK").await
    }
    async fn put_webhook(&self, tenant: &TenantId, e: &WebhookEndpoint) -> StoreResult<()> {
        self.put_entry(tenant, "WEBHOOK".into(), e).await
    }
    async fn delete_webhook(&self, tenant: &TenantId) -> StoreResult<bool> {
        self.delete(tenant_pk(tenant), "WEBHOOK").await
    }
}

// ---------------------------------------------------------------- outbox

#[async_trait]
impl Outbox for DynamoStore {
    async fn record(&self, e: &OutboxEntry) -> StoreResult<()> {
        let mut item = with_doc(key(format!("T#{}#OUTBOX", e.tenant_id), &e.id), e)?;
        item.insert("request_id".into(), s(&e.request_id));
        self.put(item).await?;
        let mut pointer = key(format!("T#{}#OUTROW#{}", e.tenant_id, e.row_id), "OUTROW");
        pointer.insert("entry_id".into(), s(&e.id));
        // The first record of a row is the one `find_by_row` answers.
        self.put_if(pointer, "attribute_not_exists(pk)", HashMap::new()).await?;
        Ok(())
    }

    async fn find_by_row(&self, tenant: &TenantId, row_id: &str) -> StoreResult<Option<OutboxEntry>> {
        let Some(p) = self.get(format!("T#{tenant}#OUTROW#{row_id}"), "OUTROW", true).await? else { return Ok(None) };
        let Some(id) = text(&p, "entry_id") else { return Ok(None) };
        self.get(format!("T#{tenant}#OUTBOX"), &id, true).await?.map(|i| doc(&i)).transpose()
    }

    async fn list_outbox(
        &self,
        tenant: &TenantId,
        request_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(format!("T#{tenant}#OUTBOX")))
                .set_exclusive_start_key(start.take());
            q = match after {
                Some(a) => {
                    q.key_condition_expression("pk = :pk AND sk > :after").expression_attribute_values(":after", s(a))
                }
                None => q.key_condition_expression("pk = :pk"),
            };
            if let Some(r) = request_id {
                q = q.filter_expression("request_id = :r").expression_attribute_values(":r", s(r));
            }
            let page = q.send().await.map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                out.push(doc(&item)?);
                if out.len() as u32 == limit {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}
