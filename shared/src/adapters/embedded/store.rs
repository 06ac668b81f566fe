//! Every store port on the local database. Records are JSON documents with the columns their
//! queries need beside them; every conditional write is one savepoint of the writer's group
//! commit, every read runs on the read pool.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::time::Duration;

use super::{ms, Db};
use crate::domain::{
    ids::new_id, now, Campaign, Contact, ContactDraft, ContactKey, RecipientRow, SendRequest, Status, Template,
    TenantId,
};
use crate::ports::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    lookup TEXT PRIMARY KEY, hash BLOB NOT NULL, display_prefix TEXT NOT NULL,
    tenant_id TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant_id);
CREATE TABLE IF NOT EXISTS templates (tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS campaigns (tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS contacts (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contact_keys (
    tenant_id TEXT NOT NULL, key TEXT NOT NULL, contact_id TEXT NOT NULL, PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS recipient_rows (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, request_id TEXT NOT NULL, seq INTEGER NOT NULL,
    status TEXT NOT NULL, external_message_id TEXT, data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS recipient_rows_request ON recipient_rows(tenant_id, request_id, seq);
CREATE INDEX IF NOT EXISTS recipient_rows_status ON recipient_rows(status);
CREATE INDEX IF NOT EXISTS recipient_rows_external ON recipient_rows(external_message_id) WHERE external_message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS request_progress (
    tenant_id TEXT NOT NULL, request_id TEXT NOT NULL, fanned_out_at INTEGER, canceled_at INTEGER, fan_out_error TEXT,
    PRIMARY KEY (tenant_id, request_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
    status INTEGER, body TEXT, locked_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS tenant_webhooks (tenant_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenant_settings (tenant_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant_id TEXT NOT NULL,
    request_id TEXT NOT NULL, row_id TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_row ON outbox(tenant_id, row_id);
CREATE INDEX IF NOT EXISTS outbox_request ON outbox(tenant_id, request_id, seq);
";

pub struct EmbeddedStore {
    pub(super) db: Db,
    /// Where import files wait while they are read.
    pub(super) files: std::path::PathBuf,
}

impl EmbeddedStore {
    pub(super) fn new(db: Db, files: std::path::PathBuf) -> EmbeddedStore {
        EmbeddedStore { db, files }
    }

    /// Makes a share of this store's calls fail (soak tests only); `false` if already armed.
    pub fn inject_faults(&self, faults: std::sync::Arc<super::Faults>) -> bool {
        self.db.inject_faults(faults)
    }

    /// The armed fault switch, if any.
    pub fn faults(&self) -> Option<&std::sync::Arc<super::Faults>> {
        self.db.faults()
    }

    /// After a restart nobody holds a lease: let rows left `sending` be reclaimed at once.
    /// Only the process that owns the data directory may call this.
    pub async fn expire_leases(&self) -> StoreResult<u64> {
        self.db
            .write(|c| {
                let tx = c.savepoint()?;
                let ids: Vec<(String, String)> = {
                    let mut st = tx.prepare("SELECT tenant_id, id FROM recipient_rows WHERE status = 'sending'")?;
                    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                let at = now();
                for (tenant, id) in &ids {
                    if let Some(mut row) = load_row(&tx, tenant, id)? {
                        if row.expire_lease(at) {
                            save_row(&tx, &row)?;
                        }
                    }
                }
                tx.commit()?;
                Ok(ids.len() as u64)
            })
            .await
    }

    /// Pending rows (queued, retrying, sending) that nothing has touched since `before`: last
    /// changed, due and leased all at or before it. At most `limit`, oldest first.
    pub async fn stale_pending(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<Vec<RecipientRow>> {
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT data FROM recipient_rows WHERE status IN ('scheduled', 'queued', 'retrying', 'sending')",
                )?;
                let docs = st.query_map([], |r| r.get::<_, String>(0))?;
                // Only the `limit` oldest are kept while reading: a broadcast of a million rows
                // leaves that many pending, and memory must not follow.
                let mut out = Vec::with_capacity(limit.saturating_mul(2));
                for d in docs {
                    let row: RecipientRow = serde_json::from_str(&d?)?;
                    let last =
                        [row.next_attempt_at, row.lease_until].into_iter().flatten().fold(row.updated_at, Ord::max);
                    if last <= before {
                        out.push(row);
                        if out.len() >= limit.saturating_mul(2).max(1) {
                            out.sort_by_key(|r| r.updated_at);
                            out.truncate(limit);
                        }
                    }
                }
                out.sort_by_key(|r| r.updated_at);
                out.truncate(limit);
                Ok(out)
            })
            .await
    }

    /// Frees every idempotency key whose call never finished: after a restart nobody is handling
    /// them. A retry then runs again and finds the request its first try stored, if any (its id
    /// derives from the key). Only the process that owns the data directory may call this.
    pub async fn release_idempotency_locks(&self) -> StoreResult<u64> {
        self.db.write(|c| Ok(c.execute("DELETE FROM idempotency WHERE done = 0", [])? as u64)).await
    }

    /// Deletes answered idempotency records past their expiry.
    pub async fn purge_expired(&self) -> StoreResult<u64> {
        let t = ms(now());
        self.db.write(move |c| Ok(c.execute("DELETE FROM idempotency WHERE expires_at < ?1", params![t])? as u64)).await
    }

    async fn put_doc<T: serde::Serialize>(
        &self,
        table: &'static str,
        tenant: &TenantId,
        id: &str,
        doc: &T,
    ) -> StoreResult<()> {
        let (tenant, id, data) = (tenant.to_string(), id.to_string(), serde_json::to_string(doc)?);
        self.db
            .write(move |c| {
                c.execute(
                    &format!("INSERT INTO {table} (tenant_id, id, data) VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data"),
                    params![tenant, id, data],
                )?;
                Ok(())
            })
            .await
    }

    async fn get_doc<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
        tenant: &TenantId,
        id: &str,
    ) -> StoreResult<Option<T>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db
            .read(move |c| {
                let data: Option<String> = c
                    .query_row(
                        &format!("SELECT data FROM {table} WHERE tenant_id = ?1 AND id = ?2"),
                        params![tenant, id],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(data.map(|d| serde_json::from_str(&d)).transpose()?)
            })
            .await
    }

    async fn delete_doc(&self, table: &'static str, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db
            .write(move |c| {
                Ok(c.execute(&format!("DELETE FROM {table} WHERE tenant_id = ?1 AND id = ?2"), params![tenant, id])?
                    > 0)
            })
            .await
    }

    async fn list_docs<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
        tenant: &TenantId,
    ) -> StoreResult<Vec<T>> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let mut st = c.prepare(&format!("SELECT data FROM {table} WHERE tenant_id = ?1 ORDER BY id"))?;
                let docs = st.query_map(params![tenant], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for d in docs {
                    out.push(serde_json::from_str(&d?)?);
                }
                Ok(out)
            })
            .await
    }
}

fn load_row(c: &Connection, tenant: &str, id: &str) -> StoreResult<Option<RecipientRow>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM recipient_rows WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()?;
    Ok(data.map(|d| serde_json::from_str(&d)).transpose()?)
}

fn save_row(c: &Connection, row: &RecipientRow) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE recipient_rows SET status = ?3, external_message_id = ?4, data = ?5 WHERE tenant_id = ?1 AND id = ?2",
    )?
    .execute(params![
        row.tenant_id,
        row.id,
        row.status.as_str(),
        row.external_message_id,
        serde_json::to_string(row)?
    ])?;
    Ok(())
}

// ---------------------------------------------------------------- keys

#[async_trait]
impl ApiKeys for EmbeddedStore {
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let (tenant, t) = (tenant.to_string(), ms(now()));
        self.db
            .write(move |c| {
                Ok(c.execute("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?1, ?2)", params![tenant, t])?
                    == 1)
            })
            .await
    }

    async fn count_tenants(&self) -> StoreResult<u64> {
        self.db.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get::<_, i64>(0))? as u64)).await
    }

    async fn insert_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let k = key.clone();
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO api_keys (lookup, hash, display_prefix, tenant_id, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![k.lookup, k.hash.to_vec(), k.display_prefix, k.tenant_id, ms(k.created_at), k.revoked_at.map(ms)],
                )?;
                Ok(())
            })
            .await
    }

    async fn find_key(&self, lookup: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let lookup = lookup.to_string();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT lookup, hash, display_prefix, tenant_id, created_at, revoked_at FROM api_keys WHERE lookup = ?1",
                )?
                .query_row(params![lookup], key_from_row)
                .optional()?)
            })
            .await
    }

    async fn revoke_key(&self, tenant: &TenantId, lookup: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        self.revoke(tenant, lookup, at).await
    }

    async fn get_settings(&self, tenant: &TenantId) -> StoreResult<TenantSettings> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let data: Option<String> = c
                    .prepare_cached("SELECT data FROM tenant_settings WHERE tenant_id = ?1")?
                    .query_row(params![tenant], |r| r.get(0))
                    .optional()?;
                Ok(match data {
                    Some(d) => serde_json::from_str(&d)?,
                    None => TenantSettings::default(),
                })
            })
            .await
    }

    async fn put_settings(&self, tenant: &TenantId, settings: &TenantSettings) -> StoreResult<()> {
        let (tenant, data) = (tenant.to_string(), serde_json::to_string(settings)?);
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO tenant_settings (tenant_id, data) VALUES (?1, ?2) ON CONFLICT (tenant_id) DO UPDATE SET data = excluded.data",
                    params![tenant, data],
                )?;
                Ok(())
            })
            .await
    }

    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyRecord>> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT lookup, hash, display_prefix, tenant_id, created_at, revoked_at FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at",
                )?;
                let rows = st.query_map(params![tenant], key_from_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }
}

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let hash: Vec<u8> = r.get(1)?;
    let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    Ok(ApiKeyRecord {
        lookup: r.get(0)?,
        hash: hash.try_into().unwrap_or([0; 32]),
        display_prefix: r.get(2)?,
        tenant_id: r.get(3)?,
        created_at: at(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(at),
    })
}

