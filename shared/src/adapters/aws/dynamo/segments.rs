//! Segments on the table (`docs/dynamodb.md`, "Segments"). A segment item carries an
//! incarnation id, new at each create, that every member key contains: deleting the segment item
//! orphans its members at once, and a segment created again under the id starts empty. Members
//! are spread over [`MEMBER_SHARDS`] partitions so a large segment is not one hot key.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeSet, HashMap, HashSet};

use super::{contact_pk, doc, key, s, tenant_pk, text, unavailable, with_doc, DynamoStore, Item, GET_BATCH, OCC_TRIES};
use crate::domain::segment::{member_shard, MEMBER_SHARDS};
use crate::domain::{MemberCursor, Segment, TenantId};
use crate::ports::{MemberPage, MembersError, Segments, StoreError, StoreResult};

/// Batch requests one call keeps in flight: its members spread over the shards' partitions.
const STREAMS: usize = 4;
/// Members per stream task (ten `BatchWriteItem` requests).
const WRITE_SLICE: usize = 250;

fn segment_sk(id: &str) -> String {
    format!("SEGMENT#{id}")
}

fn member_pk(tenant: &str, segment: &str, incarnation: &str, shard: u16) -> String {
    format!("T#{tenant}#SEG#{segment}#{incarnation}#M#{shard:02}")
}

fn member_key(tenant: &str, segment: &str, incarnation: &str, contact: &str) -> Item {
    key(member_pk(tenant, segment, incarnation, member_shard(contact)), contact)
}

/// The contact's reverse item: which segment (and which incarnation of it) it was added to.
fn reverse_key(tenant: &str, segment: &str, contact: &str) -> Item {
    key(contact_pk(tenant, contact), format!("SEG#{segment}"))
}

fn put(item: Item) -> StoreResult<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build().map_err(unavailable)?)
        .build())
}

fn delete(key: Item) -> StoreResult<WriteRequest> {
    let del = DeleteRequest::builder().set_key(Some(key)).build().map_err(unavailable)?;
    Ok(WriteRequest::builder().delete_request(del).build())
}

fn distinct(ids: &[String]) -> Vec<String> {
    ids.iter().collect::<BTreeSet<_>>().into_iter().cloned().collect()
}

impl DynamoStore {
    /// The segment's live incarnation, read strongly (a delete must be seen at once).
    pub(super) async fn incarnation(&self, tenant: &TenantId, segment: &str) -> Result<String, MembersError> {
        let item = self.get(tenant_pk(tenant), &segment_sk(segment), true).await?;
        item.and_then(|i| text(&i, "inc")).ok_or(MembersError::NoSegment)
    }

    /// Which of `ids` are members now (strongly consistent `BatchGetItem`s of their keys).
    async fn present(
        &self,
        tenant: &TenantId,
        segment: &str,
        inc: &str,
        ids: &[String],
    ) -> StoreResult<HashSet<String>> {
        let keys: Vec<Item> = ids.iter().map(|id| member_key(tenant, segment, inc, id)).collect();
        let reads: Vec<_> = keys.chunks(GET_BATCH).map(|k| self.batch_get_with(k.to_vec(), None, true)).collect();
        let found: Vec<Vec<Item>> = futures::stream::iter(reads).buffer_unordered(STREAMS).try_collect().await?;
        Ok(found.iter().flatten().filter_map(|i| text(i, "sk")).collect())
    }

    /// Sends the writes as a few concurrent streams of `BatchWriteItem`s.
    async fn write_spread(&self, writes: Vec<WriteRequest>) -> StoreResult<()> {
        let slices: Vec<Vec<WriteRequest>> = writes.chunks(WRITE_SLICE).map(<[WriteRequest]>::to_vec).collect();
        let sends: Vec<_> = slices.into_iter().map(|w| self.batch_write(w)).collect();
        futures::stream::iter(sends).buffer_unordered(STREAMS).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    /// Up to `limit` member ids of one shard after `after`, and whether the shard may hold more.
    async fn shard_page(&self, pk: String, after: Option<&str>, limit: u32) -> StoreResult<(Vec<String>, bool)> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk))
            .limit(limit as i32)
            .consistent_read(true);
        q = match after {
            Some(a) => {
                q.key_condition_expression("pk = :pk AND sk > :after").expression_attribute_values(":after", s(a))
            }
            None => q.key_condition_expression("pk = :pk"),
        };
        let out = q.send().await.map_err(unavailable)?;
        let ids = out.items.unwrap_or_default().iter().filter_map(|i| text(i, "sk")).collect();
        Ok((ids, out.last_evaluated_key.is_some_and(|k| !k.is_empty())))
    }

    /// Writes `segment` over the item last read (`seen`: its incarnation) or, with none, as a new
    /// item with a new incarnation; `false` when another writer moved first.
    async fn write_segment(&self, tenant: &TenantId, segment: &Segment, seen: Option<&str>) -> StoreResult<bool> {
        let mut item = with_doc(key(tenant_pk(tenant), segment_sk(&segment.id)), segment)?;
        let inc = seen.map(str::to_string).unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        item.insert("inc".into(), s(&inc));
        match seen {
            Some(old) => self.put_if(item, "inc = :seen", HashMap::from([(":seen".to_string(), s(old))])).await,
            None => self.put_if(item, "attribute_not_exists(pk)", HashMap::new()).await,
        }
    }
}

