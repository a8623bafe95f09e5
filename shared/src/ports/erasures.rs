//! The erasure log port: which projects have had erasures, and their tombstones (keyed hashes of
//! what was erased, with the time of the newest erasure of each). Every stage that writes a
//! person's data checks it ([`Erasures`]), before and after writing.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use crate::domain::erasure::{
    ErasureAudit, TombstoneHasher, TombstoneKeys, TombstoneKind, is_before_erasure,
};
use crate::domain::feed::FeedNotice;
use crate::domain::records::{HeldValue, SegmentLayout};
use crate::domain::region::Region;
use crate::domain::resolution::Resolved;
use crate::ports::{StoreError, Written};

/// What a project item says of its erasures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureMarks {
    /// It has had one: its tombstones are worth checking.
    pub had_erasure: bool,
    /// The salt of its tombstones written before they were keyed, if any were.
    pub legacy_salt: Option<String>,
}

/// Erasure marks and tombstones.
pub trait ErasureLog: Send + Sync {
    /// The project's erasure marks, strongly consistent.
    fn erasure_marks(
        &self,
        region: Region,
        project_id: &str,
    ) -> impl Future<Output = Result<ErasureMarks, StoreError>> + Send;

    /// Marks the project as having keyed tombstones (before any is written, so a check that
    /// reads the mark after a tombstone landed always finds it) and answers its marks: one
    /// conditional update (the project must exist).
    fn mark_erasures(
        &self,
        region: Region,
        project_id: &str,
    ) -> impl Future<Output = Result<ErasureMarks, StoreError>> + Send;

    /// The keys tombstones are hashed with.
    fn tombstone_keys(&self)
    -> impl Future<Output = Result<Arc<TombstoneKeys>, StoreError>> + Send;

    /// The tombstones among these hashes: hash → erased as of (epoch ms), strongly consistent.
    fn tombstones(
        &self,
        region: Region,
        project_id: &str,
        hashes: &[String],
    ) -> impl Future<Output = Result<HashMap<String, i64>, StoreError>> + Send;

    /// Remembers that `hash` was erased as of `erased_ms`: one conditional update, so an older
    /// erasure's time never replaces a newer one's (`ConditionFailed`).
    fn write_tombstone(
        &self,
        region: Region,
        project_id: &str,
        hash: &str,
        erased_ms: i64,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}

/// What erasing one membership row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowErased {
    /// The person was a member: the row left the segment and its count.
    MemberRemoved,
    /// The row (a former member) lost its identity and was advanced past the erasure.
    Scrubbed,
    /// There was no row: one that is not a member, at the erasure's version, now stands there,
    /// so a change sent before the erasure and applied after it is stale.
    Blocked,
    /// The row was erased already (a retry): nothing written.
    Unchanged,
}