impl EmbeddedStore {
    async fn revoke(&self, tenant: &TenantId, lookup: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (tenant, lookup) = (tenant.to_string(), lookup.to_string());
        self.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE api_keys SET revoked_at = ?3 WHERE tenant_id = ?1 AND lookup = ?2 AND revoked_at IS NULL",
                    params![tenant, lookup, ms(at)],
                )? == 1)
            })
            .await
    }
}

// ---------------------------------------------------------------- catalog

#[async_trait]
impl Catalog for EmbeddedStore {
    async fn put_template(&self, tenant: &TenantId, t: &Template) -> StoreResult<()> {
        self.put_doc("templates", tenant, &t.id, t).await
    }
    async fn get_template(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Template>> {
        self.get_doc("templates", tenant, id).await
    }
    async fn delete_template(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        self.delete_doc("templates", tenant, id).await
    }
    async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<Template>> {
        self.list_docs("templates", tenant).await
    }
    async fn put_campaign(&self, tenant: &TenantId, c: &Campaign) -> StoreResult<()> {
        self.put_doc("campaigns", tenant, &c.id, c).await
    }
    async fn create_campaign(&self, tenant: &TenantId, c: &Campaign) -> StoreResult<bool> {
        let (tenant, id, data) = (tenant.to_string(), c.id.clone(), serde_json::to_string(c)?);
        self.db
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO campaigns (tenant_id, id, data) VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id, id) DO NOTHING",
                    params![tenant, id, data],
                )?;
                Ok(inserted == 1)
            })
            .await
    }
    async fn get_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Campaign>> {
        self.get_doc("campaigns", tenant, id).await
    }
    async fn delete_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        self.delete_doc("campaigns", tenant, id).await
    }
    async fn list_campaigns(&self, tenant: &TenantId) -> StoreResult<Vec<Campaign>> {
        self.list_docs("campaigns", tenant).await
    }
}

