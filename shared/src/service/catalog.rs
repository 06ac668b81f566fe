//! Templates, campaigns and contacts: validation beyond a single body, and create-or-replace.

use crate::domain::{
    ids::check_id, Campaign, CampaignBody, Contact, ContactBody, FieldErrors, Template, TemplateBody, TenantId,
};
use crate::ports::{Catalog, Contacts};

use super::ServiceError;

fn check_path_id(id: &str) -> Result<(), ServiceError> {
    let mut errs = FieldErrors::new();
    errs.take("id", check_id(id));
    errs.finish(()).map_err(ServiceError::Invalid)
}

/// Creates or replaces a template; returns it and whether it is new.
pub async fn put_template(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    id: &str,
    body: TemplateBody,
) -> Result<(Template, bool), ServiceError> {
    check_path_id(id)?;
    let mut errs = FieldErrors::new();
    let mut template = body.validate(id, "", &mut errs).ok_or(ServiceError::Invalid(errs))?;
    let existing = catalog.get_template(tenant, id).await?;
    if let Some(old) = &existing {
        template.created_at = old.created_at;
    }
    catalog.put_template(tenant, &template).await?;
    Ok((template, existing.is_none()))
}

/// Creates or replaces a campaign; every template it lists must exist in the tenant.
pub async fn put_campaign(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    id: &str,
    body: CampaignBody,
) -> Result<(Campaign, bool), ServiceError> {
    let mut campaign = checked_campaign(catalog, tenant, id, body).await?;
    let existing = catalog.get_campaign(tenant, id).await?;
    if let Some(old) = &existing {
        campaign.created_at = old.created_at;
    }
    catalog.put_campaign(tenant, &campaign).await?;
    Ok((campaign, existing.is_none()))
}

/// Creates a campaign only if its id is free: `None` when a campaign has it (that one stays).
/// Racing calls with one id create it once.
pub async fn create_campaign(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    id: &str,
    body: CampaignBody,
) -> Result<Option<Campaign>, ServiceError> {
    let campaign = checked_campaign(catalog, tenant, id, body).await?;
    Ok(catalog.create_campaign(tenant, &campaign).await?.then_some(campaign))
}

/// A campaign body validated, with every template it lists present in the tenant.
async fn checked_campaign(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    id: &str,
    body: CampaignBody,
) -> Result<Campaign, ServiceError> {
    check_path_id(id)?;
    let campaign = body.validate(id)?;
    let mut errs = FieldErrors::new();
    for (i, t) in campaign.template_ids.iter().enumerate() {
        if catalog.get_template(tenant, t).await?.is_none() {
            errs.push(format!("template_ids[{i}]"), format!("no template with id \"{t}\""));
        }
    }
    errs.finish(campaign).map_err(Into::into)
}

/// `PUT /v1/contacts/{id}`: creates or replaces the contact with exactly the given fields.
pub async fn put_contact(
    contacts: &dyn Contacts,
    tenant: &TenantId,
    id: &str,
    body: ContactBody,
) -> Result<(Contact, bool), ServiceError> {
    check_path_id(id)?;
    let draft = body.validate()?;
    let existing = contacts.get_contact(tenant, id).await?;
    let mut contact = Contact::new(id.to_string());
    if let Some(old) = &existing {
        contact.created_at = old.created_at;
        contact.last_inbound = old.last_inbound.clone();
    }
    contact.apply(&draft);
    contacts.put_contact(tenant, &contact).await?;
    Ok((contact, existing.is_none()))
}

/// `POST /v1/contacts`: finds the contact by phone, email or channel id and merges the body into
/// it, or creates one.
pub async fn upsert_contact(
    contacts: &dyn Contacts,
    tenant: &TenantId,
    body: ContactBody,
) -> Result<(Contact, bool), ServiceError> {
    let draft = body.validate()?;
    let probe = {
        let mut c = Contact::new(String::new());
        c.apply(&draft);
        c
    };
    if probe.keys().is_empty() {
        let mut errs = FieldErrors::new();
        errs.push("phone", "give phone, email or a channel user id to find or create the contact by");
        return Err(ServiceError::Invalid(errs));
    }
    Ok(contacts.upsert_contact(tenant, &draft, true).await?)
}
