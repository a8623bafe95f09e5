//! The inbox port in memory.

use std::collections::HashMap;

use super::{Entry, Keyed, State, Twin, check_action_count, check_item_size, check_transaction};
use crate::domain::batch::Chunk;
use crate::domain::progress::{
    ProgressCounts, ProgressDelta, ProgressReading, RATE_SHARDS, window_buckets,
};
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::domain::sync_log::MaterializeCounts;
use crate::ports::inbox::{
    BatchMeta, ChunkKey, Handoff, Inbox, InboxRow, PutBatchOutcome, progress_on_store,
};
use crate::ports::{StoreError, Written};
use crate::store::keys::inbox as k;
use crate::store::rows::inbox as rows;
use crate::store::tables::Table;

/// A chunk's key as DynamoDB holds it: (pk, sk).
type Key = (String, String);

pub(super) type Rows = Keyed<Key, InboxRow>;

/// Import progress as the segments table holds it: totals per (project, audience, shard) with
/// their first and last moment, applied changes per (project, audience, rate shard, bucket).
#[derive(Default)]
pub(super) struct Progress {
    totals: HashMap<(Region, String, i64, u32), ShardTotals>,
    rates: HashMap<(Region, String, i64, u32, i64), u64>,
}

/// A totals shard: its counts, when it was first and last counted.
type ShardTotals = (ProgressCounts, i64, i64);

impl Progress {
    fn add(&mut self, region: Region, project_id: &str, deltas: &[ProgressDelta]) {
        for d in deltas {
            let key = (region, project_id.to_owned(), d.audience_id, d.shard);
            let shard = self
                .totals
                .entry(key)
                .or_insert((ProgressCounts::default(), d.at_ms, 0));
            shard.0 = shard.0.plus(d.counts);
            shard.2 = d.at_ms;
            if let Some(bucket) = d.rate_bucket() {
                let rate_shard = d.shard % RATE_SHARDS;
                let key = (
                    region,
                    project_id.to_owned(),
                    d.audience_id,
                    rate_shard,
                    bucket,
                );
                *self.rates.entry(key).or_default() += d.counts.applied;
            }
        }
    }

    /// The actions a transaction adding these deltas holds (DynamoDB's 100 limit).
    fn actions(deltas: &[ProgressDelta]) -> usize {
        deltas.len() + deltas.iter().filter(|d| d.rate_bucket().is_some()).count()
    }

    fn reading(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        now_ms: i64,
    ) -> ProgressReading {
        let mut out = ProgressReading::default();
        for ((r, p, a, _), (counts, started, last)) in &self.totals {
            if (*r, p.as_str(), *a) == (region, project_id, audience_id) {
                out.counts = out.counts.plus(*counts);
                out.started_ms = Some(out.started_ms.map_or(*started, |s| s.min(*started)));
                out.last_ms = out.last_ms.max(Some(*last));
            }
        }
        let window = window_buckets(now_ms);
        let mut buckets: HashMap<i64, u64> = HashMap::new();
        for ((r, p, a, _, bucket), n) in &self.rates {
            if (*r, p.as_str(), *a) == (region, project_id, audience_id) && window.contains(bucket)
            {
                *buckets.entry(*bucket).or_default() += n;
            }
        }
        out.rate_buckets = buckets.into_iter().collect();
        out
    }
}

fn key_of(key: ChunkKey<'_>) -> Key {
    (
        k::pk(key.project_id, key.message_id, key.chunk),
        k::sk(key.message_id, key.chunk),
    )
}

impl State {
    /// Replaces a row (conditions checked by the caller) and logs the change.
    fn put_inbox_row(&mut self, region: Region, row: InboxRow) -> Result<(), StoreError> {
        let item = rows::item(&row)?;
        let key = key_of(row.key());
        let old = self
            .inbox
            .insert((region, key), row)
            .map(|r| rows::item(&r))
            .transpose()?;
        self.record(
            region,
            Table::Inbox,
            crate::store::rows::keys_of(&item),
            old,
            Some(item),
        );
        Ok(())
    }