// ---------------------------------------------------------------- contacts

/// Writes a contact and its keys inside `tx`; refuses a key another contact holds.
pub(super) fn write_contact(tx: &Connection, tenant: &str, contact: &Contact) -> Result<(), ContactWriteError> {
    let mut owner = tx
        .prepare_cached("SELECT contact_id FROM contact_keys WHERE tenant_id = ?1 AND key = ?2")
        .map_err(StoreError::from)?;
    for key in contact.keys() {
        let other: Option<String> =
            owner.query_row(params![tenant, key.as_key()], |r| r.get(0)).optional().map_err(StoreError::from)?;
        if let Some(other) = other.filter(|o| *o != contact.id) {
            return Err(ContactWriteError::KeyTaken { field: key.field(), other });
        }
    }
    // The keys the contact held are those of its stored document: the ones it no longer has are
    // let go, the new ones taken (a key is found by its value only, never by its contact).
    let keys = contact.keys();
    let held = read_contact(tx, tenant, &contact.id)?.map(|c| c.keys()).unwrap_or_default();
    let mut release = tx
        .prepare_cached("DELETE FROM contact_keys WHERE tenant_id = ?1 AND key = ?2 AND contact_id = ?3")
        .map_err(StoreError::from)?;
    for key in held.iter().filter(|k| !keys.contains(k)) {
        release.execute(params![tenant, key.as_key(), contact.id]).map_err(StoreError::from)?;
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO contact_keys (tenant_id, key, contact_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .map_err(StoreError::from)?;
    for key in keys.iter().filter(|k| !held.contains(k)) {
        insert.execute(params![tenant, key.as_key(), contact.id]).map_err(StoreError::from)?;
    }
    let data = serde_json::to_string(contact).map_err(StoreError::from)?;
    tx.execute(
        "INSERT INTO contacts (tenant_id, id, data) VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data",
        params![tenant, contact.id, data],
    )
    .map_err(StoreError::from)?;
    Ok(())
}

pub(super) fn read_contact(c: &Connection, tenant: &str, id: &str) -> StoreResult<Option<Contact>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM contacts WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()?;
    Ok(data.map(|d| serde_json::from_str(&d)).transpose()?)
}

/// The contact holding the first of `keys` that any contact holds.
pub(super) fn find_by_any_key(c: &Connection, tenant: &str, keys: &[ContactKey]) -> StoreResult<Option<Contact>> {
    for key in keys {
        if let Some(id) = owner_of(c, tenant, key)? {
            return read_contact(c, tenant, &id);
        }
    }
    Ok(None)
}

pub(super) fn owner_of(c: &Connection, tenant: &str, key: &ContactKey) -> StoreResult<Option<String>> {
    Ok(c.prepare_cached("SELECT contact_id FROM contact_keys WHERE tenant_id = ?1 AND key = ?2")?
        .query_row(params![tenant, key.as_key()], |r| r.get(0))
        .optional()?)
}

#[async_trait]
impl Contacts for EmbeddedStore {
    async fn get_contact(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Contact>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db.read(move |c| read_contact(c, &tenant, &id)).await
    }

    async fn find_contact(&self, tenant: &TenantId, key: &ContactKey) -> StoreResult<Option<Contact>> {
        let (tenant, key) = (tenant.to_string(), key.clone());
        self.db
            .read(move |c| match owner_of(c, &tenant, &key)? {
                Some(id) => read_contact(c, &tenant, &id),
                None => Ok(None),
            })
            .await
    }

    async fn put_contact(&self, tenant: &TenantId, contact: &Contact) -> Result<(), ContactWriteError> {
        let (tenant, contact) = (tenant.to_string(), contact.clone());
        let r = self
            .db
            .write(move |c| {
                let tx = c.savepoint()?;
                let r = write_contact(&tx, &tenant, &contact);
                if r.is_ok() {
                    tx.commit()?;
                }
                Ok(r)
            })
            .await?;
        r
    }

    async fn upsert_contact(
        &self,
        tenant: &TenantId,
        draft: &ContactDraft,
        merge: bool,
    ) -> Result<(Contact, bool), ContactWriteError> {
        let (tenant, draft) = (tenant.to_string(), draft.clone());
        let r = self
            .db
            .write(move |c| {
                let tx = c.savepoint()?;
                let found = find_by_any_key(&tx, &tenant, &draft.keys())?;
                let (contact, created) = match found {
                    Some(existing) if !merge => return Ok(Ok((existing, false))),
                    Some(mut existing) => {
                        existing.apply(&draft);
                        (existing, false)
                    }
                    None => {
                        let mut c = Contact::new(new_id("ct"));
                        c.apply(&draft);
                        (c, true)
                    }
                };
                let r = write_contact(&tx, &tenant, &contact).map(|_| (contact, created));
                if r.is_ok() {
                    tx.commit()?;
                }
                Ok(r)
            })
            .await?;
        r
    }
}

// ---------------------------------------------------------------- requests and rows

/// Every row write moves its counter in the same transaction: nothing to flush.
impl RowCounters for EmbeddedStore {}

#[async_trait]
impl RequestLog for EmbeddedStore {
    async fn insert_request(&self, request: &SendRequest, rows: &[RecipientRow]) -> StoreResult<()> {
        let req = serde_json::to_string(request)?;
        let (tenant, id) = (request.tenant_id.clone(), request.id.clone());
        let (created_ms, source) = (request.created_at.timestamp_millis(), request.source.clone());
        let rows: Vec<(String, u32, &'static str, String)> = rows
            .iter()
            .map(|r| Ok((r.id.clone(), r.seq, r.status.as_str(), serde_json::to_string(r)?)))
            .collect::<StoreResult<_>>()?;
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                // Request ids are fresh, so a request already present is this one, written by a
                // try whose answer was lost: writing it again changes nothing.
                let inserted = tx.execute(
                    "INSERT INTO requests (tenant_id, id, data, created_ms, source) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant_id, id) DO NOTHING",
                    params![tenant, id, req, created_ms, source],
                )?;
                if inserted == 0 {
                    return Ok(());
                }
                {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO recipient_rows (tenant_id, id, request_id, seq, status, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for (row_id, seq, status, data) in &rows {
                        st.execute(params![tenant, row_id, id, seq, status, data])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn get_request(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<SendRequest>> {
        self.get_doc("requests", tenant, id).await
    }

    async fn list_rows(
        &self,
        tenant: &TenantId,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<RecipientRow>> {
        let (tenant, request_id) = (tenant.to_string(), request_id.to_string());
        let after = after.map(i64::from).unwrap_or(-1);
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT data FROM recipient_rows WHERE tenant_id = ?1 AND request_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                )?;
                let docs = st.query_map(params![tenant, request_id, after, limit], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for d in docs {
                    out.push(serde_json::from_str(&d?)?);
                }
                Ok(out)
            })
            .await
    }

    async fn count_rows(&self, tenant: &TenantId, request_id: &str) -> StoreResult<RowCounts> {
        let (tenant, request_id) = (tenant.to_string(), request_id.to_string());
        let by_status = self
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT status, n FROM row_counts WHERE tenant_id = ?1 AND request_id = ?2 AND n > 0",
                )?;
                let rows =
                    st.query_map(params![tenant, request_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                let mut out = BTreeMap::new();
                for r in rows {
                    let (s, n) = r?;
                    let s = Status::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown status {s:?}")))?;
                    out.insert(s, n as u64);
                }
                Ok(out)
            })
            .await?;
        // Counted inside every row write: never behind.
        Ok(RowCounts { by_status, stalled: false })
    }

    async fn add_rows(&self, tenant: &TenantId, request_id: &str, rows: &[RecipientRow]) -> StoreResult<Vec<String>> {
        let (tenant, request_id) = (tenant.to_string(), request_id.to_string());
        let rows: Vec<(String, u32, &'static str, String)> = rows
            .iter()
            .map(|r| Ok((r.id.clone(), r.seq, r.status.as_str(), serde_json::to_string(r)?)))
            .collect::<StoreResult<_>>()?;
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                if canceled_at(&tx, &tenant, &request_id)?.is_some() {
                    return Ok(Vec::new());
                }
                let mut queued = Vec::new();
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO recipient_rows (tenant_id, id, request_id, seq, status, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (tenant_id, id) DO NOTHING",
                    )?;
                    let mut status =
                        tx.prepare_cached("SELECT status FROM recipient_rows WHERE tenant_id = ?1 AND id = ?2")?;
                    for (row_id, seq, st, data) in rows {
                        let new = insert.execute(params![tenant, row_id, request_id, seq, st, data])? == 1;
                        let waiting = |s: String| Status::parse(&s).is_some_and(Status::is_waiting);
                        if new || waiting(status.query_row(params![tenant, row_id], |r| r.get::<_, String>(0))?) {
                            queued.push(row_id);
                        }
                    }
                }
                tx.commit()?;
                Ok(queued)
            })
            .await
    }

    async fn finish_fan_out(&self, tenant: &TenantId, request_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let (tenant, request_id, at) = (tenant.to_string(), request_id.to_string(), ms(at));
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO request_progress (tenant_id, request_id, fanned_out_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, request_id) DO UPDATE SET fanned_out_at = COALESCE(fanned_out_at, excluded.fanned_out_at)",
                )?
                .execute(params![tenant, request_id, at])?;
                Ok(())
            })
            .await
    }

    async fn fail_fan_out(
        &self,
        tenant: &TenantId,
        request_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()> {
        let (tenant, request_id, at, reason) = (tenant.to_string(), request_id.to_string(), ms(at), reason.to_string());
        self.db
            .write(move |c| {
                // SET reads the old values: the reason lands only where fan-out was not over yet.
                c.prepare_cached(
                    "INSERT INTO request_progress (tenant_id, request_id, fanned_out_at, fan_out_error) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant_id, request_id) DO UPDATE SET
                         fan_out_error = CASE WHEN fanned_out_at IS NULL THEN excluded.fan_out_error ELSE fan_out_error END,
                         fanned_out_at = COALESCE(fanned_out_at, excluded.fanned_out_at)",
                )?
                .execute(params![tenant, request_id, at, reason])?;
                Ok(())
            })
            .await
    }

    async fn cancel_request(
        &self,
        tenant: &TenantId,
        request_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        let (tenant, request_id) = (tenant.to_string(), request_id.to_string());
        let stamp = serde_json::to_value(at)?;
        let stamp = stamp.as_str().unwrap_or_default().to_string();
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                if let Some(first) = canceled_at(&tx, &tenant, &request_id)? {
                    return Ok(first);
                }
                tx.prepare_cached(
                    "INSERT INTO request_progress (tenant_id, request_id, canceled_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, request_id) DO UPDATE SET canceled_at = excluded.canceled_at",
                )?
                .execute(params![tenant, request_id, ms(at)])?;
                // Every row no worker holds, at once, as `RecipientRow::cancel` would: its document
                // is edited in place rather than read and written back, a million rows being usual.
                tx.prepare_cached(
                    "UPDATE recipient_rows SET status = 'canceled', data = json_set(data,
                         '$.status', 'canceled', '$.times.canceled', ?3, '$.updated_at', ?3,
                         '$.next_attempt_at', NULL, '$.lease_until', NULL)
                     WHERE tenant_id = ?1 AND request_id = ?2 AND status IN ('scheduled', 'queued', 'retrying')",
                )?
                .execute(params![tenant, request_id, stamp])?;
                tx.commit()?;
                Ok(at)
            })
            .await
    }

    async fn progress(&self, tenant: &TenantId, request_id: &str) -> StoreResult<Progress> {
        let (tenant, request_id) = (tenant.to_string(), request_id.to_string());
        self.db
            .read(move |c| {
                let found: Option<(Option<i64>, Option<i64>, Option<String>)> = c
                    .prepare_cached(
                        "SELECT fanned_out_at, canceled_at, fan_out_error FROM request_progress
                         WHERE tenant_id = ?1 AND request_id = ?2",
                    )?
                    .query_row(params![tenant, request_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let (fanned, canceled, fan_out_error) = found.unwrap_or_default();
                Ok(Progress {
                    fanned_out_at: fanned.and_then(from_ms),
                    canceled_at: canceled.and_then(from_ms),
                    fan_out_error,
                })
            })
            .await
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

/// Newest first after a cursor, with one request more than the page holds to tell whether
/// another page follows.
const NEWEST_FIRST: &str = "SELECT data FROM requests
     WHERE tenant_id = ?1 AND (created_ms, id) < (?2, ?3) ORDER BY created_ms DESC, id DESC LIMIT ?4";
const NEWEST_FIRST_OF_SOURCE: &str = "SELECT data FROM requests
     WHERE tenant_id = ?1 AND (created_ms, id) < (?2, ?3) AND source = ?5
     ORDER BY created_ms DESC, id DESC LIMIT ?4";

impl EmbeddedStore {
    pub(super) async fn newest_requests(
        &self,
        tenant: &TenantId,
        source: Option<&str>,
        cursor: Option<&RequestCursor>,
        limit: u32,
    ) -> StoreResult<RequestPage> {
        let (tenant, source) = (tenant.to_string(), source.map(str::to_string));
        // No cursor: before every request, as no id sorts below "" at the largest time.
        let (ms, id) = cursor.map(|c| (c.created_ms, c.id.clone())).unwrap_or((i64::MAX, String::new()));
        let mut requests: Vec<SendRequest> = self
            .db
            .read(move |c| {
                let docs: Vec<String> = match &source {
                    None => c
                        .prepare_cached(NEWEST_FIRST)?
                        .query_map(params![tenant, ms, id, i64::from(limit) + 1], |r| r.get(0))?
                        .collect::<Result<_, _>>()?,
                    Some(source) => c
                        .prepare_cached(NEWEST_FIRST_OF_SOURCE)?
                        .query_map(params![tenant, ms, id, i64::from(limit) + 1, source], |r| r.get(0))?
                        .collect::<Result<_, _>>()?,
                };
                docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
            })
            .await?;
        let more = requests.len() > limit as usize;
        requests.truncate(limit as usize);
        let next_cursor = more.then(|| requests.last().map(RequestCursor::after)).flatten();
        Ok(RequestPage { requests, next_cursor })
    }
}

fn from_ms(t: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t)
}

/// When the request was canceled, if it was.
fn canceled_at(c: &Connection, tenant: &str, request_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
    let at: Option<Option<i64>> = c
        .prepare_cached("SELECT canceled_at FROM request_progress WHERE tenant_id = ?1 AND request_id = ?2")?
        .query_row(params![tenant, request_id], |r| r.get(0))
        .optional()?;
    Ok(at.flatten().and_then(from_ms))
}

#[async_trait]
impl RowLeases for EmbeddedStore {
    // Each of these is one row's read and at most one write: the engine's own savepoint around
    // every write is all the atomicity they need (a nested one costs two parsed statements).
    async fn claim_row(
        &self,
        tenant: &TenantId,
        row_id: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        let (tenant, row_id) = (tenant.to_string(), row_id.to_string());
        self.db
            .write(move |c| {
                let Some(mut row) = load_row(c, &tenant, &row_id)? else { return Ok(Claim::Missing) };
                // Checked in the claim's own transaction: once a cancel has committed, no row of
                // its request starts a provider call.
                if canceled_at(c, &tenant, &row.request_id)?.is_some() {
                    if row.cancel(now) {
                        save_row(c, &row)?;
                        return Ok(Claim::Done(row));
                    }
                    if !row.status.is_pending() {
                        return Ok(Claim::Done(row));
                    }
                }
                let claim = row.claim(now, lease_until);
                if claim.took_lease() {
                    save_row(c, &row)?;
                }
                Ok(claim)
            })
            .await
    }

    async fn finish_row(&self, tenant: &TenantId, row_id: &str, attempt: u32, outcome: Outcome) -> StoreResult<bool> {
        let (tenant, row_id) = (tenant.to_string(), row_id.to_string());
        self.db
            .write(move |c| {
                let Some(mut row) = load_row(c, &tenant, &row_id)? else { return Ok(false) };
                if !row.finish(attempt, outcome, now()) {
                    return Ok(false);
                }
                save_row(c, &row)?;
                Ok(true)
            })
            .await
    }

    async fn advance_row(
        &self,
        tenant: &TenantId,
        row_id: &str,
        status: Status,
        at: DateTime<Utc>,
        error: Option<String>,
    ) -> StoreResult<bool> {
        let (tenant, row_id) = (tenant.to_string(), row_id.to_string());
        self.db
            .write(move |c| {
                let Some(mut row) = load_row(c, &tenant, &row_id)? else { return Ok(false) };
                if !row.advance(status, at, error) {
                    return Ok(false);
                }
                save_row(c, &row)?;
                Ok(true)
            })
            .await
    }

    async fn fail_pending(&self, tenant: &TenantId, row_id: &str, message: &str) -> StoreResult<bool> {
        let (tenant, row_id, message) = (tenant.to_string(), row_id.to_string(), message.to_string());
        self.db
            .write(move |c| {
                let Some(mut row) = load_row(c, &tenant, &row_id)? else { return Ok(false) };
                if !row.fail_pending(&message, now()) {
                    return Ok(false);
                }
                save_row(c, &row)?;
                Ok(true)
            })
            .await
    }
}

#[async_trait]
impl StatusLookup for EmbeddedStore {
    async fn get_row(&self, tenant: &TenantId, row_id: &str) -> StoreResult<Option<RecipientRow>> {
        let (tenant, row_id) = (tenant.to_string(), row_id.to_string());
        self.db.read(move |c| load_row(c, &tenant, &row_id)).await
    }

    async fn find_by_external_id(&self, provider: &str, external_id: &str) -> StoreResult<Option<(TenantId, String)>> {
        let (provider, external_id) = (provider.to_string(), external_id.to_string());
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached("SELECT data FROM recipient_rows WHERE external_message_id = ?1")?;
                let docs = st.query_map(params![external_id], |r| r.get::<_, String>(0))?;
                for d in docs {
                    let row: RecipientRow = serde_json::from_str(&d?)?;
                    if row.provider.as_deref() == Some(provider.as_str()) {
                        return Ok(Some((row.tenant_id, row.id)));
                    }
                }
                Ok(None)
            })
            .await
    }
}