/// The erasure's writes to a person's membership rows and events, which materialize also makes
/// for changes an erasure overtook. Each is several requests (a read, then conditional writes
/// with re-reads): they are split into one-request methods when the erasure stage moves onto
/// ports.
pub trait ErasedRows: Send + Sync {
    /// Takes a person out of one segment: the row stops being a member, loses its identity and
    /// history and gets a version at least `erased_version` (a change sent before the erasure
    /// is then stale); a member leaves its count in the same transaction; no row: a blocking
    /// non-member row is put.
    fn erase_membership(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RowErased, StoreError>> + Send;

    /// The segments (audience ids) a profile's Partner Sync events name, strongly consistent:
    /// every row that held the profile as a member came with an event, so these are the
    /// segments an erasure has rows to clear in, however many segments the project has.
    fn segments_of_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<BTreeSet<i64>, StoreError>> + Send;

    /// Deletes the Partner Sync events of a profile whose change was sent before `before_ms`
    /// (the erasure's cut-off: a newer message may have brought the profile back); answers how
    /// many. If it had any, `notice` is written for the publisher first (they may have been
    /// published).
    fn delete_profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        before_ms: i64,
        notice: &FeedNotice,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The audit rows of carried-out erasures (ids, times and counts, never an identity): written
/// last, so one marks a finished erasure.
pub trait ErasureAudits: Send + Sync {
    /// The audit row of one erasure request, if it was carried out.
    fn erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<ErasureAudit>, StoreError>> + Send;

    /// Records that an erasure request began with this cut-off, unless an earlier attempt of
    /// the same request did, and adds the CleverTap IDs its values led to: answers the first
    /// attempt's cut-off and every CleverTap ID recorded so far (one update). A retry erases as
    /// of the same time, and finds the profiles an earlier attempt found even after their
    /// claim is gone (a covered chunk takes back a claim it made).
    fn begin_erasure(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
        cut_off_ms: i64,
        found: &Begun,
    ) -> impl Future<Output = Result<Begun, StoreError>> + Send;

    /// Deletes what `begin_erasure` recorded (its holders name emails and phones): once the
    /// audit row stands, a redelivery is answered by it.
    fn finish_erasure(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records an audit row unless one exists for its request: one conditional put.
    fn put_erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        audit: &ErasureAudit,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}

/// Where an erasure request stands: its cut-off, the profiles its attempts found and the holders
/// records naming them (email or phone, value, CleverTap ID): a retry takes those off even after
/// a covered chunk took a profile back, and with it what it recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Begun {
    pub cut_off_ms: i64,
    pub clevertap_ids: BTreeSet<String>,
    pub holders: BTreeSet<(HeldValue, String, String)>,
}

/// The erasures of a project as one chunk sees them (`domain::erasure`), for resolve,
/// materialize and the preview. A project that never had one costs one read per chunk (and
/// never reads the tombstone keys); otherwise each check is one read of tombstones.
pub struct Erasures {
    project: String,
    marks: ErasureMarks,
    /// Read once the project is known to have had an erasure.
    keys: Option<Arc<TombstoneKeys>>,
}

impl Erasures {
    pub async fn of(
        log: &impl ErasureLog,
        region: Region,
        project: &str,
    ) -> Result<Self, StoreError> {
        let marks = log.erasure_marks(region, project).await?;
        let keys = match marks.had_erasure {
            true => Some(log.tombstone_keys().await?),
            false => None,
        };
        Ok(Self {
            project: project.to_owned(),
            marks,
            keys,
        })
    }

    /// The erasures as they stand now, for the check after writing: a project that had none when
    /// the chunk began may have had its first meanwhile (it is marked before any tombstone is
    /// written), so the mark is read again; a mark once made stays, so one that was there stays.
    pub async fn again(
        self,
        log: &impl ErasureLog,
        region: Region,
        project: &str,
    ) -> Result<Self, StoreError> {
        match self.marks.had_erasure {
            true => Ok(self),
            false => Self::of(log, region, project).await,
        }
    }

    /// How this project's tombstones are keyed; `None` if it never had an erasure.
    fn hasher(&self) -> Option<TombstoneHasher<'_>> {
        Some(TombstoneHasher {
            keys: self.keys.as_deref()?,
            project: &self.project,
            legacy_salt: self.marks.legacy_salt.as_deref(),
        })
    }

    /// The time of the newest erasure of each of these CleverTap IDs, for those erased (a
    /// CleverTap ID is tombstoned once an erasure found its profile).
    pub async fn of_clevertap_ids(
        &self,
        log: &impl ErasureLog,
        region: Region,
        project: &str,
        clevertap_ids: &BTreeSet<&str>,
    ) -> Result<HashMap<String, i64>, StoreError> {
        let Some(hasher) = self.hasher() else {
            return Ok(HashMap::new());
        };
        let hashes: HashMap<String, &str> = clevertap_ids
            .iter()
            .flat_map(|ct| {
                (hasher.checked(TombstoneKind::CleverTapId, ct).into_iter()).map(move |h| (h, *ct))
            })
            .collect();
        let all: Vec<String> = hashes.keys().cloned().collect();
        let mut newest: HashMap<String, i64> = HashMap::new();
        for (h, erased_ms) in log.tombstones(region, project, &all).await? {
            if let Some(ct) = hashes.get(&h) {
                let at = newest.entry(ct.to_string()).or_insert(erased_ms);
                *at = (*at).max(erased_ms);
            }
        }
        Ok(newest)
    }

    /// For each of `users`, the time of the newest erasure made after `message_ts` that covers it
    /// (by ladder key, email or phone); `None` if none does.
    pub async fn covering(
        &self,
        log: &impl ErasureLog,
        region: Region,
        project: &str,
        message_ts: i64,
        users: &[Resolved<'_>],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let Some(hasher) = self.hasher() else {
            return Ok(vec![None; users.len()]);
        };
        let per_user: Vec<Vec<String>> = users
            .iter()
            .map(|r| match r.resolution.outcome {
                Ok(_) => hasher.of_resolution(&r.resolution),
                Err(_) => Vec::new(),
            })
            .collect();
        let all: BTreeSet<&String> = per_user.iter().flatten().collect();
        let all: Vec<String> = all.into_iter().cloned().collect();
        let tombstones = log.tombstones(region, project, &all).await?;
        Ok(per_user
            .iter()
            .map(|hashes| {
                hashes
                    .iter()
                    .filter_map(|h| tombstones.get(h).copied())
                    .filter(|&erased_ms| is_before_erasure(message_ts, erased_ms))
                    .max()
            })
            .collect())
    }
}
