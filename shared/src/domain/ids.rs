//! Id generation and validation. Generated ids are UUIDv7 (time-ordered) with a typed prefix.

use super::limits::MAX_ID;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
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
    fn caller_ids_reject_bad_characters_and_lengths() {
        assert!(check_id("welcome-v2").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
        assert!(check_field_name("first_name").is_ok());
        assert!(check_field_name("1st").is_err());
    }
}