// ---------------------------------------------------------------- idempotency

#[async_trait]
impl Idempotency for EmbeddedStore {
    async fn begin(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lock: Duration,
    ) -> StoreResult<Begin> {
        let (tenant, key, fp) = (tenant.to_string(), key.to_string(), fingerprint.to_string());
        let t = ms(now);
        let stale_before = t - lock.as_millis() as i64;
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                let existing: Option<(String, bool, Option<i64>, Option<String>, i64, i64)> = tx
                    .query_row(
                        "SELECT fingerprint, done, status, body, locked_at, expires_at FROM idempotency WHERE tenant_id = ?1 AND key = ?2",
                        params![tenant, key],
                        |r| Ok((r.get(0)?, r.get::<_, i64>(1)? == 1, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                    )
                    .optional()?;
                let begin = match existing {
                    Some((_, true, _, _, _, expires)) if expires < t => Begin::New,
                    Some((other, ..)) if other != fp => return Ok(Begin::Mismatch),
                    Some((_, true, status, body, ..)) => {
                        return Ok(Begin::Replay(StoredResponse { status: status.unwrap_or(200) as u16, body: body.unwrap_or_default() }))
                    }
                    Some((_, false, _, _, locked_at, _)) if locked_at >= stale_before => return Ok(Begin::InProgress),
                    _ => Begin::New,
                };
                tx.execute(
                    "INSERT INTO idempotency (tenant_id, key, fingerprint, done, locked_at, expires_at) VALUES (?1, ?2, ?3, 0, ?4, ?5)
                     ON CONFLICT (tenant_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, done = 0, status = NULL, body = NULL,
                     locked_at = excluded.locked_at, expires_at = excluded.expires_at",
                    params![tenant, key, fp, t, t + lock.as_millis() as i64],
                )?;
                tx.commit()?;
                Ok(begin)
            })
            .await
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (tenant, key, r) = (tenant.to_string(), key.to_string(), response.clone());
        self.db
            .write(move |c| {
                c.execute(
                    "UPDATE idempotency SET done = 1, status = ?3, body = ?4, expires_at = ?5 WHERE tenant_id = ?1 AND key = ?2",
                    params![tenant, key, r.status, r.body, ms(expires_at)],
                )?;
                Ok(())
            })
            .await
    }

    async fn abandon(&self, tenant: &TenantId, key: &str) -> StoreResult<()> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        self.db
            .write(move |c| {
                c.execute(
                    "DELETE FROM idempotency WHERE tenant_id = ?1 AND key = ?2 AND done = 0",
                    params![tenant, key],
                )?;
                Ok(())
            })
            .await
    }
}

