//! API keys read once a second instead of on every request: every authenticated call looked its
//! key up in the store. [`CachedKeys`] wraps any [`ApiKeys`] port and keeps the keys it found for
//! [`CachedKeys::TTL`]. A revoke made through it clears the key at once; a revoke made by another
//! process (`herald keys revoke` on the same store) takes effect within the TTL. Unknown keys are
//! never cached, so a key created elsewhere works at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::TenantId;
use crate::ports::{ApiKeyRecord, ApiKeys, StoreResult};

/// Entries kept at most; past it the cache starts over (a flood of distinct valid keys is rare).
const MAX_ENTRIES: usize = 10_000;

pub struct CachedKeys {
    inner: Arc<dyn ApiKeys>,
    found: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
    ttl: Duration,
}

impl CachedKeys {
    /// How long a found key is trusted without asking the store again.
    pub const TTL: Duration = Duration::from_secs(1);

    pub fn new(inner: Arc<dyn ApiKeys>) -> CachedKeys {
        CachedKeys::with_ttl(inner, CachedKeys::TTL)
    }

    pub fn with_ttl(inner: Arc<dyn ApiKeys>, ttl: Duration) -> CachedKeys {
        CachedKeys { inner, found: Mutex::new(HashMap::new()), ttl }
    }

    fn cached(&self, lookup: &str) -> Option<ApiKeyRecord> {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found.get(lookup).filter(|(_, at)| at.elapsed() < self.ttl).map(|(r, _)| r.clone())
    }

    fn forget(&self, lookup: &str) {
        self.found.lock().unwrap_or_else(|p| p.into_inner()).remove(lookup);
    }
}

#[async_trait]
impl ApiKeys for CachedKeys {
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        self.inner.ensure_tenant(tenant).await
    }

    async fn count_tenants(&self) -> StoreResult<u64> {
        self.inner.count_tenants().await
    }

    async fn get_settings(&self, tenant: &TenantId) -> StoreResult<crate::ports::TenantSettings> {
        self.inner.get_settings(tenant).await
    }

    async fn put_settings(&self, tenant: &TenantId, settings: &crate::ports::TenantSettings) -> StoreResult<()> {
        self.inner.put_settings(tenant, settings).await
    }

    async fn insert_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        self.forget(&key.lookup);
        self.inner.insert_key(key).await
    }

    async fn find_key(&self, lookup: &str) -> StoreResult<Option<ApiKeyRecord>> {
        if let Some(r) = self.cached(lookup) {
            return Ok(Some(r));
        }
        let found = self.inner.find_key(lookup).await?;
        if let Some(r) = &found {
            let mut cache = self.found.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(lookup.to_string(), (r.clone(), Instant::now()));
        }
        Ok(found)
    }

    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyRecord>> {
        self.inner.list_keys(tenant).await
    }

    async fn revoke_key(&self, tenant: &TenantId, lookup: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        // Forget first and again after: a lookup racing the revoke must not cache the old record.
        self.forget(lookup);
        let revoked = self.inner.revoke_key(tenant, lookup, at).await;
        self.forget(lookup);
        revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An in-memory key store that counts lookups.
    #[derive(Default)]
    struct Keys {
        records: Mutex<HashMap<String, ApiKeyRecord>>,
        lookups: AtomicU32,
    }

    #[async_trait]
    impl ApiKeys for Keys {
        async fn ensure_tenant(&self, _: &TenantId) -> StoreResult<bool> {
            Ok(false)
        }
        async fn count_tenants(&self) -> StoreResult<u64> {
            Ok(1)
        }
        async fn insert_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
            self.records.lock().unwrap().insert(key.lookup.clone(), key.clone());
            Ok(())
        }
        async fn find_key(&self, lookup: &str) -> StoreResult<Option<ApiKeyRecord>> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            Ok(self.records.lock().unwrap().get(lookup).cloned())
        }
        async fn list_keys(&self, _: &TenantId) -> StoreResult<Vec<ApiKeyRecord>> {
            Ok(self.records.lock().unwrap().values().cloned().collect())
        }
        async fn revoke_key(&self, _: &TenantId, lookup: &str, at: DateTime<Utc>) -> StoreResult<bool> {
            let mut r = self.records.lock().unwrap();
            Ok(r.get_mut(lookup).map(|k| k.revoked_at = Some(at)).is_some())
        }
        async fn get_settings(&self, _: &TenantId) -> StoreResult<crate::ports::TenantSettings> {
            Ok(Default::default())
        }
        async fn put_settings(&self, _: &TenantId, _: &crate::ports::TenantSettings) -> StoreResult<()> {
            Ok(())
        }
    }

    fn record(lookup: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            lookup: lookup.into(),
            hash: [7; 32],
            display_prefix: "hk_1234".into(),
            tenant_id: "acme".into(),
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    #[tokio::test]
    async fn a_found_key_is_read_from_the_store_once_per_ttl() {
        let store = Arc::new(Keys::default());
        let keys = CachedKeys::with_ttl(store.clone(), Duration::from_millis(200));
        keys.insert_key(&record("k1")).await.unwrap();
        for _ in 0..100 {
            assert!(keys.find_key("k1").await.unwrap().is_some());
        }
        assert_eq!(store.lookups.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        keys.find_key("k1").await.unwrap();
        assert_eq!(store.lookups.load(Ordering::Relaxed), 2, "past the TTL the store is asked again");
    }

    #[tokio::test]
    async fn a_revoke_through_the_cache_takes_effect_at_once() {
        let store = Arc::new(Keys::default());
        let keys = CachedKeys::with_ttl(store.clone(), Duration::from_secs(3600));
        keys.insert_key(&record("k1")).await.unwrap();
        assert!(keys.find_key("k1").await.unwrap().unwrap().revoked_at.is_none());
        assert!(keys.revoke_key(&TenantId::new("acme"), "k1", Utc::now()).await.unwrap());
        assert!(keys.find_key("k1").await.unwrap().unwrap().revoked_at.is_some());
    }

    #[tokio::test]
    async fn unknown_keys_are_not_cached() {
        let store = Arc::new(Keys::default());
        let keys = CachedKeys::with_ttl(store.clone(), Duration::from_secs(3600));
        assert!(keys.find_key("k1").await.unwrap().is_none());
        // Created by another process, straight in the store.
        store.insert_key(&record("k1")).await.unwrap();
        assert!(keys.find_key("k1").await.unwrap().is_some());
    }
}
