//! Wiring only: [`Herald`] builds one context per use case (`service::ingest::Ingest`,
//! `service::deliver::Deliver`, `service::callbacks::Callbacks`) from the stores, the queue and
//! the providers, and is the HTTP router's state. Built once at start-up.

#[cfg(feature = "aws")]
pub mod aws;

use std::sync::Arc;

use crate::service::key_cache::CachedKeys;

use crate::ports::{ApiKeys, Catalog, Contacts, Idempotency, JobQueue, Outbox, Requests, WebhookEndpoints};
use crate::ports::{DeadLetters, EventStore, ImportFiles, Imports, Segments};
use crate::providers::config::ProviderConfig;
use crate::providers::Providers;
use crate::service::admission::Admission;
use crate::service::callbacks::Callbacks;
use crate::service::deliver::Deliver;
use crate::service::events::Events;
use crate::service::fanout::FanOut;
use crate::service::imports::ImportRun;
use crate::service::ingest::Ingest;
pub use crate::service::Settings;

/// The router's state: the stores its own endpoints read, and one context per use case.
pub struct Herald {
    pub keys: Arc<dyn ApiKeys>,
    pub catalog: Arc<dyn Catalog>,
    pub contacts: Arc<dyn Contacts>,
    pub requests: Arc<dyn Requests>,
    pub idempotency: Arc<dyn Idempotency>,
    pub webhooks: Arc<dyn WebhookEndpoints>,
    /// Segments and their members (`service::segments`).
    pub segments: Arc<dyn Segments>,
    /// CSV imports (`service::imports`); `None` where the shape has no file store for them.
    pub imports: Option<Arc<ImportRun>>,
    pub queue: Arc<dyn JobQueue>,
    /// Present when the sandbox provider is in use (`GET /v1/outbox`).
    pub outbox: Option<Arc<dyn Outbox>>,
    /// What status callbacks are verified with (app secrets, auth tokens, the public URL).
    pub provider_config: ProviderConfig,
    pub settings: Settings,
    /// Send plans in: `service::ingest::ingest`.
    pub ingest: Ingest,
    /// Jobs out: `service::deliver::deliver` and the workers; shared with `ingest`.
    pub deliver: Arc<Deliver>,
    /// Provider callbacks: `service::callbacks::apply`.
    pub callbacks: Callbacks,
    /// Status events (`/v1/event-subscriptions`); `None` where the shape keeps no subscriptions.
    pub events: Option<Arc<Events>>,
    /// Jobs the queue gave up on (`/v1/dead-letters`); `None` until a shape wires them.
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
}

/// The stores behind a [`Herald`]; one adapter usually implements them all.
pub struct Stores {
    pub keys: Arc<dyn ApiKeys>,
    pub catalog: Arc<dyn Catalog>,
    pub contacts: Arc<dyn Contacts>,
    pub requests: Arc<dyn Requests>,
    pub idempotency: Arc<dyn Idempotency>,
    pub webhooks: Arc<dyn WebhookEndpoints>,
    pub outbox: Option<Arc<dyn Outbox>>,
    pub segments: Arc<dyn Segments>,
    /// CSV imports and where their files wait; `None` where the shape has no file store.
    pub imports: Option<(Arc<dyn Imports>, Arc<dyn ImportFiles>)>,
    /// Status event subscriptions; `None` where the shape keeps none.
    pub events: Option<Arc<dyn EventStore>>,
}

impl Stores {
    /// All ports from one adapter value.
    pub fn from_one<S>(s: Arc<S>) -> Stores
    where
        S: ApiKeys + Catalog + Contacts + Requests + Idempotency + WebhookEndpoints + Outbox + Segments + 'static,
    {
        Stores {
            keys: s.clone(),
            catalog: s.clone(),
            contacts: s.clone(),
            requests: s.clone(),
            idempotency: s.clone(),
            webhooks: s.clone(),
            segments: s.clone(),
            imports: None,
            events: None,
            outbox: Some(s),
        }
    }
}

impl Stores {
    /// With CSV imports, their records and files kept by `s`.
    pub fn with_imports<S: Imports + ImportFiles + 'static>(mut self, s: Arc<S>) -> Stores {
        self.imports = Some((s.clone(), s));
        self
    }

    /// With status event subscriptions kept by `s`.
    pub fn with_events<S: EventStore + 'static>(mut self, s: Arc<S>) -> Stores {
        self.events = Some(s);
        self
    }
}

impl Herald {
    /// Wires the use cases: each context gets the capabilities it needs, from the same stores.
    pub fn new(stores: Stores, queue: Arc<dyn JobQueue>, providers: Providers, settings: Settings) -> Herald {
        let timing = Arc::new(crate::service::schedule::Timing {
            tenants: stores.keys.clone(),
            contacts: stores.contacts.clone(),
        });
        let fan_out = Arc::new(FanOut {
            log: stores.requests.clone(),
            timing: timing.clone(),
            segments: stores.segments.clone(),
            queue: queue.clone(),
            settings: settings.clone(),
        });
        let imports = stores.imports.clone().map(|(imports, files)| {
            Arc::new(ImportRun {
                imports,
                files,
                segments: stores.segments.clone(),
                queue: queue.clone(),
                settings: settings.clone(),
            })
        });
        let events = stores.events.clone().map(|store| {
            let log = stores.requests.clone();
            let form = crate::dialects::twilio::status_callback_form;
            Arc::new(Events::new(store, queue.clone(), log.clone(), log, stores.keys.clone(), form, &settings))
        });
        let deliver = Arc::new(Deliver {
            requests: stores.requests.clone(),
            lookup: stores.requests.clone(),
            log: stores.requests.clone(),
            contacts: stores.contacts.clone(),
            queue: queue.clone(),
            providers,
            settings: settings.clone(),
            cache: Default::default(),
            fan_out,
            imports: imports.clone(),
            events: events.clone(),
        });
        let ingest = Ingest {
            timing,
            requests: stores.requests.clone(),
            rows: stores.requests.clone(),
            catalog: stores.catalog.clone(),
            segments: stores.segments.clone(),
            queue: queue.clone(),
            admission: Admission::new(settings.tenant_limits),
            settings: settings.clone(),
            deliver: deliver.clone(),
        };
        let provider_config = ProviderConfig::default();
        let callbacks = Callbacks {
            lookup: stores.requests.clone(),
            rows: stores.requests.clone(),
            contacts: stores.contacts.clone(),
            inbound_tenant: provider_config.inbound_tenant.clone(),
            events: events.clone(),
        };
        Herald {
            // Every authenticated call reads its key; found keys are trusted for a second.
            keys: Arc::new(CachedKeys::new(stores.keys)),
            catalog: stores.catalog,
            contacts: stores.contacts,
            requests: stores.requests,
            idempotency: stores.idempotency,
            webhooks: stores.webhooks,
            segments: stores.segments,
            imports,
            outbox: stores.outbox,
            queue,
            provider_config,
            settings,
            ingest,
            deliver,
            callbacks,
            events,
            dead_letters: None,
        }
    }

    /// Lists and redrives dead-lettered jobs through `d`.
    pub fn with_dead_letters(mut self, d: Arc<dyn DeadLetters>) -> Herald {
        self.dead_letters = Some(d);
        self
    }

    /// Sets the configuration status callbacks are verified with.
    pub fn with_provider_config(mut self, c: ProviderConfig) -> Herald {
        self.callbacks.inbound_tenant = c.inbound_tenant.clone();
        self.provider_config = c;
        self
    }
}
