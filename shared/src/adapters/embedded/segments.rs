//! Segments on the local database. Members are a `WITHOUT ROWID` table keyed by (tenant,
//! segment, contact), so a page of members is a range of the primary key however large the
//! segment; the segment row keeps an exact member count, moved in the same transaction as the
//! members.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::store::EmbeddedStore;
use crate::domain::{MemberCursor, Segment, TenantId};
use crate::ports::{MemberPage, MembersError, Segments, StoreResult};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segments (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, member_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE IF NOT EXISTS segment_members (
    tenant_id TEXT NOT NULL, segment_id TEXT NOT NULL, contact_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, segment_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS segment_members_contact ON segment_members(tenant_id, contact_id);
";

pub(super) fn read_segment(c: &Connection, tenant: &str, id: &str) -> StoreResult<Option<(Segment, u64)>> {
    let found: Option<(String, i64)> = c
        .prepare_cached("SELECT data, member_count FROM segments WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    found.map(|(data, count)| Ok((serde_json::from_str(&data)?, count.max(0) as u64))).transpose()
}

/// Inserts (`add`) or deletes the members in one savepoint and moves the count by what changed.
fn change_members(
    c: &mut Connection,
    tenant: &str,
    segment: &str,
    ids: &[String],
    add: bool,
) -> Result<u64, MembersError> {
    let tx = c.savepoint().map_err(crate::ports::StoreError::from)?;
    if read_segment(&tx, tenant, segment)?.is_none() {
        return Err(MembersError::NoSegment);
    }
    let sql = match add {
        true => "INSERT OR IGNORE INTO segment_members (tenant_id, segment_id, contact_id) VALUES (?1, ?2, ?3)",
        false => "DELETE FROM segment_members WHERE tenant_id = ?1 AND segment_id = ?2 AND contact_id = ?3",
    };
    let mut changed = 0u64;
    {
        let mut st = tx.prepare_cached(sql).map_err(crate::ports::StoreError::from)?;
        for id in ids {
            changed += st.execute(params![tenant, segment, id]).map_err(crate::ports::StoreError::from)? as u64;
        }
    }
    let delta = if add { changed as i64 } else { -(changed as i64) };
    tx.execute(
        "UPDATE segments SET member_count = member_count + ?3 WHERE tenant_id = ?1 AND id = ?2",
        params![tenant, segment, delta],
    )
    .map_err(crate::ports::StoreError::from)?;
    tx.commit().map_err(crate::ports::StoreError::from)?;
    Ok(changed)
}

const PAGE: &str = "SELECT contact_id FROM segment_members
    WHERE tenant_id = ?1 AND segment_id = ?2 AND contact_id > ?3 ORDER BY contact_id LIMIT ?4";
const SEGMENTS_OF: &str =
    "SELECT segment_id FROM segment_members WHERE tenant_id = ?1 AND contact_id = ?2 ORDER BY segment_id";

/// A page by primary key: one more than asked, to know whether another page follows.
fn page(c: &Connection, tenant: &str, segment: &str, after: &str, limit: u32) -> StoreResult<MemberPage> {
    let mut st = c.prepare_cached(PAGE)?;
    let mut ids: Vec<String> =
        st.query_map(params![tenant, segment, after, i64::from(limit) + 1], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let more = ids.len() > limit as usize;
    ids.truncate(limit as usize);
    let next = more.then(|| MemberCursor { shard: 0, after: ids.last().cloned() }.encode());
    Ok(MemberPage { contact_ids: ids, next_cursor: next })
}

#[async_trait]
impl Segments for EmbeddedStore {
    async fn put_segment(&self, tenant: &TenantId, segment: &Segment) -> StoreResult<(Segment, bool)> {
        let (tenant, mut segment) = (tenant.to_string(), segment.clone());
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                let old = read_segment(&tx, &tenant, &segment.id)?;
                if let Some((old, _)) = &old {
                    segment.created_at = old.created_at;
                }
                tx.execute(
                    "INSERT INTO segments (tenant_id, id, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, id) DO UPDATE SET data = excluded.data",
                    params![tenant, segment.id, serde_json::to_string(&segment)?],
                )?;
                tx.commit()?;
                Ok((segment, old.is_none()))
            })
            .await
    }

    async fn get_segment(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Segment>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db.read(move |c| Ok(read_segment(c, &tenant, &id)?.map(|(s, _)| s))).await
    }

    async fn list_segments(&self, tenant: &TenantId) -> StoreResult<Vec<Segment>> {
        let tenant = tenant.to_string();
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached("SELECT data FROM segments WHERE tenant_id = ?1 ORDER BY id")?;
                let docs = st.query_map(params![tenant], |r| r.get::<_, String>(0))?;
                let all: StoreResult<Vec<Segment>> =
                    docs.map(|d| -> StoreResult<Segment> { Ok(serde_json::from_str(&d?)?) }).collect();
                all
            })
            .await
    }

    async fn delete_segment(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db
            .write(move |c| {
                // One transaction, so no half-deleted segment is ever seen; a million members hold
                // the writer for about two seconds.
                let tx = c.savepoint()?;
                tx.execute(
                    "DELETE FROM segment_members WHERE tenant_id = ?1 AND segment_id = ?2",
                    params![tenant, id],
                )?;
                let gone = tx.execute("DELETE FROM segments WHERE tenant_id = ?1 AND id = ?2", params![tenant, id])?;
                tx.commit()?;
                Ok(gone > 0)
            })
            .await
    }

    async fn add_members(&self, tenant: &TenantId, segment: &str, ids: &[String]) -> Result<u64, MembersError> {
        let (tenant, segment, ids) = (tenant.to_string(), segment.to_string(), ids.to_vec());
        self.db.write(move |c| Ok(change_members(c, &tenant, &segment, &ids, true))).await?
    }

    async fn remove_members(&self, tenant: &TenantId, segment: &str, ids: &[String]) -> Result<u64, MembersError> {
        let (tenant, segment, ids) = (tenant.to_string(), segment.to_string(), ids.to_vec());
        self.db.write(move |c| Ok(change_members(c, &tenant, &segment, &ids, false))).await?
    }

    async fn list_members(
        &self,
        tenant: &TenantId,
        segment: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage, MembersError> {
        // One ordered index here: a cursor's shard says nothing, its contact id says where.
        let after = cursor.map(MemberCursor::decode).transpose().map_err(MembersError::BadCursor)?;
        let after = after.and_then(|c| c.after).unwrap_or_default();
        let (tenant, segment) = (tenant.to_string(), segment.to_string());
        self.db
            .read(move |c| {
                if read_segment(c, &tenant, &segment)?.is_none() {
                    return Ok(Err(MembersError::NoSegment));
                }
                Ok(Ok(page(c, &tenant, &segment, &after, limit)?))
            })
            .await?
    }

    async fn member_count(&self, tenant: &TenantId, segment: &str) -> Result<u64, MembersError> {
        let (tenant, segment) = (tenant.to_string(), segment.to_string());
        let found = self.db.read(move |c| read_segment(c, &tenant, &segment)).await?;
        found.map(|(_, count)| count).ok_or(MembersError::NoSegment)
    }

    async fn segments_of(&self, tenant: &TenantId, contact_id: &str) -> StoreResult<Vec<String>> {
        let (tenant, contact) = (tenant.to_string(), contact_id.to_string());
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(SEGMENTS_OF)?;
                let ids = st.query_map(params![tenant, contact], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(ids)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, with its `params` bound to placeholder values.
    fn plan(c: &Connection, sql: &str, params: usize) -> String {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = ["t", "s", "c", "10"].into_iter().take(params);
        let rows = st.query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn a_page_and_a_contacts_segments_are_index_ranges_however_many_members() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let page = plan(&c, PAGE, 4);
        assert!(page.contains("USING PRIMARY KEY (tenant_id=? AND segment_id=? AND contact_id>?)"), "{page}");
        assert!(!page.contains("TEMP B-TREE"), "no sort: {page}");
        let of = plan(&c, SEGMENTS_OF, 2);
        assert!(of.contains("USING COVERING INDEX segment_members_contact"), "{of}");
        assert!(!of.contains("TEMP B-TREE"), "no sort: {of}");
    }
}
