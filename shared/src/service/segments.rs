//! Segments and their members: create or rename, read, delete, and adding or removing members
//! named by contact id or found (and, when adding, created) by phone, email or channel id.

use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;

use crate::domain::ids::check_id;
use crate::domain::segment::MAX_MEMBERS_PER_CALL;
use crate::domain::{Contact, ContactDraft, FieldErrors, MembersBody, Segment, SegmentBody, TenantId};
use crate::ports::{ContactWriteError, Contacts, MemberPage, MembersError, Segments, StoreError};

use super::ServiceError;

/// Contact reads and writes one call keeps in flight: enough to fill the store's batches.
const IN_FLIGHT: usize = 16;

/// Why a members call was refused.
#[derive(Debug, thiserror::Error)]
pub enum SegmentsError {
    /// A query Herald cannot read (a cursor it did not give out), a `400` as every unreadable
    /// query is. A body that breaks a rule (too many entries, unknown contact ids) is
    /// `Service(Invalid)`, a `422`, as everywhere else.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, fields: FieldErrors },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for SegmentsError {
    fn from(e: StoreError) -> Self {
        SegmentsError::Service(e.into())
    }
}

impl From<MembersError> for SegmentsError {
    fn from(e: MembersError) -> Self {
        match e {
            MembersError::NoSegment => SegmentsError::Service(ServiceError::NotFound("segment")),
            MembersError::BadCursor(why) => {
                let mut fields = FieldErrors::new();
                fields.push("cursor", why.clone());
                SegmentsError::BadRequest { code: "invalid_query", message: format!("cursor {why}"), fields }
            }
            MembersError::Store(s) => s.into(),
        }
    }
}

/// What adding members came to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Added {
    pub added: u64,
    pub already_members: u64,
    pub created_contacts: u64,
    pub member_count: u64,
}

/// `PUT /v1/segments/{id}`: creates the segment or renames it; returns it and whether it is new.
pub async fn put_segment(
    segments: &dyn Segments,
    tenant: &TenantId,
    id: &str,
    body: SegmentBody,
) -> Result<(Segment, bool), ServiceError> {
    let segment = body.validate(id)?;
    Ok(segments.put_segment(tenant, &segment).await?)
}

/// A segment's member count; `None` when the segment is gone.
async fn count(segments: &dyn Segments, tenant: &TenantId, id: &str) -> Result<Option<u64>, StoreError> {
    match segments.member_count(tenant, id).await {
        Ok(n) => Ok(Some(n)),
        Err(MembersError::NoSegment) => Ok(None),
        // Counting takes no cursor.
        Err(MembersError::BadCursor(why)) => Err(StoreError::Corrupt(format!("counting refused a cursor: {why}"))),
        Err(MembersError::Store(e)) => Err(e),
    }
}

/// A segment with its exact member count.
pub async fn get_segment(segments: &dyn Segments, tenant: &TenantId, id: &str) -> Result<(Segment, u64), ServiceError> {
    let segment = segments.get_segment(tenant, id).await?.ok_or(ServiceError::NotFound("segment"))?;
    let n = count(segments, tenant, id).await?.ok_or(ServiceError::NotFound("segment"))?;
    Ok((segment, n))
}

/// Every segment of the tenant with its member count (one count per segment: see
/// docs/dynamodb.md for what that costs on AWS).
pub async fn list_segments(segments: &dyn Segments, tenant: &TenantId) -> Result<Vec<(Segment, u64)>, ServiceError> {
    let mut out = Vec::new();
    for segment in segments.list_segments(tenant).await? {
        // One deleted since it was listed is left out.
        if let Some(n) = count(segments, tenant, &segment.id).await? {
            out.push((segment, n));
        }
    }
    Ok(out)
}

/// Every entry of a members body checked, and how many there are.
struct Checked {
    contact_ids: Vec<String>,
    drafts: Vec<ContactDraft>,
}

fn check_body(body: MembersBody) -> Result<Checked, SegmentsError> {
    let total = body.contact_ids.len() + body.contacts.len();
    let mut errs = FieldErrors::new();
    if total > MAX_MEMBERS_PER_CALL {
        let field = if body.contact_ids.is_empty() { "contacts" } else { "contact_ids" };
        let message =
            format!("at most {MAX_MEMBERS_PER_CALL} entries (contact_ids and contacts together) per call; got {total}");
        // Nothing else is checked: its entries need not be read one by one to be refused.
        errs.push(field, message);
        return Err(SegmentsError::Service(errs.into()));
    }
    if total == 0 {
        errs.push("contact_ids", "give contact_ids, contacts or both");
    }
    for (i, id) in body.contact_ids.iter().enumerate() {
        errs.take(format!("contact_ids[{i}]"), check_id(id));
    }
    let mut drafts = Vec::with_capacity(body.contacts.len());
    for (i, contact) in body.contacts.into_iter().enumerate() {
        match contact.validate() {
            Ok(d) if d.has_key() => drafts.push(d),
            Ok(_) => {
                errs.push(format!("contacts[{i}]"), "give phone, email or a channel user id to find the contact by")
            }
            Err(e) => e.0.into_iter().for_each(|f| errs.push(format!("contacts[{i}].{}", f.field), f.message)),
        }
    }
    errs.finish(Checked { contact_ids: body.contact_ids, drafts }).map_err(|e| SegmentsError::Service(e.into()))
}

