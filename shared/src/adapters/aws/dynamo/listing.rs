//! A tenant's send requests newest first (`docs/dynamodb.md`, patterns 30 and 31), without a
//! GSI. Each request gets an index item in the partition of its day and source,
//! `T#{tenant}#REQS#{day}#{source}`, sorted by `{created_at millis}#{id}`; the tenant's *day
//! markers* (`T#{tenant}#REQDAYS`, one item per day and source that has requests) say which of
//! those partitions exist, so a page walks only days that hold requests, however long the
//! stretches between them.
//!
//! A partition per day and source keeps one tenant's new requests within a partition's 1,000
//! writes a second per source, and keeps any partition from growing for ever. The marker is
//! written once per process per tenant, day and source, before the first index item it covers:
//! an index item is never behind a day no marker names.

use std::collections::HashMap;

use super::{key, request_pk, s, text, unavailable, DynamoStore, Item};
use crate::domain::{SendRequest, TenantId};
use crate::ports::{RequestCursor, RequestPage, StoreResult};

/// Day markers one process remembers having written before it forgets them all (a long-lived
/// `herald serve` would otherwise keep one per tenant, day and source for ever).
const MARKERS_KEPT: usize = 10_000;
/// Day markers read per query: one day has one per source, so a page of them covers many days.
const MARKERS_PER_QUERY: i32 = 64;

/// Days, newest first, each with the sources that have requests on it.
type Days = Vec<(String, Vec<String>)>;

/// Which (tenant, day, source) markers this process has written.
pub(super) type Markers = std::sync::Mutex<std::collections::HashSet<(String, String, String)>>;

fn day_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y%m%d").to_string()
}

fn days_pk(tenant: &str) -> String {
    format!("T#{tenant}#REQDAYS")
}

fn listing_pk(tenant: &str, day: &str, source: &str) -> String {
    format!("T#{tenant}#REQS#{day}#{source}")
}

/// Thirteen digits hold every millisecond until the year 2286, so the strings sort as numbers.
fn listing_sk(ms: i64, id: &str) -> String {
    format!("{ms:013}#{id}")
}

fn cursor_of(sk: &str) -> Option<RequestCursor> {
    let (ms, id) = sk.split_once('#')?;
    Some(RequestCursor { created_ms: ms.parse().ok()?, id: id.to_string() })
}

impl DynamoStore {
    /// Lists a request: its day's marker unless this process wrote it already, then its index
    /// item. Both are plain puts, so storing a request again writes the same items again.
    pub(super) async fn put_listing(&self, request: &SendRequest) -> StoreResult<()> {
        let ms = request.created_at.timestamp_millis();
        let (tenant, day, source) = (request.tenant_id.to_string(), day_of(ms), request.source.clone());
        let marker = (tenant.clone(), day.clone(), source.clone());
        let known = self.markers.lock().unwrap_or_else(|p| p.into_inner()).contains(&marker);
        if !known {
            let mut item = key(days_pk(&tenant), format!("{day}#{source}"));
            item.insert("source".into(), s(&source));
            self.put(item).await?;
            let mut markers = self.markers.lock().unwrap_or_else(|p| p.into_inner());
            if markers.len() >= MARKERS_KEPT {
                markers.clear();
            }
            markers.insert(marker);
        }
        let mut item = key(listing_pk(&tenant, &day, &source), listing_sk(ms, &request.id));
        item.insert("id".into(), s(&request.id));
        self.put(item).await
    }

