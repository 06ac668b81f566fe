//! CSV imports on the table (`docs/dynamodb.md`, "Imports"): one item per import in the tenant's
//! partition, its progress moved by a put conditioned on the offset it read, so a chunk applied
//! twice counts once. Each line's contact is written as `upsert_contact` writes one; the members
//! go in batches across the segment's shards.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;

use super::{key, n, tenant_pk, with_doc, DynamoStore, Item, OCC_TRIES};
use crate::domain::ids::new_id;
use crate::domain::import::{merge_line, Chunk, Import, ImportState, LineError, LineOutcome};
use crate::domain::{ContactDraft, TenantId};
use crate::ports::{ContactWriteError, Imports, MembersError, Segments, StoreError, StoreResult};

/// A chunk's bytes here: about 2,000 lines, each a few requests, so that a chunk is written in
/// seconds, well inside the send function's 30 s.
const CHUNK_BYTES: usize = 128 * 1024;

fn import_sk(id: &str) -> String {
    format!("IMPORT#{id}")
}

/// The import's item; `at_byte` mirrors its offset for the conditions.
fn import_item(import: &Import) -> StoreResult<Item> {
    let mut item = with_doc(key(tenant_pk(&import.tenant_id), import_sk(&import.id)), import)?;
    item.insert("at_byte".into(), n(import.offset));
    Ok(item)
}

