//! The inbox port: membership batches stored durably before mParticle gets its answer, and
//! each chunk's way through the pipeline (`received → resolved → materialized`, or `failed`).

use std::future::Future;

use crate::domain::batch::Chunk;
use crate::domain::progress::{self, Owed, ProgressDelta, ProgressReading};
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::domain::sync_log::{MaterializeCounts, ResolveOutcomes};
use crate::domain::ways::Way;
use crate::ports::{StoreError, Written};

/// Inbox rows (and so the sync log) are kept this long.
pub const INBOX_RETENTION_SECS: i64 = 30 * 24 * 3600;

/// An inbox row: a stored chunk of a batch, as the pipeline's stages read it (from a stream
/// record's new image, or from the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    pub project_id: String,
    pub message_id: String,
    pub chunk: u32,
    pub message_ts: i64,
    /// When authorize stored the batch (ms).
    pub received_ms: i64,
    pub status: InboxStatus,
    /// The chunk's profiles (LZ4-compressed); dropped once resolved.
    pub payload: Vec<u8>,
    /// The membership changes resolve handed on (compressed); dropped once materialized.
    pub changes: Option<Vec<u8>>,
    /// Chunks of its request, and profiles in this one.
    pub chunk_count: u32,
    pub profile_count: u32,
    /// When DynamoDB's time to live removes it (epoch seconds).
    pub expires_at: Option<i64>,
    /// What resolve made of its profiles, and the changes it handed on by action.
    pub outcomes: Option<ResolveOutcomes>,
    pub handed_on: Option<ChangeCounts>,
    /// What materialize made of the changes.
    pub applied: Option<MaterializeCounts>,
    /// Why it could never be processed (status `failed`).
    pub failure: Option<String>,
    /// The way it goes: the inbox stream (live) or the bulk queue.
    pub way: Way,
    /// What it still owes each audience's import progress (`domain::progress`): on a bulk row
    /// whose batch is counted, until it is materialized or failed.
    pub progress: Option<Owed>,
}

impl InboxRow {
    /// What resolving it now, handing on changes of these audiences, adds to import progress,
    /// and what it owes after (none for an uncounted row).
    pub fn progress_on_resolve(
        &self,
        handed: impl IntoIterator<Item = i64>,
        at_ms: i64,
    ) -> (Vec<ProgressDelta>, Option<Owed>) {
        match &self.progress {
            Some(owed) => {
                let handed = progress::owed_of(handed);
                let (deltas, after) = progress::on_resolve(&self.message_id, owed, &handed, at_ms);
                (deltas, Some(after))
            }
            None => (Vec::new(), None),
        }
    }

    /// What materializing it now adds to import progress.
    pub fn progress_on_materialize(&self, at_ms: i64) -> Vec<ProgressDelta> {
        (self.progress.as_ref())
            .map(|owed| progress::on_materialize(&self.message_id, owed, at_ms))
            .unwrap_or_default()
    }

    /// What failing it now (from its present status) adds to import progress.
    pub fn progress_on_fail(&self, at_ms: i64) -> Vec<ProgressDelta> {
        (self.progress.as_ref())
            .map(|owed| progress::on_fail(&self.message_id, owed, at_ms))
            .unwrap_or_default()
    }

    /// Its key.
    pub fn key(&self) -> ChunkKey<'_> {
        ChunkKey {
            project_id: &self.project_id,
            message_id: &self.message_id,
            chunk: self.chunk,
        }
    }
}

/// Which chunk of which message of which project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkKey<'a> {
    pub project_id: &'a str,
    pub message_id: &'a str,
    pub chunk: u32,
}

/// Membership changes by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub add: u64,
    pub delete: u64,
}

/// What a batch is stored under.
#[derive(Debug, Clone)]
pub struct BatchMeta<'a> {
    pub project_id: &'a str,
    pub message_id: &'a str,
    /// The message's own `timestamp_ms`: the ordering key of its changes.
    pub message_ts: i64,
    pub received_ms: i64,
    pub way: Way,
}

