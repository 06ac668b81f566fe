//! Segments: named sets of a tenant's contacts that a broadcast can address, and the cursor that
//! pages their members.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::catalog::check_text;
use super::contact::ContactBody;
use super::error::FieldErrors;
use super::ids::check_id;
use super::limits::MAX_STRING;
use super::DateTimeUtc;

/// Entries (`contact_ids` plus `contacts`) one call may add or remove.
pub const MAX_MEMBERS_PER_CALL: usize = 10_000;
/// Members one page may hold (`GET /v1/segments/{id}/members?limit=`).
pub const MAX_MEMBER_PAGE: u32 = 1_000;
/// Shards a segment's members are spread over where a store partition takes a bounded write
/// rate (DynamoDB). Part of stored keys: changing it strands existing members.
pub const MEMBER_SHARDS: u16 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub id: String,
    pub name: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// The body of `PUT /v1/segments/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentBody {
    pub name: Option<String>,
}

impl SegmentBody {
    /// The segment this body makes under `id`, stamped now (a store keeps an existing
    /// segment's `created_at`).
    pub fn validate(self, id: &str) -> Result<Segment, FieldErrors> {
        let mut errs = FieldErrors::new();
        errs.take("id", check_id(id));
        match self.name.as_deref().map(str::trim) {
            None | Some("") => errs.push("name", "is required"),
            Some(name) => check_text(&mut errs, "name", Some(name), MAX_STRING),
        }
        let at = super::now();
        let name = self.name.unwrap_or_default().trim().to_string();
        errs.finish(Segment { id: id.to_string(), name, created_at: at, updated_at: at })
    }
}

/// The body of `POST` and `DELETE /v1/segments/{id}/members`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    #[serde(default)]
    pub contact_ids: Vec<String>,
    #[serde(default)]
    pub contacts: Vec<ContactBody>,
}

/// Where a page of members starts: a shard and the last contact id read in it (`None`: the
/// shard's beginning). Shown to callers as an opaque base64url token; stores with one ordered
/// index use shard 0 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCursor {
    pub shard: u16,
    pub after: Option<String>,
}

const CURSOR_VERSION: &str = "m1";

impl MemberCursor {
    pub fn encode(&self) -> String {
        let text = format!("{CURSOR_VERSION}.{}.{}", self.shard, self.after.as_deref().unwrap_or(""));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// Reads back a token [`MemberCursor::encode`] made; anything else is refused with the reason.
    pub fn decode(token: &str) -> Result<MemberCursor, String> {
        let bad = || "is not a cursor this endpoint gave out; start again without one".to_string();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '.');
        let (Some(CURSOR_VERSION), Some(shard), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let shard: u16 = shard.parse().map_err(|_| bad())?;
        if shard >= MEMBER_SHARDS || (!after.is_empty() && check_id(after).is_err()) {
            return Err(bad());
        }
        Ok(MemberCursor { shard, after: (!after.is_empty()).then(|| after.to_string()) })
    }
}

/// A contact's member shard: FNV-1a of its id, so every process and version agrees.
pub fn member_shard(contact_id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in contact_id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(MEMBER_SHARDS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        for c in [MemberCursor { shard: 0, after: None }, MemberCursor { shard: 15, after: Some("ct_1.a:b".into()) }] {
            assert_eq!(MemberCursor::decode(&c.encode()), Ok(c));
        }
        let forged = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        let forged_ones = ["m1.0", "m1.16.x", "m2.0.x", "m1.0.has space"].map(forged);
        for bad in ["", "!!"].map(String::from).iter().chain(&forged_ones) {
            assert!(MemberCursor::decode(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(member_shard("ct_1"), member_shard("ct_1"));
        let used: std::collections::BTreeSet<u16> = (0..200).map(|i| member_shard(&format!("ct_{i}"))).collect();
        assert_eq!(used.len(), MEMBER_SHARDS as usize, "200 ids reach every shard");
    }

    #[test]
    fn a_segment_needs_a_name_and_a_good_id() {
        let errs = SegmentBody { name: Some("  ".into()) }.validate("has space").unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["id", "name"]);
        let long = SegmentBody { name: Some("x".repeat(MAX_STRING + 1)) }.validate("vip").unwrap_err();
        assert_eq!(long.0[0].field, "name");
        assert_eq!(SegmentBody { name: Some(" VIP ".into()) }.validate("vip").unwrap().name, "VIP");
    }
}