#[async_trait]
impl Segments for DynamoStore {
    async fn put_segment(&self, tenant: &TenantId, segment: &Segment) -> StoreResult<(Segment, bool)> {
        for _ in 0..OCC_TRIES {
            let mut segment = segment.clone();
            let old = self.get(tenant_pk(tenant), &segment_sk(&segment.id), true).await?;
            let seen = old.as_ref().and_then(|i| text(i, "inc"));
            if let Some(old) = &old {
                segment.created_at = doc::<Segment>(old)?.created_at;
            }
            if self.write_segment(tenant, &segment, seen.as_deref()).await? {
                return Ok((segment, old.is_none()));
            }
        }
        Err(StoreError::Unavailable(format!("segment {} kept changing", segment.id)))
    }

    async fn get_segment(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Segment>> {
        self.get(tenant_pk(tenant), &segment_sk(id), true).await?.map(|i| doc(&i)).transpose()
    }

    async fn list_segments(&self, tenant: &TenantId) -> StoreResult<Vec<Segment>> {
        let mut all: Vec<Segment> =
            self.query_prefix(tenant_pk(tenant), "SEGMENT#").await?.iter().map(doc).collect::<StoreResult<_>>()?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn delete_segment(&self, tenant: &TenantId, id: &str) -> StoreResult<bool> {
        // The members stay behind under the dead incarnation, unreachable (docs/dynamodb.md).
        self.delete(tenant_pk(tenant), &segment_sk(id)).await
    }

    async fn add_members(&self, tenant: &TenantId, segment: &str, ids: &[String]) -> Result<u64, MembersError> {
        let inc = self.incarnation(tenant, segment).await?;
        let ids = distinct(ids);
        let present = self.present(tenant, segment, &inc, &ids).await?;
        let mut writes = Vec::new();
        for id in ids.iter().filter(|id| !present.contains(*id)) {
            writes.push(put(member_key(tenant, segment, &inc, id))?);
            let mut reverse = reverse_key(tenant, segment, id);
            reverse.insert("inc".into(), s(&inc));
            writes.push(put(reverse)?);
        }
        let added = (writes.len() / 2) as u64;
        self.write_spread(writes).await?;
        Ok(added)
    }

    async fn remove_members(&self, tenant: &TenantId, segment: &str, ids: &[String]) -> Result<u64, MembersError> {
        let inc = self.incarnation(tenant, segment).await?;
        let present = self.present(tenant, segment, &inc, &distinct(ids)).await?;
        let mut writes = Vec::new();
        for id in &present {
            writes.push(delete(member_key(tenant, segment, &inc, id))?);
            writes.push(delete(reverse_key(tenant, segment, id))?);
        }
        self.write_spread(writes).await?;
        Ok(present.len() as u64)
    }

    async fn list_members(
        &self,
        tenant: &TenantId,
        segment: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage, MembersError> {
        let limit = limit.max(1);
        let start = cursor.map(MemberCursor::decode).transpose().map_err(MembersError::BadCursor)?;
        let MemberCursor { shard: mut at, mut after } = start.unwrap_or(MemberCursor { shard: 0, after: None });
        let inc = self.incarnation(tenant, segment).await?;
        let mut ids = Vec::new();
        while at < MEMBER_SHARDS {
            let want = limit - ids.len() as u32;
            let (got, more) = self.shard_page(member_pk(tenant, segment, &inc, at), after.as_deref(), want).await?;
            after = got.last().cloned().or(after);
            ids.extend(got);
            if ids.len() as u32 == limit {
                // Where the next page starts: further in this shard, or at the next one's start.
                let next = match more {
                    true => Some(MemberCursor { shard: at, after }),
                    false => (at + 1 < MEMBER_SHARDS).then_some(MemberCursor { shard: at + 1, after: None }),
                };
                return Ok(MemberPage { contact_ids: ids, next_cursor: next.map(|c| c.encode()) });
            }
            (at, after) = (at + 1, None);
        }
        Ok(MemberPage { contact_ids: ids, next_cursor: None })
    }

    async fn member_count(&self, tenant: &TenantId, segment: &str) -> Result<u64, MembersError> {
        let inc = self.incarnation(tenant, segment).await?;
        let pks: Vec<String> = (0..MEMBER_SHARDS).map(|shard| member_pk(tenant, segment, &inc, shard)).collect();
        let counts = pks.into_iter().map(|pk| self.count_partition(pk, true));
        let counts: Vec<u64> = futures::stream::iter(counts).buffer_unordered(STREAMS).try_collect().await?;
        Ok(counts.into_iter().sum())
    }

    async fn segments_of(&self, tenant: &TenantId, contact_id: &str) -> StoreResult<Vec<String>> {
        let reverse = self.query_prefix(contact_pk(tenant, contact_id), "SEG#").await?;
        let claimed: HashMap<String, String> = reverse
            .iter()
            .filter_map(|i| Some((text(i, "sk")?.strip_prefix("SEG#")?.to_string(), text(i, "inc")?)))
            .collect();
        // A reverse item counts only while its segment lives in the incarnation it names.
        let keys = claimed.keys().map(|seg| key(tenant_pk(tenant), segment_sk(seg))).collect();
        let live = self.batch_get_with(keys, None, true).await?;
        let mut ids: Vec<String> = live
            .iter()
            .filter_map(|i| {
                let seg = text(i, "sk")?.strip_prefix("SEGMENT#")?.to_string();
                (claimed.get(&seg) == text(i, "inc").as_ref()).then_some(seg)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}
