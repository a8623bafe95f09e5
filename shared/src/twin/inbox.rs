//! The inbox port in memory.

use super::{Entry, Keyed, State, Twin, check_item_size, check_transaction};
use crate::domain::batch::Chunk;
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::domain::sync_log::MaterializeCounts;
use crate::ports::inbox::{BatchMeta, ChunkKey, Handoff, Inbox, InboxRow, PutBatchOutcome};
use crate::ports::{StoreError, Written};
use crate::store::keys::inbox as k;
use crate::store::rows::inbox as rows;
use crate::store::tables::Table;

/// A chunk's key as DynamoDB holds it: (pk, sk).
type Key = (String, String);

pub(super) type Rows = Keyed<Key, InboxRow>;

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

    /// Moves one row if `allowed` says its status may move, as a conditional UpdateItem.
    fn move_inbox_row(
        &mut self,
        region: Region,
        key: ChunkKey<'_>,
        allowed: &[InboxStatus],
        change: impl FnOnce(&mut InboxRow),
    ) -> Result<Written, StoreError> {
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
        let new_rows: Vec<InboxRow> = chunks.iter().map(|c| meta.row(c, chunks.len())).collect();
        let keys: Vec<Key> = new_rows.iter().map(|r| key_of(r.key())).collect();
        if new_rows.len() > 1 {
            check_transaction(&keys)?;
        }
        for row in &new_rows {
            check_item_size(&rows::item(row)?)?;
        }
        if new_rows.len() > 1 && matches!(entry, Entry::Conflict) {
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
        let written = state.move_inbox_row(region, key, &[InboxStatus::Received], |row| {
            row.status = InboxStatus::Resolved;
            row.payload.clear();
            row.changes = Some(handoff.changes.to_vec());
            row.outcomes = Some(handoff.outcomes.clone());
            row.handed_on = Some(handoff.handed_on);
        })?;
        Twin::after_write(&entry, CALL, written)
    }

    async fn mark_materialized(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        applied: &MaterializeCounts,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "inbox.mark_materialized";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let written = state.move_inbox_row(region, key, &[InboxStatus::Resolved], |row| {
            row.status = InboxStatus::Materialized;
            row.changes = None;
            row.applied = Some(applied.clone());
        })?;
        Twin::after_write(&entry, CALL, written)
    }

    async fn mark_failed(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        reason: &str,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "inbox.mark_failed";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let allowed = [InboxStatus::Received, InboxStatus::Resolved];
        let written = state.move_inbox_row(region, key, &allowed, |row| {
            row.status = InboxStatus::Failed;
            row.failure = Some(reason.to_owned());
            row.payload.clear();
            row.changes = None;
        })?;
        Twin::after_write(&entry, CALL, written)
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
