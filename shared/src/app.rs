//! [`Herald`]: the ports wired together, shared by the HTTP router, the worker pool and the
//! Lambda handlers. Built once at start-up and borrowed by every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::SendRequest;
use crate::ports::{
    ApiKeys, Catalog, Contacts, Idempotency, JobQueue, Outbox, Requests, StoreResult, WebhookEndpoints,
};
use crate::providers::Providers;

/// Tunables of the send pipeline.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Provider attempts per row before it is `failed`.
    pub max_attempts: u32,
    /// How long a claimed row belongs to its worker. Longer than `provider_timeout`.
    pub lease: Duration,
    /// Longest wait for one provider call.
    pub provider_timeout: Duration,
    /// Backoff between attempts: full jitter over `base * 2^(attempt-1)`, capped.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long a received job stays hidden; longer than `lease`.
    pub visibility: Duration,
    /// Receives after which the queue dead-letters a job (SQS `maxReceiveCount`).
    pub max_receives: u32,
    /// How long an idempotency key and its answer are kept.
    pub idempotency_ttl: Duration,
    /// Whether tenant URLs (webhook endpoints, media links) may point at this machine, over
    /// http too. Only for an operator developing a bot locally: any tenant could otherwise make
    /// Herald post to any local port. Off unless `herald serve --allow-loopback-urls`.
    pub allow_loopback_urls: bool,
    /// What each tenant may send (requests per second, recipients per minute).
    pub tenant_limits: crate::service::admission::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_attempts: 5,
            lease: Duration::from_secs(60),
            provider_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            visibility: Duration::from_secs(90),
            max_receives: 10,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            allow_loopback_urls: false,
            tenant_limits: Default::default(),
        }
    }
}

/// Everything a use case needs.
pub struct Herald {
    pub keys: Arc<dyn ApiKeys>,
    pub catalog: Arc<dyn Catalog>,
    pub contacts: Arc<dyn Contacts>,
    pub requests: Arc<dyn Requests>,
    pub idempotency: Arc<dyn Idempotency>,
    pub webhooks: Arc<dyn WebhookEndpoints>,
    pub queue: Arc<dyn JobQueue>,
    /// Present when the sandbox provider is in use (`GET /v1/outbox`).
    pub outbox: Option<Arc<dyn Outbox>>,
    pub providers: Providers,
    /// What status callbacks are verified with (app secrets, auth tokens, the public URL).
    pub provider_config: crate::providers::config::ProviderConfig,
    pub settings: Settings,
    /// Per-tenant sending allowance.
    pub admission: crate::service::admission::Admission,
    /// Send requests are immutable once stored, so delivery caches them.
    request_cache: Mutex<HashMap<(String, String), Arc<SendRequest>>>,
}

const REQUEST_CACHE_MAX: usize = 512;

/// The stores behind a [`Herald`]; one adapter usually implements them all.
pub struct Stores {
    pub keys: Arc<dyn ApiKeys>,
    pub catalog: Arc<dyn Catalog>,
    pub contacts: Arc<dyn Contacts>,
    pub requests: Arc<dyn Requests>,
    pub idempotency: Arc<dyn Idempotency>,
    pub webhooks: Arc<dyn WebhookEndpoints>,
    pub outbox: Option<Arc<dyn Outbox>>,
}

impl Stores {
    /// All ports from one adapter value.
    pub fn from_one<S>(s: Arc<S>) -> Stores
    where
        S: ApiKeys + Catalog + Contacts + Requests + Idempotency + WebhookEndpoints + Outbox + 'static,
    {
        Stores {
            keys: s.clone(),
            catalog: s.clone(),
            contacts: s.clone(),
            requests: s.clone(),
            idempotency: s.clone(),
            webhooks: s.clone(),
            outbox: Some(s),
        }
    }
}

impl Herald {
    pub fn new(stores: Stores, queue: Arc<dyn JobQueue>, providers: Providers, settings: Settings) -> Herald {
        Herald {
            keys: stores.keys,
            catalog: stores.catalog,
            contacts: stores.contacts,
            requests: stores.requests,
            idempotency: stores.idempotency,
            webhooks: stores.webhooks,
            outbox: stores.outbox,
            queue,
            providers,
            provider_config: Default::default(),
            admission: crate::service::admission::Admission::new(settings.tenant_limits),
            settings,
            request_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the configuration status callbacks are verified with.
    pub fn with_provider_config(mut self, c: crate::providers::config::ProviderConfig) -> Herald {
        self.provider_config = c;
        self
    }

    /// A send request by id, from the cache when possible.
    pub async fn request(&self, tenant: &str, id: &str) -> StoreResult<Option<Arc<SendRequest>>> {
        let key = (tenant.to_string(), id.to_string());
        if let Some(r) = self.request_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(r.clone()));
        }
        let Some(r) = self.requests.get_request(tenant, id).await? else { return Ok(None) };
        let r = Arc::new(r);
        let mut cache = self.request_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REQUEST_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, r.clone());
        Ok(Some(r))
    }
}
