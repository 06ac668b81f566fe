//! Cancel: `POST /v1/broadcasts/{id}/cancel`. Once answered, no row of the request starts a
//! provider call (rows inside one finish it); every row not sent ends `canceled`, and fan-out
//! makes no more rows.

use crate::domain::{SendRequest, TenantId};
use crate::ports::{Progress, RequestLog};

use super::ServiceError;

/// Cancels the tenant's request `id` (again, harmlessly, if it was); returns it and its progress.
pub async fn cancel(
    log: &dyn RequestLog,
    tenant: &TenantId,
    id: &str,
) -> Result<(SendRequest, Progress), ServiceError> {
    let Some(request) = log.get_request(tenant, id).await? else { return Err(ServiceError::NotFound("send request")) };
    let at = super::retry_store("canceling a send request", 5, || log.cancel_request(tenant, id, crate::domain::now()));
    at.await?;
    let progress = log.progress(tenant, id).await?;
    tracing::info!(request_id = %id, "send request canceled");
    Ok((request, progress))
}