// ---------------------------------------------------------------- tenant webhook endpoints

#[async_trait]
impl WebhookEndpoints for EmbeddedStore {
    async fn get_webhook(&self, tenant: &TenantId) -> StoreResult<Option<WebhookEndpoint>> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let data: Option<String> = c
                    .query_row("SELECT data FROM tenant_webhooks WHERE tenant_id = ?1", params![tenant], |r| r.get(0))
                    .optional()?;
                Ok(data.map(|d| serde_json::from_str(&d)).transpose()?)
            })
            .await
    }

    async fn put_webhook(&self, tenant: &TenantId, e: &WebhookEndpoint) -> StoreResult<()> {
        let (tenant, data) = (tenant.to_string(), serde_json::to_string(e)?);
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO tenant_webhooks (tenant_id, data) VALUES (?1, ?2) ON CONFLICT (tenant_id) DO UPDATE SET data = excluded.data",
                    params![tenant, data],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_webhook(&self, tenant: &TenantId) -> StoreResult<bool> {
        let tenant = tenant.to_string();
        self.db
            .write(move |c| Ok(c.execute("DELETE FROM tenant_webhooks WHERE tenant_id = ?1", params![tenant])? > 0))
            .await
    }
}

// ---------------------------------------------------------------- outbox

#[async_trait]
impl Outbox for EmbeddedStore {
    async fn record(&self, e: &OutboxEntry) -> StoreResult<()> {
        let data = serde_json::to_string(e)?;
        let (id, tenant, request_id, row_id) =
            (e.id.clone(), e.tenant_id.clone(), e.request_id.clone(), e.row_id.clone());
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO outbox (id, tenant_id, request_id, row_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, tenant, request_id, row_id, data])?;
                Ok(())
            })
            .await
    }

    async fn find_by_row(&self, tenant: &TenantId, row_id: &str) -> StoreResult<Option<OutboxEntry>> {
        let (tenant, row_id) = (tenant.to_string(), row_id.to_string());
        self.db
            .read(move |c| {
                let data: Option<String> = c
                    .prepare_cached(
                        "SELECT data FROM outbox WHERE tenant_id = ?1 AND row_id = ?2 ORDER BY seq LIMIT 1",
                    )?
                    .query_row(params![tenant, row_id], |r| r.get(0))
                    .optional()?;
                Ok(data.map(|d| serde_json::from_str(&d)).transpose()?)
            })
            .await
    }

    async fn list_outbox(
        &self,
        tenant: &TenantId,
        request_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>> {
        let (tenant, request_id, after) = (tenant.to_string(), request_id.map(String::from), after.map(String::from));
        self.db
            .read(move |c| {
                let after_seq: i64 = match &after {
                    Some(id) => c
                        .query_row("SELECT seq FROM outbox WHERE tenant_id = ?1 AND id = ?2", params![tenant, id], |r| r.get(0))
                        .optional()?
                        .unwrap_or(i64::MAX),
                    None => 0,
                };
                let mut st = c.prepare_cached(
                    "SELECT data FROM outbox WHERE tenant_id = ?1 AND (?2 IS NULL OR request_id = ?2) AND seq > ?3 ORDER BY seq LIMIT ?4",
                )?;
                let docs = st.query_map(params![tenant, request_id, after_seq, limit], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for d in docs {
                    out.push(serde_json::from_str(&d?)?);
                }
                Ok(out)
            })
            .await
    }
}

/// Counts of stored things, for operators and for tests that check nothing was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    pub requests: u64,
    pub rows: u64,
    pub contacts: u64,
    pub templates: u64,
    pub campaigns: u64,
    pub outbox: u64,
}

impl EmbeddedStore {
    pub async fn counts(&self) -> StoreResult<StoreCounts> {
        self.db
            .read(|c| {
                let q = |t: &str| {
                    c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
                };
                Ok(StoreCounts {
                    requests: q("requests")?,
                    rows: q("recipient_rows")?,
                    contacts: q("contacts")?,
                    templates: q("templates")?,
                    campaigns: q("campaigns")?,
                    outbox: q("outbox")?,
                })
            })
            .await
    }
}