    /// Up to `limit` requests after `cursor`, newest first: the index items of one day at a time
    /// (each of its sources' partitions queried at once, merged by sort key), one more than the
    /// page to tell whether another follows, then the requests themselves in one batch read.
    pub(super) async fn newest_requests(
        &self,
        tenant: &TenantId,
        source: Option<&str>,
        cursor: Option<&RequestCursor>,
        limit: u32,
    ) -> StoreResult<RequestPage> {
        let limit = limit.max(1);
        let want = limit as usize + 1;
        let below = cursor.map(|c| listing_sk(c.created_ms, &c.id));
        // `$` sorts just after `#`: every marker of the cursor's day is below it; `~` is above any day.
        let mut upper = cursor.map(|c| format!("{}$", day_of(c.created_ms))).unwrap_or_else(|| "~".into());
        let mut found: Vec<String> = Vec::new();
        while found.len() < want {
            let Some((days, next_upper)) = self.marker_days(tenant, &upper, source).await? else { break };
            for (day, sources) in days {
                let need = want - found.len();
                let queries = sources.iter().map(|src| self.listing_query(listing_pk(tenant, &day, src), &below, need));
                let mut of_day: Vec<String> = futures::future::try_join_all(queries).await?.concat();
                of_day.sort_unstable_by(|a, b| b.cmp(a));
                of_day.truncate(need);
                found.extend(of_day);
                if found.len() >= want {
                    break;
                }
            }
            upper = next_upper;
        }
        let next_cursor = match found.len() > limit as usize {
            true => found.get(limit as usize - 1).and_then(|sk| cursor_of(sk)),
            false => None,
        };
        found.truncate(limit as usize);
        let requests = self.requests_in_order(tenant, &found).await?;
        Ok(RequestPage { requests, next_cursor })
    }

    /// The days below `upper` that have requests (of `source`, when given), newest first, each
    /// with its sources, and the bound below them; `None` once no day is left. A query cut off
    /// by its limit may end inside a day: that day waits for the next call, whole.
    async fn marker_days(
        &self,
        tenant: &TenantId,
        upper: &str,
        source: Option<&str>,
    ) -> StoreResult<Option<(Days, String)>> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk < :upper")
            .expression_attribute_values(":pk", s(days_pk(tenant)))
            .expression_attribute_values(":upper", s(upper))
            .scan_index_forward(false)
            .limit(MARKERS_PER_QUERY)
            .send()
            .await
            .map_err(unavailable)?;
        let cut = page.last_evaluated_key.is_some_and(|k| !k.is_empty());
        let markers: Vec<(String, String)> = page
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| text(i, "sk")?.split_once('#').map(|(d, s)| (d.to_string(), s.to_string())))
            .collect();
        let Some(last_day) = markers.last().map(|(d, _)| d.clone()) else { return Ok(None) };
        let first_day = markers[0].0.clone();
        // A cut page's last day may have more markers below the cut, unless it is its only day.
        let keep_last = !cut || first_day == last_day;
        let mut days: Days = Vec::new();
        for (day, src) in markers {
            if !keep_last && day == last_day {
                break;
            }
            match days.last_mut() {
                Some((d, list)) if *d == day => list.push(src),
                _ => days.push((day, vec![src])),
            }
        }
        let next_upper = format!("{}#", days.last().map(|(d, _)| d.as_str()).unwrap_or(&last_day));
        for (_, list) in &mut days {
            list.retain(|s| source.is_none_or(|want| want == s.as_str()));
        }
        days.retain(|(_, list)| !list.is_empty());
        Ok(Some((days, next_upper)))
    }

    /// Up to `limit` sort keys of one day-and-source partition below `below`, newest first.
    async fn listing_query(&self, pk: String, below: &Option<String>, limit: usize) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(&pk))
                .scan_index_forward(false)
                .limit((limit - out.len()).min(i32::MAX as usize) as i32)
                .set_exclusive_start_key(start.take());
            q = match below {
                Some(b) => {
                    q.key_condition_expression("pk = :pk AND sk < :below").expression_attribute_values(":below", s(b))
                }
                None => q.key_condition_expression("pk = :pk"),
            };
            let page = q.send().await.map_err(unavailable)?;
            out.extend(page.items.unwrap_or_default().iter().filter_map(|i| text(i, "sk")));
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() && out.len() < limit => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// The requests the index items name, in their order. One whose item is missing (a write
    /// that stopped between its index item and the request) is left out.
    async fn requests_in_order(&self, tenant: &TenantId, sks: &[String]) -> StoreResult<Vec<SendRequest>> {
        let ids: Vec<String> = sks.iter().filter_map(|sk| cursor_of(sk)).map(|c| c.id).collect();
        let keys = ids.iter().map(|id| key(request_pk(tenant, id), "REQ")).collect();
        let mut by_id: HashMap<String, SendRequest> = HashMap::new();
        for item in self.batch_get(keys, None).await? {
            let request: SendRequest = super::doc(&item)?;
            by_id.insert(request.id.clone(), request);
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}