/// Refuses the call, naming each `contact_ids[i]` no contact of the tenant has.
async fn require_contacts(contacts: &dyn Contacts, tenant: &TenantId, ids: &[String]) -> Result<(), SegmentsError> {
    // Collected first: a stream over a borrowing closure is not `Send` to the compiler.
    let lookups: Vec<_> = ids
        .iter()
        .map(|id| async move { Ok::<_, StoreError>(contacts.get_contact(tenant, id).await?.is_some()) })
        .collect();
    let found: Vec<bool> = futures::stream::iter(lookups).buffered(IN_FLIGHT).try_collect().await?;
    let mut fields = FieldErrors::new();
    for (i, (id, found)) in ids.iter().zip(found).enumerate() {
        if !found {
            fields.push(format!("contact_ids[{i}]"), format!("no contact with id \"{id}\""));
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    Err(SegmentsError::Service(fields.into()))
}

/// Finds or creates each draft's contact (merging the draft, as `POST /v1/contacts` does).
async fn upsert_all(
    contacts: &dyn Contacts,
    tenant: &TenantId,
    drafts: &[ContactDraft],
) -> Result<Vec<(Contact, bool)>, SegmentsError> {
    let upserts: Vec<_> = drafts.iter().map(|d| contacts.upsert_contact(tenant, d, true)).collect();
    let results: Vec<_> = futures::stream::iter(upserts).buffered(IN_FLIGHT).collect().await;
    let mut out = Vec::with_capacity(results.len());
    let mut errs = FieldErrors::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(c) => out.push(c),
            Err(ContactWriteError::KeyTaken { field, other }) => {
                errs.push(format!("contacts[{i}].{field}"), format!("already belongs to contact {other}"))
            }
            Err(ContactWriteError::Store(e)) => return Err(e.into()),
        }
    }
    errs.finish(out).map_err(|e| SegmentsError::Service(e.into()))
}

/// `POST /v1/segments/{id}/members`: every entry is checked before anything is written.
pub async fn add_members(
    segments: &dyn Segments,
    contacts: &dyn Contacts,
    tenant: &TenantId,
    id: &str,
    body: MembersBody,
) -> Result<Added, SegmentsError> {
    segments.get_segment(tenant, id).await?.ok_or(ServiceError::NotFound("segment"))?;
    let checked = check_body(body)?;
    require_contacts(contacts, tenant, &checked.contact_ids).await?;
    let upserted = upsert_all(contacts, tenant, &checked.drafts).await?;
    let created = upserted.iter().filter(|(_, created)| *created).count() as u64;
    let ids: BTreeSet<String> =
        checked.contact_ids.into_iter().chain(upserted.into_iter().map(|(c, _)| c.id)).collect();
    let ids: Vec<String> = ids.into_iter().collect();
    let added = segments.add_members(tenant, id, &ids).await?;
    let member_count = segments.member_count(tenant, id).await?;
    Ok(Added { added, already_members: ids.len() as u64 - added, created_contacts: created, member_count })
}

/// `DELETE /v1/segments/{id}/members`: contacts named by phone, email or channel id that do not
/// exist are not members, so they are passed over; how many members were removed.
pub async fn remove_members(
    segments: &dyn Segments,
    contacts: &dyn Contacts,
    tenant: &TenantId,
    id: &str,
    body: MembersBody,
) -> Result<u64, SegmentsError> {
    segments.get_segment(tenant, id).await?.ok_or(ServiceError::NotFound("segment"))?;
    let checked = check_body(body)?;
    let finds: Vec<_> = checked.drafts.iter().map(|d| find(contacts, tenant, d)).collect();
    let found: Vec<Option<String>> = futures::stream::iter(finds).buffered(IN_FLIGHT).try_collect().await?;
    let ids: BTreeSet<String> = checked.contact_ids.into_iter().chain(found.into_iter().flatten()).collect();
    Ok(segments.remove_members(tenant, id, &ids.into_iter().collect::<Vec<_>>()).await?)
}

/// The id of the contact holding the draft's first key that any contact holds.
async fn find(contacts: &dyn Contacts, tenant: &TenantId, draft: &ContactDraft) -> Result<Option<String>, StoreError> {
    for key in draft.keys() {
        if let Some(c) = contacts.find_contact(tenant, &key).await? {
            return Ok(Some(c.id));
        }
    }
    Ok(None)
}

/// `GET /v1/segments/{id}/members`: one page, from `cursor`.
pub async fn list_members(
    segments: &dyn Segments,
    tenant: &TenantId,
    id: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<MemberPage, SegmentsError> {
    Ok(segments.list_members(tenant, id, cursor, limit).await?)
}
