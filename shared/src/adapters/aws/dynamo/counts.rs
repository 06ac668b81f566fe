//! Status counters on the table (`docs/dynamodb.md`, "Status counters"). A request's summary is
//! read from a handful of small items, never from its rows:
//!
//! - a *base* item beside the request (`COUNT`), written once with the statuses its rows were
//!   stored in, and moved only by a recount's correction;
//! - [`SHARDS`] *shard* items, each in a partition of its own, that the row writes' moves are
//!   added to: every row write notes its move in memory, and [`RowCounters::flush_counts`] adds
//!   each request's sums to one shard in one `UpdateItem`. A send job of ten rows costs one
//!   counter write, and a busy broadcast spreads them over shards so no partition runs hot.
//!
//! A move is written after its row, not with it (a transaction would double every row write's
//! cost), so a process that dies in between leaves the counters behind the rows. That shows as
//! rows pending forever or a count below zero. [`RequestLog::recount`] repairs it: once the
//! counters have not moved for a while, a recount reads every row, slice by slice in jobs, and
//! adds the difference to the base item, unless a counter moved meanwhile.

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem, Update};
use chrono::Utc;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::{key, n, number, request_pk, unavailable, DynamoStore, Item, TransactError};
use crate::domain::{now, RecipientRow, RecountStep, Status, TenantId};
use crate::ports::{RequestLog, RowCounts, StoreError, StoreResult};
use crate::retry::Policy;

/// Shard items per request: a flush is one write on one of them, so a broadcast takes up to this
/// many times a partition's 1,000 writes a second in counter flushes.
pub(super) const SHARDS: usize = 8;
/// Rows a recount reads per slice (ten `BatchGetItem`s).
const SLICE: u32 = 1_000;
/// Requests whose counters one flush writes at once.
const FLUSHES_AT_ONCE: usize = 8;

/// Moves noted since the last flush, per (tenant, request), with when the first was noted.
pub(super) type Moves = std::sync::Mutex<HashMap<(String, String), (Instant, BTreeMap<Status, i64>)>>;

const BASE_SK: &str = "COUNT";

fn shard_pk(tenant: &str, request_id: &str, shard: usize) -> String {
    format!("{}#C{shard}", request_pk(tenant, request_id))
}

fn base_key(tenant: &str, request_id: &str) -> Item {
    key(request_pk(tenant, request_id), BASE_SK)
}

fn shard_keys(tenant: &str, request_id: &str) -> Vec<Item> {
    (0..SHARDS).map(|i| key(shard_pk(tenant, request_id, i), BASE_SK)).collect()
}

/// The statuses an item counts: every attribute named after one.
fn counted(item: &Item) -> impl Iterator<Item = (Status, i64)> + '_ {
    Status::ALL.into_iter().filter_map(|st| number(item, st.as_str()).map(|v| (st, v)))
}

/// The base and shard items of one request, as read together.
struct Counters {
    base: Option<Item>,
    /// Each shard's last move (ms), 0 for a shard never written.
    shard_at: Vec<i64>,
    sums: BTreeMap<Status, i64>,
}

impl DynamoStore {
    /// Notes a row's move from `from` (`None` for a new row) to `to`, for the next flush.
    pub(super) fn note_move(&self, row: &RecipientRow, from: Option<Status>) {
        if from == Some(row.status) {
            return;
        }
        let mut moves = self.moves.lock().unwrap_or_else(|p| p.into_inner());
        let (_, sums) = moves
            .entry((row.tenant_id.to_string(), row.request_id.clone()))
            .or_insert_with(|| (Instant::now(), BTreeMap::new()));
        if let Some(from) = from {
            *sums.entry(from).or_insert(0) -= 1;
        }
        *sums.entry(row.status).or_insert(0) += 1;
    }

