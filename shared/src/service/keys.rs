//! API keys: at least 128 random bits behind a typed prefix, stored only as SHA-256, compared in
//! constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::TenantId;
use crate::ports::{ApiKeyRecord, ApiKeys, StoreError};

/// Every key Herald generates starts with this, so leaked keys are easy to recognise and scan for.
pub const KEY_PREFIX: &str = "hk_";
/// The tenant `herald serve` creates in an empty store.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new key: `hk_` and 192 random bits as 48 hex digits.
pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The full hash and the lookup index (its first 8 bytes, hex) of a presented key.
pub fn digest(key: &str) -> ([u8; 32], String) {
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    (hash, hex::encode(&hash[..8]))
}

/// A caller-chosen key (`HERALD_API_KEY`): long enough to guess no sooner than a generated one.
pub fn check_key_text(key: &str) -> Result<(), String> {
    if key.len() < 24 || key.len() > 256 {
        return Err("an API key must be 24 to 256 characters".into());
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err("an API key may contain only visible ASCII characters, no spaces".into());
    }
    Ok(())
}

/// Stores `key` (or a new one) for `tenant`, creating the tenant if needed; returns the key.
/// `tenant` is text from outside (an operator's argument), checked here.
pub async fn create_key(keys: &dyn ApiKeys, tenant: &str, key: Option<&str>) -> Result<String, KeyError> {
    let tenant = TenantId::parse(tenant).map_err(|m| KeyError::Invalid(format!("tenant {m}")))?;
    let key = match key {
        Some(k) => {
            check_key_text(k).map_err(KeyError::Invalid)?;
            k.to_string()
        }
        None => generate(),
    };
    keys.ensure_tenant(&tenant).await?;
    let (hash, lookup) = digest(&key);
    if let Some(existing) = keys.find_key(&lookup).await? {
        if existing.tenant_id != tenant {
            return Err(KeyError::Invalid("this key already belongs to another tenant".into()));
        }
        return Ok(key);
    }
    let display_prefix: String = key.chars().take(11).collect();
    keys.insert_key(&ApiKeyRecord {
        lookup,
        hash,
        display_prefix,
        tenant_id: tenant,
        created_at: crate::domain::now(),
        revoked_at: None,
    })
    .await?;
    Ok(key)
}

/// The tenant a presented key belongs to, or `None` for an unknown or revoked key.
pub async fn authenticate(keys: &dyn ApiKeys, presented: &str) -> Result<Option<TenantId>, StoreError> {
    if presented.is_empty() || presented.len() > 256 {
        return Ok(None);
    }
    let (hash, lookup) = digest(presented);
    let Some(record) = keys.find_key(&lookup).await? else { return Ok(None) };
    let equal: bool = record.hash.ct_eq(&hash).into();
    Ok((equal && record.revoked_at.is_none()).then_some(record.tenant_id))
}

/// What `herald serve` does with keys at start-up: seeds `HERALD_API_KEY` into tenant `default`,
/// or, in an empty store, creates tenant `default` with a new key and returns it to be printed.
pub async fn bootstrap(keys: &dyn ApiKeys, seed: Option<&str>) -> Result<Option<String>, KeyError> {
    if let Some(seed) = seed {
        create_key(keys, DEFAULT_TENANT, Some(seed)).await?;
        return Ok(None);
    }
    if keys.count_tenants().await? > 0 {
        return Ok(None);
    }
    Ok(Some(create_key(keys, DEFAULT_TENANT, None).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_carry_192_random_bits() {
        let a = generate();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 48);
        assert_ne!(a, generate());
        assert!(check_key_text(&a).is_ok());
        assert!(check_key_text("short").is_err());
        assert!(check_key_text("has a space in it somewhere, long enough").is_err());
    }

    #[test]
    fn digest_is_sha256() {
        let (hash, lookup) = digest("abc");
        assert_eq!(hex::encode(hash), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(lookup, "ba7816bf8f01cfea");
    }
}