impl DynamoStore {
    /// One line: its contact found by the first key a contact holds and merged, or created;
    /// `Err` with the reason when its keys belong to two contacts.
    async fn import_line(
        &self,
        tenant: &TenantId,
        draft: &ContactDraft,
    ) -> StoreResult<Result<(String, LineOutcome), String>> {
        let keys = draft.keys();
        for _ in 0..OCC_TRIES {
            let found = self.find_by_any_key(tenant, &keys).await?;
            let found_id = found.as_ref().map(|c| c.id.clone());
            let (write, outcome) = merge_line(found, draft, || new_id("ct"));
            let Some(contact) = write else { return Ok(Ok((found_id.unwrap_or_default(), outcome))) };
            let created = outcome == LineOutcome::Created;
            match self.write_contact(tenant, &contact, created).await {
                Ok(true) => return Ok(Ok((contact.id, outcome))),
                // Another writer moved first (a racing create): the next round finds its contact.
                Ok(false) => {}
                Err(ContactWriteError::KeyTaken { .. }) if created => {}
                Err(ContactWriteError::KeyTaken { field, other }) => {
                    return Ok(Err(format!("{field}: already belongs to contact {other}")))
                }
                Err(ContactWriteError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable("a contact kept changing during an import".into()))
    }

    /// Puts the import if its stored offset is still `offset`; false when it moved.
    async fn put_import_at(&self, import: &Import, offset: u64) -> StoreResult<bool> {
        let values: Item = [(":o".to_string(), n(offset))].into();
        self.put_if(import_item(import)?, "at_byte = :o", values).await
    }
}

/// The chunk's lines (by index) in groups such that lines sharing a key, directly or through
/// other lines, are in one group, each group in file order.
fn key_groups(drafts: &[(u64, ContactDraft)]) -> Vec<Vec<usize>> {
    let mut group_of_key: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, (_, draft)) in drafts.iter().enumerate() {
        let keys: Vec<String> = draft.keys().iter().map(|k| k.as_key()).collect();
        let mut joined: Vec<usize> = keys.iter().filter_map(|k| group_of_key.get(k).copied()).collect();
        joined.sort_unstable();
        joined.dedup();
        let target = match joined.first() {
            Some(&g) => g,
            None => {
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        // Lines bridging two groups merge the later groups into the first.
        for &other in joined.iter().skip(1) {
            let moved = std::mem::take(&mut groups[other]);
            groups[target].extend(moved);
            for g in group_of_key.values_mut().filter(|g| **g == other) {
                *g = target;
            }
        }
        groups[target].push(i);
        groups[target].sort_unstable();
        for k in keys {
            group_of_key.insert(k, target);
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[async_trait]
impl Imports for DynamoStore {
    async fn create_import(&self, import: &Import) -> StoreResult<()> {
        // Created once: an S3 event delivered twice names the same import.
        self.put_if(import_item(import)?, "attribute_not_exists(pk)", Item::new()).await?;
        Ok(())
    }

    async fn get_import(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Import>> {
        self.get_entry(tenant, &import_sk(id)).await
    }

    async fn list_imports(&self, tenant: &TenantId, limit: u32) -> StoreResult<Vec<Import>> {
        let mut all: Vec<Import> = self.list_entries(tenant, "IMPORT#").await?;
        // Newest first by time: an upload's import id is a digest, not time-ordered.
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        all.truncate(limit as usize);
        Ok(all)
    }

    async fn apply_chunk(&self, import: &Import, chunk: Chunk) -> Result<Option<Import>, MembersError> {
        let chunk = &chunk;
        let tenant = &import.tenant_id;
        let Some(mut stored) = self.get_import(tenant, &import.id).await? else { return Ok(None) };
        if stored.state != ImportState::Running || stored.offset != chunk.from {
            return Ok(None);
        }
        self.incarnation(tenant, &stored.segment_id).await?;
        // Lines that may touch the same contact run one after another, in file order: a contact
        // is written without a version check, so two at once could lose one line's fields.
        let groups = key_groups(&chunk.drafts);
        let runs: Vec<_> = groups
            .iter()
            .map(|group| async move {
                let mut out = Vec::with_capacity(group.len());
                for &i in group {
                    out.push((i, self.import_line(tenant, &chunk.drafts[i].1).await));
                }
                out
            })
            .collect();
        let done: Vec<Vec<_>> = futures::stream::iter(runs).buffer_unordered(self.lines_at_once).collect().await;
        let mut results: Vec<_> = done.into_iter().flatten().collect();
        results.sort_by_key(|(i, _)| *i);
        let (mut ids, mut outcomes, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for ((line, _), (_, r)) in chunk.drafts.iter().zip(results) {
            match r? {
                Ok((id, outcome)) => {
                    ids.push(id);
                    outcomes.push(outcome);
                }
                Err(reason) => refused.push(LineError { line: *line, reason }),
            }
        }
        self.add_members(tenant, &stored.segment_id, &ids).await?;
        stored.apply(&chunk.counted(refused), &outcomes, crate::domain::now());
        // A crash before this put repeats the chunk: its lines then count as unchanged.
        match self.put_import_at(&stored, chunk.from).await? {
            true => Ok(Some(stored)),
            false => Ok(None),
        }
    }

    fn chunk_bytes(&self) -> usize {
        CHUNK_BYTES
    }

    async fn fail_import(&self, tenant: &TenantId, id: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        for _ in 0..OCC_TRIES {
            let Some(mut import) = self.get_import(tenant, id).await? else { return Ok(false) };
            if import.state != ImportState::Running {
                return Ok(false);
            }
            let offset = import.offset;
            import.state = ImportState::Failed;
            import.failure = Some(reason.to_string());
            import.updated_at = at;
            import.finished_at = Some(at);
            if self.put_import_at(&import, offset).await? {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!("import {id} kept changing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Phone};

    fn draft(phone: Option<&str>, email: Option<&str>) -> (u64, ContactDraft) {
        let d = ContactDraft {
            phone: phone.map(|p| Phone::parse(p).unwrap()),
            email: email.map(|e| Email::parse(e).unwrap()),
            ..Default::default()
        };
        (0, d)
    }

    #[test]
    fn lines_sharing_a_key_directly_or_through_others_share_a_group() {
        let drafts = vec![
            draft(Some("+14155550101"), None),
            draft(None, Some("a@example.com")),
            draft(Some("+14155550102"), None),
            draft(Some("+14155550101"), Some("a@example.com")),
            draft(Some("+14155550102"), None),
            draft(Some("+14155550103"), None),
        ];
        let mut groups = key_groups(&drafts);
        groups.sort();
        assert_eq!(groups, vec![vec![0, 1, 3], vec![2, 4], vec![5]]);
    }
}