impl BatchMeta<'_> {
    /// The row a chunk of this batch is stored as.
    pub fn row(&self, chunk: &Chunk, chunk_count: usize) -> InboxRow {
        InboxRow {
            project_id: self.project_id.to_owned(),
            message_id: self.message_id.to_owned(),
            chunk: chunk.index,
            message_ts: self.message_ts,
            received_ms: self.received_ms,
            status: InboxStatus::Received,
            payload: chunk.payload.clone(),
            changes: None,
            chunk_count: chunk_count as u32,
            profile_count: chunk.profile_count,
            expires_at: Some(self.received_ms / 1000 + INBOX_RETENTION_SECS),
            outcomes: None,
            handed_on: None,
            applied: None,
            failure: None,
            way: self.way,
            progress: None,
        }
    }

    /// The rows a batch's chunks are stored as: a bulk batch whose progress can be counted
    /// (`progress::trackable`) carries what each chunk owes each audience.
    pub fn rows(&self, chunks: &[Chunk]) -> Vec<InboxRow> {
        let tracked =
            self.way == Way::Bulk && progress::trackable(chunks.iter().map(|c| &c.audiences));
        chunks
            .iter()
            .map(|c| InboxRow {
                progress: tracked.then(|| c.audiences.clone()),
                ..self.row(c, chunks.len())
            })
            .collect()
    }
}

/// What storing these rows (one batch's) adds to import progress.
pub fn progress_on_store(rows: &[InboxRow]) -> Vec<ProgressDelta> {
    match rows.first() {
        Some(first) => progress::on_store(
            &first.message_id,
            first.received_ms,
            rows.iter().filter_map(|r| r.progress.as_ref()),
        ),
        None => Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutBatchOutcome {
    Stored {
        chunks: usize,
    },
    /// This message id was stored before; nothing new was written.
    Duplicate,
    /// A concurrent delivery of the same message held one of its keys (a transaction conflict,
    /// or a throttled action): nothing was written, the same call may succeed after a backoff.
    Contended,
}

/// What resolve hands on to materialize.
#[derive(Debug, Clone, Copy)]
pub struct Handoff<'a> {
    /// The membership changes, compressed.
    pub changes: &'a [u8],
    pub outcomes: &'a ResolveOutcomes,
    pub handed_on: ChangeCounts,
    /// What the chunk owes import progress after (a counted bulk chunk), and what resolving it
    /// adds there, written with the status change.
    pub owed_after: Option<&'a Owed>,
    pub progress: &'a [ProgressDelta],
}

/// The inbox table.
pub trait Inbox: Send + Sync {
    /// Stores every chunk of a batch or none of them, idempotently on the message id: one
    /// conditional put (one chunk) or one transaction of conditional puts (several), with the
    /// import progress a counted bulk batch adds (`progress_on_store`). A condition failure means
    /// this message was stored before: `Duplicate`, and nothing is written.
    fn put_batch(
        &self,
        region: Region,
        meta: &BatchMeta<'_>,
        chunks: &[Chunk],
    ) -> impl Future<Output = Result<PutBatchOutcome, StoreError>> + Send;

    /// Moves a chunk from `received` to `resolved`, with its changes and outcome counts, and
    /// drops its payload (nothing needs it any more; a replayed INSERT carries its own).
    /// `ConditionFailed`: the row had moved on already (a replayed stream record).
    fn mark_resolved(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        handoff: Handoff<'_>,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Moves a chunk from `resolved` to `materialized` with what materialization did, and drops
    /// its changes; adds `progress` (one transaction when there is any). `ConditionFailed`: the
    /// row had moved on already, and nothing is written.
    fn mark_materialized(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        applied: &MaterializeCounts,
        progress: &[ProgressDelta],
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Marks a chunk that can never be processed as `failed`, with the reason, if it is still
    /// `from` (`received` or `resolved`: what it owes progress depends on it); adds `progress`
    /// (one transaction when there is any). `ConditionFailed`: the row had moved on already, and
    /// nothing is written.
    fn mark_failed(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        from: InboxStatus,
        reason: &str,
        progress: &[ProgressDelta],
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// An audience's import progress: its totals summed over their shards and the rate buckets
    /// of the minute before `now_ms`, as of one point in time.
    fn import_progress(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<ProgressReading, StoreError>> + Send;

    /// One chunk's row, strongly consistent.
    fn chunk_row(
        &self,
        region: Region,
        key: ChunkKey<'_>,
    ) -> impl Future<Output = Result<Option<InboxRow>, StoreError>> + Send;
}

/// Marks a chunk that can never be processed `failed` from `from` (the status it was read in),
/// counting what it still owed import progress as failed.
pub async fn fail_chunk(
    inbox: &impl Inbox,
    region: Region,
    row: &InboxRow,
    from: InboxStatus,
    reason: &str,
) -> Result<Written, StoreError> {
    let progress = row.progress_on_fail(crate::domain::protocol::now_ms());
    inbox
        .mark_failed(region, row.key(), from, reason, &progress)
        .await
}