    /// Moves one row if `allowed` says its status may move, with the progress it adds: a
    /// conditional UpdateItem, or a transaction when there is progress (which a conflict
    /// cancels whole).
    fn move_inbox_row(
        &mut self,
        region: Region,
        key: ChunkKey<'_>,
        allowed: &[InboxStatus],
        entry: &Entry,
        progress: &[ProgressDelta],
        change: impl FnOnce(&mut InboxRow),
    ) -> Result<Written, StoreError> {
        if !progress.is_empty() {
            check_action_count(1 + Progress::actions(progress))?;
            if matches!(entry, Entry::Conflict) {
                return Err(StoreError::Unavailable(
                    "TransactionCanceledException: TransactionConflict".to_owned(),
                ));
            }
        }
        let Some(row) = self.inbox.get(&(region, key_of(key))) else {
            return Ok(Written::ConditionFailed);
        };
        if !allowed.contains(&row.status) {
            return Ok(Written::ConditionFailed);
        }
        let mut row = row.clone();
        change(&mut row);
        check_item_size(&rows::item(&row)?)?;
        self.put_inbox_row(region, row)?;
        self.progress.add(region, key.project_id, progress);
        Ok(Written::Applied)
    }
}

impl Inbox for Twin {
    async fn put_batch(
        &self,
        region: Region,
        meta: &BatchMeta<'_>,
        chunks: &[Chunk],
    ) -> Result<PutBatchOutcome, StoreError> {
        const CALL: &str = "inbox.put_batch";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let new_rows: Vec<InboxRow> = meta.rows(chunks);
        let progress = progress_on_store(&new_rows);
        let keys: Vec<Key> = new_rows.iter().map(|r| key_of(r.key())).collect();
        let transaction = new_rows.len() > 1 || !progress.is_empty();
        if transaction {
            check_transaction(&keys)?;
            check_action_count(keys.len() + Progress::actions(&progress))?;
        }
        for row in &new_rows {
            check_item_size(&rows::item(row)?)?;
        }
        if transaction && matches!(entry, Entry::Conflict) {
            return Ok(PutBatchOutcome::Contended);
        }
        if keys
            .iter()
            .any(|key| state.inbox.contains_key(&(region, key.clone())))
        {
            return Ok(PutBatchOutcome::Duplicate);
        }
        for row in new_rows {
            state.put_inbox_row(region, row)?;
        }
        state.progress.add(region, meta.project_id, &progress);
        Twin::after_write(
            &entry,
            CALL,
            PutBatchOutcome::Stored {
                chunks: chunks.len(),
            },
        )
    }

    async fn mark_resolved(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        handoff: Handoff<'_>,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "inbox.mark_resolved";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let allowed = [InboxStatus::Received];
        let written =
            state.move_inbox_row(region, key, &allowed, &entry, handoff.progress, |row| {
                row.status = InboxStatus::Resolved;
                row.payload.clear();
                row.changes = Some(handoff.changes.to_vec());
                row.outcomes = Some(handoff.outcomes.clone());
                row.handed_on = Some(handoff.handed_on);
                if let Some(owed) = handoff.owed_after {
                    row.progress = Some(owed.clone());
                }
            })?;
        Twin::after_write(&entry, CALL, written)
    }

    async fn mark_materialized(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        applied: &MaterializeCounts,
        progress: &[ProgressDelta],
    ) -> Result<Written, StoreError> {
        const CALL: &str = "inbox.mark_materialized";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let allowed = [InboxStatus::Resolved];
        let written = state.move_inbox_row(region, key, &allowed, &entry, progress, |row| {
            row.status = InboxStatus::Materialized;
            row.changes = None;
            row.applied = Some(applied.clone());
            row.progress = None;
        })?;
        Twin::after_write(&entry, CALL, written)
    }

    async fn mark_failed(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        from: InboxStatus,
        reason: &str,
        progress: &[ProgressDelta],
    ) -> Result<Written, StoreError> {
        const CALL: &str = "inbox.mark_failed";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let allowed = [from];
        let written = state.move_inbox_row(region, key, &allowed, &entry, progress, |row| {
            row.status = InboxStatus::Failed;
            row.failure = Some(reason.to_owned());
            row.payload.clear();
            row.changes = None;
            row.progress = None;
        })?;
        Twin::after_write(&entry, CALL, written)
    }

    async fn import_progress(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        now_ms: i64,
    ) -> Result<ProgressReading, StoreError> {
        self.pause("inbox.import_progress").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "inbox.import_progress")?;
        Ok(state
            .progress
            .reading(region, project_id, audience_id, now_ms))
    }

    async fn chunk_row(
        &self,
        region: Region,
        key: ChunkKey<'_>,
    ) -> Result<Option<InboxRow>, StoreError> {
        self.pause("inbox.chunk_row").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "inbox.chunk_row")?;
        Ok(state.inbox.get(&(region, key_of(key))).cloned())
    }
}
