//! Status event subscriptions, their dead letters and the completion marks on the table
//! (`docs/dynamodb.md`, "Status events"). The secret is kept in the subscription's document as
//! given, since Herald signs with it.

use async_trait::async_trait;
use std::collections::HashMap;

use super::{doc, key, n, number, request_pk, tenant_pk, unavailable, with_doc, DynamoStore, OCC_TRIES};
use crate::domain::events::{EventFailure, EventSubscription};
use crate::domain::TenantId;
use crate::ports::{EventStore, StoreError, StoreResult};

fn sub_sk(id: &str) -> String {
    format!("EVSUB#{id}")
}

/// A subscription's dead letters share a partition of their own, so listing them reads no
/// other item of the tenant's.
fn failures_pk(tenant: &str, sub: &str) -> String {
    format!("T#{tenant}#EVSUB#{sub}")
}

fn failure_sk(event_id: &str) -> String {
    format!("FAIL#{event_id}")
}

/// The one-time mark that a request's `broadcast.completed` went out, beside its progress item.
const COMPLETED_SK: &str = "EVENTS_COMPLETED";

#[async_trait]
impl EventStore for DynamoStore {
    async fn put_subscription(
        &self,
        tenant: &TenantId,
        sub: &EventSubscription,
    ) -> StoreResult<(EventSubscription, bool)> {
        for _ in 0..OCC_TRIES {
            let mut sub = sub.clone();
            let old = self.get(tenant_pk(tenant), &sub_sk(&sub.id), true).await?;
            let item = |sub: &EventSubscription| with_doc(key(tenant_pk(tenant), sub_sk(&sub.id)), sub);
            match old {
                None => {
                    // Only-new: of racing creators one wins, and the others replace keeping its secret.
                    if self.put_if(item(&sub)?, "attribute_not_exists(pk)", HashMap::new()).await? {
                        return Ok((sub, true));
                    }
                }
                Some(old) => {
                    let old: EventSubscription = doc(&old)?;
                    sub.secret = old.secret;
                    sub.created_at = old.created_at;
                    if self.put_if(item(&sub)?, "attribute_exists(pk)", HashMap::new()).await? {
                        return Ok((sub, false));
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!("event subscription {} kept changing", sub.id)))
    }

    async fn get_subscription(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<EventSubscription>> {
        self.get(tenant_pk(tenant), &sub_sk(id), true).await?.map(|i| doc(&i)).transpose()
    }

    async fn list_subscriptions(&self, tenant: &TenantId) -> StoreResult<Vec<EventSubscription>> {
        let items = self.query_prefix(tenant_pk(tenant), "EVSUB#").await?;
        let mut all: Vec<EventSubscription> = items.iter().map(doc).collect::<StoreResult<_>>()?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn delete_subscription(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        let gone = self.delete(tenant_pk(tenant), &sub_sk(id)).await?;
        // Its failures go with it: a subscription made again under the id starts with none.
        for f in self.query_prefix(failures_pk(tenant, id), "FAIL#").await? {
            if let Some(sk) = super::text(&f, "sk") {
                self.delete(failures_pk(tenant, id), &sk).await?;
            }
        }
        Ok(gone)
    }

    async fn put_failure(&self, tenant: &TenantId, f: &EventFailure) -> StoreResult<()> {
        let mut item = with_doc(key(failures_pk(tenant, &f.subscription_id), failure_sk(&f.event_id)), f)?;
        item.insert("at".into(), n(f.last_attempt_at.timestamp_millis()));
        self.put(item).await
    }

    async fn list_failures(&self, tenant: &TenantId, subscription: &str, limit: u32) -> StoreResult<Vec<EventFailure>> {
        let mut items = self.query_prefix(failures_pk(tenant, subscription), "FAIL#").await?;
        items.sort_by_key(|i| (number(i, "at").unwrap_or_default(), super::text(i, "sk")));
        items.iter().take(limit as usize).map(doc).collect()
    }

    async fn take_failure(
        &self,
        tenant: &TenantId,
        subscription: &str,
        event_id: &str,
    ) -> StoreResult<Option<EventFailure>> {
        // One delete that answers what it removed: of racing takers only one gets the item.
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(failures_pk(tenant, subscription), failure_sk(event_id))))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        match out.attributes {
            Some(old) if !old.is_empty() => Ok(Some(doc(&old)?)),
            _ => Ok(None),
        }
    }

    async fn mark_completed(&self, tenant: &TenantId, request_id: &str) -> StoreResult<bool> {
        let mut item = key(request_pk(tenant, request_id), COMPLETED_SK);
        item.insert("at".into(), n(crate::domain::now().timestamp_millis()));
        self.put_if(item, "attribute_not_exists(pk)", HashMap::new()).await
    }
}