    /// The base item of a new request: its rows' statuses as stored, whether it is an audience
    /// (counted only once fan-out is over) and when. Written only if absent, so storing the same
    /// request again never undoes a correction.
    pub(super) async fn put_count_base(
        &self,
        tenant: &TenantId,
        request_id: &str,
        rows: &[RecipientRow],
        audience: bool,
    ) -> StoreResult<()> {
        let mut item = base_key(tenant, request_id);
        let mut sums: BTreeMap<Status, i64> = BTreeMap::new();
        for r in rows {
            *sums.entry(r.status).or_insert(0) += 1;
        }
        for (st, v) in sums {
            item.insert(st.as_str().into(), n(v));
        }
        item.insert("at".into(), n(now().timestamp_millis()));
        item.insert("audience".into(), AttributeValue::Bool(audience));
        self.put_if(item, "attribute_not_exists(pk)", HashMap::new()).await?;
        Ok(())
    }

    /// Writes the noted moves: one `UpdateItem` per request on one of its shards, each retried
    /// briefly. A move whose write fails is dropped (a recount repairs it); the first failure is
    /// returned once every write has been tried. Moves held longer than a third of the stall time (a
    /// flush skipped on an error path, a process frozen between calls) are dropped too: their
    /// rows may have been recounted meanwhile, and writing them then would count them twice.
    pub(super) async fn flush_moves(&self) -> StoreResult<()> {
        let moves = std::mem::take(&mut *self.moves.lock().unwrap_or_else(|p| p.into_inner()));
        let results: Vec<StoreResult<()>> = futures::stream::iter(moves)
            .map(|((tenant, request_id), (noted, sums))| async move {
                if noted.elapsed() > self.count_stall / 3 {
                    tracing::warn!(%request_id, "status moves held too long; dropped for a recount to repair");
                    return Ok(());
                }
                let sums: Vec<(Status, i64)> = sums.into_iter().filter(|(_, v)| *v != 0).collect();
                if sums.is_empty() {
                    return Ok(());
                }
                let shard = next_shard();
                let write = || self.add_to_shard(&tenant, &request_id, shard, &sums);
                Policy::STORE.run("writing status counts", write, |_| true, StoreError::Unavailable).await.map_err(
                    |e| {
                        tracing::warn!(%request_id, error = %e, "status counts not written; a recount will repair them");
                        e
                    },
                )
            })
            .buffer_unordered(FLUSHES_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn add_to_shard(
        &self,
        tenant: &str,
        request_id: &str,
        shard: usize,
        sums: &[(Status, i64)],
    ) -> StoreResult<()> {
        let mut adds = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(shard_pk(tenant, request_id, shard), BASE_SK)))
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":at", n(Utc::now().timestamp_millis()));
        for (i, (st, v)) in sums.iter().enumerate() {
            adds.push(format!("#s{i} :s{i}"));
            req = req
                .expression_attribute_names(format!("#s{i}"), st.as_str())
                .expression_attribute_values(format!(":s{i}"), n(v));
        }
        req.update_expression(format!("ADD {} SET #at = :at", adds.join(", "))).send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn read_counters(&self, tenant: &str, request_id: &str) -> StoreResult<Counters> {
        let mut keys = shard_keys(tenant, request_id);
        keys.push(base_key(tenant, request_id));
        let base_pk = request_pk(tenant, request_id);
        let mut counters = Counters { base: None, shard_at: vec![0; SHARDS], sums: BTreeMap::new() };
        for item in self.batch_get_with(keys, None, true).await? {
            for (st, v) in counted(&item) {
                *counters.sums.entry(st).or_insert(0) += v;
            }
            let pk = super::text(&item, "pk").unwrap_or_default();
            if pk == base_pk {
                counters.base = Some(item);
            } else if let Some(i) = pk.rsplit_once("#C").and_then(|(_, i)| i.parse::<usize>().ok()) {
                if let Some(at) = counters.shard_at.get_mut(i) {
                    *at = number(&item, "at").unwrap_or(0);
                }
            }
        }
        Ok(counters)
    }

