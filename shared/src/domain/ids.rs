//! Id generation and validation. Generated ids are UUIDv7 (time-ordered) with a typed prefix.

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
}
