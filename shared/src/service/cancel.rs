//! Cancel: `POST /v1/broadcasts/{id}/cancel`. Once answered, no row of the request starts a
//! provider call (rows inside one finish it); every row not sent ends `canceled`, and fan-out
//! makes no more rows.

use crate::domain::{SendRequest, TenantId};
use crate::ports::{Progress, RequestLog};

use super::ServiceError;

/// Cancels the tenant's request `id` (again, harmlessly, if it was); returns it and its progress.
/// The first cancel has the rows it ended emit `message.canceled` (rows a store cancels only when
/// their job claims them emit it there).
pub async fn cancel(
    log: &dyn RequestLog,
    events: Option<&super::events::Events>,
    tenant: &TenantId,
    id: &str,
) -> Result<(SendRequest, Progress), ServiceError> {
    let Some(request) = log.get_request(tenant, id).await? else { return Err(ServiceError::NotFound("send request")) };
    let now = crate::domain::now();
    let at = super::retry_store("canceling a send request", 5, || log.cancel_request(tenant, id, now)).await?;
    if let (Some(ev), true) = (events, at == now) {
        ev.canceled(tenant, id, at).await;
    }
    let progress = log.progress(tenant, id).await?;
    tracing::info!(request_id = %id, "send request canceled");
    Ok((request, progress))
}
