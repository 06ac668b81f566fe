//! Status event subscriptions, their dead letters and the one-time completion marks on the local
//! database. Documents are JSON in a `data` column, as the other stores keep theirs; the secret
//! is kept as given, since Herald signs with it.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::store::EmbeddedStore;
use crate::domain::events::{EventFailure, EventSubscription};
use crate::domain::TenantId;
use crate::ports::{EventStore, StoreResult};

/// Created by `migrate::add_events` (on a new database and an old one alike).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_subscriptions (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE IF NOT EXISTS event_failures (
    tenant_id TEXT NOT NULL, subscription_id TEXT NOT NULL, event_id TEXT NOT NULL,
    last_attempt_at INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, event_id)
);
CREATE TABLE IF NOT EXISTS event_completions (
    tenant_id TEXT NOT NULL, request_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
) WITHOUT ROWID;
";

fn read_sub(c: &Connection, tenant: &str, id: &str) -> StoreResult<Option<EventSubscription>> {
    let found: Option<String> = c
        .prepare_cached("SELECT data FROM event_subscriptions WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()?;
    Ok(found.map(|d| serde_json::from_str(&d)).transpose()?)
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn put_subscription(
        &self,
        tenant: &TenantId,
        sub: &EventSubscription,
    ) -> StoreResult<(EventSubscription, bool)> {
        let (tenant, mut sub) = (tenant.to_string(), sub.clone());
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                let old = read_sub(&tx, &tenant, &sub.id)?;
                if let Some(old) = &old {
                    sub.secret = old.secret.clone();
                    sub.created_at = old.created_at;
                }
                tx.execute(
                    "INSERT INTO event_subscriptions (tenant_id, id, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data",
                    params![tenant, sub.id, serde_json::to_string(&sub)?],
                )?;
                tx.commit()?;
                Ok((sub, old.is_none()))
            })
            .await
    }

    async fn get_subscription(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<EventSubscription>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db.read(move |c| read_sub(c, &tenant, &id)).await
    }

    async fn list_subscriptions(&self, tenant: &TenantId) -> StoreResult<Vec<EventSubscription>> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let mut st =
                    c.prepare_cached("SELECT data FROM event_subscriptions WHERE tenant_id = ?1 ORDER BY id")?;
                let docs = st.query_map(params![tenant], |r| r.get::<_, String>(0))?;
                let all: StoreResult<Vec<EventSubscription>> =
                    docs.map(|d| -> StoreResult<EventSubscription> { Ok(serde_json::from_str(&d?)?) }).collect();
                all
            })
            .await
    }

    async fn delete_subscription(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                tx.execute(
                    "DELETE FROM event_failures WHERE tenant_id = ?1 AND subscription_id = ?2",
                    params![tenant, id],
                )?;
                let gone = tx
                    .execute("DELETE FROM event_subscriptions WHERE tenant_id = ?1 AND id = ?2", params![tenant, id])?;
                tx.commit()?;
                Ok(gone > 0)
            })
            .await
    }

    async fn put_failure(&self, tenant: &TenantId, failure: &EventFailure) -> StoreResult<()> {
        let (tenant, f) = (tenant.to_string(), failure.clone());
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO event_failures (tenant_id, subscription_id, event_id, last_attempt_at, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant_id, subscription_id, event_id)
                     DO UPDATE SET last_attempt_at = excluded.last_attempt_at, data = excluded.data",
                )?
                .execute(params![
                    tenant,
                    f.subscription_id,
                    f.event_id,
                    f.last_attempt_at.timestamp_millis(),
                    serde_json::to_string(&f)?
                ])?;
                Ok(())
            })
            .await
    }

    async fn list_failures(&self, tenant: &TenantId, subscription: &str, limit: u32) -> StoreResult<Vec<EventFailure>> {
        let (tenant, subscription) = (tenant.to_string(), subscription.to_string());
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT data FROM event_failures WHERE tenant_id = ?1 AND subscription_id = ?2
                     ORDER BY last_attempt_at, event_id LIMIT ?3",
                )?;
                let docs = st.query_map(params![tenant, subscription, i64::from(limit)], |r| r.get::<_, String>(0))?;
                let all: StoreResult<Vec<EventFailure>> =
                    docs.map(|d| -> StoreResult<EventFailure> { Ok(serde_json::from_str(&d?)?) }).collect();
                all
            })
            .await
    }

    async fn take_failure(
        &self,
        tenant: &TenantId,
        subscription: &str,
        event_id: &str,
    ) -> StoreResult<Option<EventFailure>> {
        let (tenant, subscription, event_id) = (tenant.to_string(), subscription.to_string(), event_id.to_string());
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                let found: Option<String> = tx
                    .prepare_cached(
                        "SELECT data FROM event_failures
                         WHERE tenant_id = ?1 AND subscription_id = ?2 AND event_id = ?3",
                    )?
                    .query_row(params![tenant, subscription, event_id], |r| r.get(0))
                    .optional()?;
                let Some(data) = found else { return Ok(None) };
                tx.execute(
                    "DELETE FROM event_failures WHERE tenant_id = ?1 AND subscription_id = ?2 AND event_id = ?3",
                    params![tenant, subscription, event_id],
                )?;
                tx.commit()?;
                Ok(Some(serde_json::from_str(&data)?))
            })
            .await
    }

    async fn mark_completed(&self, tenant: &TenantId, request_id: &str) -> StoreResult<bool> {
        let (tenant, request_id) = (tenant.to_string(), request_id.to_string());
        self.db
            .write(move |c| {
                let added = c
                    .prepare_cached("INSERT OR IGNORE INTO event_completions (tenant_id, request_id) VALUES (?1, ?2)")?
                    .execute(params![tenant, request_id])?;
                Ok(added == 1)
            })
            .await
    }
}