    /// The request's counts from its counters; `None` for a request stored before counters were
    /// kept (no base item), which the caller counts from its rows.
    pub(super) async fn counted_rows(&self, tenant: &TenantId, request_id: &str) -> StoreResult<Option<RowCounts>> {
        let c = self.read_counters(tenant, request_id).await?;
        let Some(base) = &c.base else { return Ok(None) };
        let pending: i64 = c.sums.iter().filter(|(st, _)| st.is_pending()).map(|(_, v)| v).sum();
        let below_zero = c.sums.values().any(|v| *v < 0);
        let last_move = c.shard_at.iter().copied().chain(number(base, "at")).max().unwrap_or(0);
        let (now_ms, stall_ms) = (Utc::now().timestamp_millis(), self.count_stall.as_millis() as i64);
        // Still for the stall time; after a recount with no move since, for as long again as
        // that recount came after the last move, so rows that rightly wait (a retry hours away)
        // are recounted ever more rarely, yet a move lost after a recount is still found.
        let quiet = match number(base, "recounted") {
            Some(r) if r >= last_move => now_ms - r >= (r - last_move).max(stall_ms),
            _ => now_ms - last_move >= stall_ms,
        };
        // A recount is running (a claim older than the stall time is taken over).
        let recounting = number(base, "recount_claim").is_some_and(|c| now_ms - c < stall_ms);
        let fanning_out = base.get("audience").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false)
            && self.progress(tenant, request_id).await?.fanned_out_at.is_none();
        let stalled = (pending > 0 || below_zero) && quiet && !recounting && !fanning_out;
        let by_status = c.sums.into_iter().filter(|(_, v)| *v > 0).map(|(st, v)| (st, v as u64)).collect();
        Ok(Some(RowCounts { by_status, stalled }))
    }

    /// Claims a recount (one per request at a time; a claim not renewed for the stall time may be
    /// taken over, its recount having died) and notes where the counters stand.
    async fn claim_recount(&self, tenant: &TenantId, request_id: &str) -> StoreResult<Option<RecountStep>> {
        let Some(claimed) = self.take_claim(tenant, request_id, None).await? else { return Ok(None) };
        let seen = self.read_counters(tenant, request_id).await?.shard_at;
        Ok(Some(RecountStep { after: None, counts: BTreeMap::new(), claimed, seen, settle_at: None }))
    }

    /// Sets the recount claim to now: a new claim (`held` is `None`) if there is none alive, or a
    /// renewal of the claim `held`. When the claim was taken, `None`.
    async fn take_claim(&self, tenant: &TenantId, request_id: &str, held: Option<i64>) -> StoreResult<Option<i64>> {
        let at = Utc::now().timestamp_millis();
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(base_key(tenant, request_id)))
            .update_expression("SET recount_claim = :at")
            .expression_attribute_values(":at", n(at));
        let req = match held {
            Some(held) => {
                req.condition_expression("recount_claim = :held").expression_attribute_values(":held", n(held))
            }
            None => req
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(recount_claim) OR recount_claim < :expired)",
                )
                .expression_attribute_values(":expired", n(at - self.count_stall.as_millis() as i64)),
        };
        match req.send().await {
            Ok(_) => Ok(Some(at)),
            Err(e) if condition_failed!(e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn recount_step(
        &self,
        tenant: &TenantId,
        request_id: &str,
        step: Option<RecountStep>,
    ) -> StoreResult<Option<RecountStep>> {
        let Some(mut step) = step else { return self.claim_recount(tenant, request_id).await };
        let now_ms = Utc::now().timestamp_millis();
        if let Some(settle_at) = step.settle_at {
            if now_ms < settle_at {
                return Ok(Some(step));
            }
            self.correct(tenant, request_id, &step).await?;
            return Ok(None);
        }
        let Some(claimed) = self.take_claim(tenant, request_id, Some(step.claimed)).await? else {
            tracing::info!(%request_id, "recount claim taken over; this recount stops");
            return Ok(None);
        };
        step.claimed = claimed;
        let rows = self.list_rows(tenant, request_id, step.after, SLICE).await?;
        for r in &rows {
            *step.counts.entry(r.status).or_insert(0) += 1;
        }
        if let Some(last) = rows.last() {
            step.after = Some(last.seq);
        }
        if rows.len() as u32 == SLICE {
            return Ok(Some(step));
        }
        // Every move noted before its row was read is flushed or dropped within a third of the
        // stall time; wait half of it, within the claim's life.
        step.settle_at = Some(Utc::now().timestamp_millis() + self.count_stall.as_millis() as i64 / 2);
        Ok(Some(step))
    }

    /// Adds what the recount found minus what the counters say to the base item, if the recount
    /// still holds its claim and no shard has moved since it began.
    async fn correct(&self, tenant: &TenantId, request_id: &str, step: &RecountStep) -> StoreResult<()> {
        let c = self.read_counters(tenant, request_id).await?;
        if c.shard_at != step.seen {
            tracing::info!(%request_id, "status counters moved during the recount; left as they are");
            return Ok(());
        }
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(base_key(tenant, request_id)))
            .condition_expression("recount_claim = :claim")
            .expression_attribute_values(":claim", n(step.claimed))
            .expression_attribute_values(":now", n(Utc::now().timestamp_millis()));
        let mut adds = Vec::new();
        let mut fixed = 0;
        for (i, st) in Status::ALL.into_iter().enumerate() {
            let found = step.counts.get(&st).copied().unwrap_or(0) as i64;
            let diff = found - c.sums.get(&st).copied().unwrap_or(0);
            if diff != 0 {
                // Rows the counters held at a wrong status, counted once each at their right one.
                fixed += diff.max(0);
                adds.push(format!("#s{i} :s{i}"));
                update = update
                    .expression_attribute_names(format!("#s{i}"), st.as_str())
                    .expression_attribute_values(format!(":s{i}"), n(diff));
            }
        }
        let expression = match adds.is_empty() {
            true => "SET recounted = :now REMOVE recount_claim".to_string(),
            false => format!("SET recounted = :now REMOVE recount_claim ADD {}", adds.join(", ")),
        };
        let mut items = vec![TransactWriteItem::builder()
            .update(update.update_expression(expression).build().map_err(unavailable)?)
            .build()];
        for (i, at) in step.seen.iter().enumerate() {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(shard_pk(tenant, request_id, i), BASE_SK)));
            let check = match at {
                0 => check.condition_expression("attribute_not_exists(pk)"),
                at => check
                    .condition_expression("#at = :at")
                    .expression_attribute_names("#at", "at")
                    .expression_attribute_values(":at", n(at)),
            };
            items.push(TransactWriteItem::builder().condition_check(check.build().map_err(unavailable)?).build());
        }
        match self.transact(items).await {
            Ok(()) => {
                tracing::info!(%request_id, rows_corrected = fixed, "status counters recounted");
                Ok(())
            }
            Err(TransactError::Canceled) => {
                tracing::info!(%request_id, "status counters moved before the recount's correction; left as they are");
                Ok(())
            }
            Err(TransactError::Store(e)) => Err(e),
        }
    }
}

/// The shard the next flush writes: round robin from a start that differs between processes,
/// so concurrent functions spread over the shards.
fn next_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let _ = NEXT.compare_exchange(usize::MAX, rand::random_range(0..SHARDS), Ordering::Relaxed, Ordering::Relaxed);
    NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
}

/// Rows per status of a request stored before counters were kept, read from its rows.
pub(super) fn tally<'a>(statuses: impl Iterator<Item = &'a Item>) -> StoreResult<BTreeMap<Status, u64>> {
    let mut counts = BTreeMap::new();
    for item in statuses {
        let st = super::text(item, "status")
            .and_then(|s| Status::parse(&s))
            .ok_or_else(|| StoreError::Corrupt("row without status".into()))?;
        *counts.entry(st).or_insert(0) += 1;
    }
    Ok(counts)
}
