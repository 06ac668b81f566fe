//! Id generation and validation. Generated ids are UUIDv7 (time-ordered) with a typed prefix.

use serde::{Deserialize, Serialize};

use super::limits::MAX_ID;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// How a send request's id is written. Each is unique and time-ordered, and
/// `GET /v1/broadcasts/{request_id}` takes either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdStyle {
    /// Herald's own: `req_` and 32 hex digits.
    #[default]
    Prefixed,
    /// A bare hyphenated UUID (`57d2d4ab-6994-…`), for a vendor whose answers carry one (CSML).
    Uuid,
}

/// A new send request id in `style`.
pub fn new_request_id(style: IdStyle) -> String {
    match style {
        IdStyle::Prefixed => new_id("req"),
        IdStyle::Uuid => uuid::Uuid::now_v7().hyphenated().to_string(),
    }
}

/// Herald's namespace for name-based UUIDs (RFC 9562 version 5).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x3f1c_9a52_6d0e_4b7a_9c41_7e2b_58d6_a0f3);

/// The version 5 UUID of `name` in Herald's namespace: the same name always gives the same UUID,
/// so a dialect can answer stable UUIDs for things Herald names otherwise (CSML's `bot_id`).
pub fn name_uuid(name: &str) -> uuid::Uuid {
    use sha1::{Digest, Sha1};
    let mut hash = Sha1::new();
    hash.update(NAMESPACE.as_bytes());
    hash.update(name.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// A caller-chosen id (templates, campaigns, contacts): 1–128 of `[A-Za-z0-9_.:-]`.
pub fn check_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_ID {
        return Err(format!("must be at most {MAX_ID} characters"));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
        return Err("may contain only letters, digits, '_', '-', '.' and ':'".into());
    }
    Ok(())
}

/// A tenant id: an organisation or bot account. Every stored thing belongs to exactly one.
///
/// Text from outside (a CLI argument, a setting) goes through [`TenantId::parse`]; ids read back
/// from a store or an authenticated key were checked when they were written, so [`TenantId::new`]
/// takes them as they are. Serialised as the bare string, so stored documents and queue bodies
/// read the same as when the id was a `String`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// A tenant id from outside text, under the caller-chosen id rules ([`check_id`]).
    pub fn parse(text: &str) -> Result<TenantId, String> {
        check_id(text)?;
        Ok(TenantId(text.to_string()))
    }

    /// A tenant id known to be valid already (read back from a store, or a constant).
    pub fn new(id: impl Into<String>) -> TenantId {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for TenantId {
    fn from(id: String) -> TenantId {
        TenantId(id)
    }
}

impl From<&str> for TenantId {
    fn from(id: &str) -> TenantId {
        TenantId(id.to_string())
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl From<&TenantId> for String {
    fn from(id: &TenantId) -> String {
        id.0.clone()
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for TenantId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<TenantId> for str {
    fn eq(&self, other: &TenantId) -> bool {
        self == other.0
    }
}

impl PartialEq<TenantId> for &str {
    fn eq(&self, other: &TenantId) -> bool {
        *self == other.0
    }
}

impl PartialEq<TenantId> for String {
    fn eq(&self, other: &TenantId) -> bool {
        *self == other.0
    }
}

/// A field or variable name usable as a `{{placeholder}}`: starts with a letter or `_`.
pub fn check_field_name(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || value.len() > 64 {
        return Err("must be 1–64 of letters, digits and '_', starting with a letter or '_'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_prefixed_and_unique() {
        let a = new_id("req");
        let b = new_id("req");
        assert!(a.starts_with("req_"));
        assert_ne!(a, b);
        assert!(check_id(&a).is_ok());
    }

    #[test]
    fn request_ids_take_the_asked_style_and_name_uuids_are_stable() {
        let u = new_request_id(IdStyle::Uuid);
        assert_eq!(uuid::Uuid::parse_str(&u).unwrap().hyphenated().to_string(), u);
        assert!(check_id(&u).is_ok());
        assert!(new_request_id(IdStyle::Prefixed).starts_with("req_"));
        let bot = name_uuid("bot:acme");
        assert_eq!(bot, name_uuid("bot:acme"));
        assert_ne!(bot, name_uuid("bot:acme2"));
        assert_eq!(bot.get_version_num(), 5);
    }

    #[test]
    fn caller_ids_reject_bad_characters_and_lengths() {
        assert!(check_id("welcome-v2").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
        assert!(check_field_name("first_name").is_ok());
        assert!(check_field_name("1st").is_err());
    }

    #[test]
    fn tenant_ids_parse_under_the_id_rules_and_serialise_as_bare_strings() {
        assert_eq!(TenantId::parse("acme").unwrap(), "acme");
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("has space").is_err());
        assert!(TenantId::parse(&"x".repeat(129)).is_err());
        let id = TenantId::new("acme");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""acme""#);
        assert_eq!(serde_json::from_str::<TenantId>(r#""acme""#).unwrap(), id);
        assert_eq!(id.to_string(), "acme");
    }
}
