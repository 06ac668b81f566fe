//! The sandbox provider: records what would have been sent (the outbox) and sends nothing.
//! Tests tell it to slow down or fail through [`SandboxBehaviour`].

use async_trait::async_trait;
use rand::Rng;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
use crate::ports::{Outbox, OutboxEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailKind {
    /// Answer as a throttled or unavailable provider would: the row is retried.
    #[default]
    Transient,
    /// Answer as a provider refusing the message would: the row fails.
    Permanent,
}

impl std::str::FromStr for FailKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transient" => Ok(FailKind::Transient),
            "permanent" => Ok(FailKind::Permanent),
            _ => Err("must be transient or permanent".into()),
        }
    }
}

/// How the sandbox behaves; changeable while running.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SandboxBehaviour {
    /// Time each send takes.
    pub delay: Duration,
    /// Share of sends (0.0–1.0) that fail.
    pub fail_rate: f64,
    pub fail_kind: FailKind,
}

pub struct Sandbox {
    outbox: Arc<dyn Outbox>,
    behaviour: RwLock<SandboxBehaviour>,
}

impl Sandbox {
    pub fn new(outbox: Arc<dyn Outbox>, behaviour: SandboxBehaviour) -> Sandbox {
        Sandbox { outbox, behaviour: RwLock::new(behaviour) }
    }

    pub fn set_behaviour(&self, b: SandboxBehaviour) {
        *self.behaviour.write().unwrap_or_else(|p| p.into_inner()) = b;
    }

    fn behaviour(&self) -> SandboxBehaviour {
        *self.behaviour.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let b = self.behaviour();
        if !b.delay.is_zero() {
            tokio::time::sleep(b.delay).await;
        }
        if b.fail_rate > 0.0 && rand::rng().random_bool(b.fail_rate.clamp(0.0, 1.0)) {
            return Err(match b.fail_kind {
                FailKind::Transient => ProviderError::Transient {
                    code: Some("sandbox_unavailable".into()),
                    message: "the sandbox was told to fail (transient)".into(),
                    retry_after: None,
                },
                FailKind::Permanent => ProviderError::Permanent {
                    code: Some("sandbox_rejected".into()),
                    message: "the sandbox was told to fail (permanent)".into(),
                },
            });
        }
        let entry = OutboxEntry {
            id: crate::domain::ids::new_id("sbx"),
            tenant_id: m.tenant_id.clone(),
            request_id: m.request_id.clone(),
            row_id: m.row_id.clone(),
            channel: m.channel,
            to: m.to.clone(),
            message: serde_json::to_value(m).unwrap_or_default(),
            created_at: crate::domain::now(),
        };
        self.outbox.record(&entry).await.map_err(|e| ProviderError::Transient {
            code: Some("sandbox_store".into()),
            message: e.to_string(),
            retry_after: None,
        })?;
        Ok(ProviderReceipt { external_message_id: entry.id })
    }

    async fn lookup(&self, m: &OutboundMessage) -> Result<Option<ProviderReceipt>, ProviderError> {
        let found = self.outbox.find_by_row(&m.tenant_id, &m.row_id).await.map_err(|e| ProviderError::Transient {
            code: Some("sandbox_store".into()),
            message: e.to_string(),
            retry_after: None,
        })?;
        Ok(found.map(|e| ProviderReceipt { external_message_id: e.id }))
    }
}
