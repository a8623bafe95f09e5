//! The resolve stage: one inbox chunk at a time, every user to a profile, in bulk.
//!
//! Round trips per chunk: the project's erasure salt (one GetItem, once per chunk) and a
//! BatchGetItem of the chunk's tombstones, before and again after writing (a person an erasure
//! covers is skipped, and what a racing erasure's person got is taken back); one BatchGetItem pass
//! for identity claims, one conditional PutItem per new Identity (in parallel), one BatchGetItem
//! pass for profiles, one conditional UpdateItem per profile whose stored data is older than the
//! chunk's (in parallel; newest wins by message version, see
//! [`crate::domain::profile_merge::ProfileMerge::plan`]), and one UpdateItem that hands the changes on.
//! Replaying a chunk finds every claim and profile in place, writes nothing new and produces the
//! same changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{error, info};

use crate::domain::batch::decode_chunk;
use crate::domain::changes::{ChangeAction, MembershipChange, encode_changes};

use crate::domain::identity::ProfileKey;
use crate::domain::invocations::ResolveBatch;
use crate::domain::profile_merge::{
    HeldValue, ProfileMerge, Versioned, data_version, message_version_prefix,
};
use crate::domain::protocol::{AttributeAction, now_ms};
use crate::domain::records::{InboxStatus, Profile, PropertyValue};
use crate::domain::region::Region;
use crate::domain::resolution::{
    NoChange, Resolved, entry_change, identities_of, ladder, without_covered,
};
use crate::ports::StoreError;
use crate::ports::erasures::{ErasureLog, Erasures};
use crate::ports::inbox::{ChangeCounts, Handoff, Inbox, InboxRow, fail_chunk};
use crate::ports::profiles::{Profiles, remove_holder, take_back_fields};
use crate::stages::stream::{self as records, RecordError};
use crate::store::stats;
use crate::store::tables::{Table, TableNames};

/// What resolve writes through: the inbox, profiles with their claims and holders, and the
/// erasure log it checks.
pub trait ResolvePorts: Inbox + Profiles + ErasureLog {}
impl<T: Inbox + Profiles + ErasureLog> ResolvePorts for T {}

pub use crate::domain::sync_log::ResolveOutcomes;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Payload(String),
}

impl ResolveError {
    /// Whether retrying can never help: the chunk is marked failed instead.
    pub fn is_permanent(&self) -> bool {
        match self {
            ResolveError::Payload(_) | ResolveError::Record(_) => true,
            ResolveError::Store(e) => !e.is_transient(),
        }
    }
}

/// The profile a resolved user goes to, with the Identity that led there and the email and
/// phone the user gives it.
struct Target {
    clevertap_id: String,
    identity: Option<String>,
    values: Vec<(HeldValue, String)>,
}

/// Where a resolved user goes (`None`: skipped, or an Identity without a claim).
fn target_of(r: &Resolved<'_>, clevertap_of: &HashMap<String, String>) -> Option<Target> {
    let (clevertap_id, identity) = match &r.resolution.outcome {
        Ok((ProfileKey::CleverTapId(ct), _)) => (ct.clone(), None),
        Ok((ProfileKey::Identity(id), _)) => (clevertap_of.get(id)?.clone(), Some(id.clone())),
        Err(_) => return None,
    };
    let values = [
        (HeldValue::Email, &r.resolution.email),
        (HeldValue::Phone, &r.resolution.phone),
    ]
    .into_iter()
    .filter_map(|(kind, v)| Some((kind, v.clone()?)))
    .collect();
    Some(Target {
        clevertap_id,
        identity,
        values,
    })
}

/// Takes back what this chunk wrote for people an erasure covers (the erasure, made meanwhile,
/// could not see it), and drops their changes: claims this message made, the profile fields
/// whose version is this message's — the whole profile if it holds nothing else — and the
/// holders of the user's email and phone this chunk added the profile to, unless the profile
/// holds that value now. Data of other messages stays: a newer one may have brought the person
/// back, and a profile the chunk only merged into is not necessarily theirs.
async fn undo_for_erased(
    store: &impl Profiles,
    region: Region,
    row: &InboxRow,
    targets: Vec<Target>,
    changes: &mut Vec<MembershipChange>,
) -> Result<(), StoreError> {
    if targets.is_empty() {
        return Ok(());
    }
    let project = row.project_id.as_str();
    let ours = message_version_prefix(row.message_ts, &row.message_id);
    let identities: Vec<String> = targets.iter().filter_map(|t| t.identity.clone()).collect();
    let claims = store.claims_of(region, project, &identities).await?;
    let cts: BTreeSet<String> = targets.iter().map(|t| t.clevertap_id.clone()).collect();
    for t in &targets {
        let ct = &t.clevertap_id;
        let claimed_here = t
            .identity
            .as_ref()
            .and_then(|id| claims.get(id))
            .is_some_and(|c| {
                c.clevertap_id == *ct && c.message_id.as_deref() == Some(row.message_id.as_str())
            });
        if let (true, Some(id)) = (claimed_here, &t.identity) {
            let _claimed_again = store.delete_claim(region, project, id, ct).await?;
        }
    }
    for ct in &cts {
        take_back_fields(store, region, project, ct, &ours).await?;
    }
    for t in targets.iter().filter(|t| !t.values.is_empty()) {
        forget_values(store, region, project, t).await?;
    }
    changes.retain(|c| !cts.contains(&c.clevertap_id));
    Ok(())
}

/// The holders of a covered user's email and phone stop naming the profile unless it holds or
/// records the value from another message (after the take-back, what it records is other
/// messages'): an attempt of this chunk may have added them before it failed. Read again after:
/// a newer message that recorded the value meanwhile gets its holder back (it adds holders only
/// after recording, so either it adds after this removal or this read sees its record).
async fn forget_values(
    store: &impl Profiles,
    region: Region,
    project: &str,
    target: &Target,
) -> Result<(), StoreError> {
    let ct = target.clevertap_id.as_str();
    let keeps = |p: &Option<Profile>, kind: HeldValue, value: &str| {
        p.as_ref().is_some_and(|p| {
            kind.of(p) == Some(value) || p.held.contains_key(&(kind, value.to_owned()))
        })
    };
    let profile = store.profile(region, project, ct).await?;
    let forget: Vec<&(HeldValue, String)> = (target.values.iter())
        .filter(|(kind, value)| !keeps(&profile, *kind, value))
        .collect();
    if forget.is_empty() {
        return Ok(());
    }
    for (kind, value) in &forget {
        remove_holder(store, region, project, *kind, value, ct).await?;
    }
    let after = store.profile(region, project, ct).await?;
    for (kind, value) in forget {
        if keeps(&after, *kind, value) {
            store.add_holder(region, project, *kind, value, ct).await?;
        }
    }
    Ok(())
}

/// On a retry: the targets an earlier attempt of this chunk may have written for people an
/// erasure covers (it failed before it could take them back), and the emails and phones of
/// covered users whose claim the erasure deleted (their CleverTap ID is known only to the
/// holders that attempt may have added).
async fn covered_targets(
    store: &impl Profiles,
    region: Region,
    project: &str,
    users: &[Resolved<'_>],
    covered: &[Option<i64>],
) -> Result<(Vec<Target>, Vec<(HeldValue, String)>), StoreError> {
    let covered: Vec<&Resolved<'_>> = (users.iter().zip(covered))
        .filter(|(_, e)| e.is_some())
        .map(|(r, _)| r)
        .collect();
    if covered.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let identities: HashSet<&str> = covered
        .iter()
        .filter_map(|r| match &r.resolution.outcome {
            Ok((ProfileKey::Identity(id), _)) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let clevertap_of = store
        .claimed_identities(region, project, &identities)
        .await?;
    let mut targets = Vec::new();
    let mut unclaimed = Vec::new();
    for r in covered {
        match target_of(r, &clevertap_of) {
            Some(t) => targets.push(t),
            None => {
                let values = [
                    (HeldValue::Email, &r.resolution.email),
                    (HeldValue::Phone, &r.resolution.phone),
                ];
                unclaimed
                    .extend((values.into_iter()).filter_map(|(kind, v)| Some((kind, v.clone()?))));
            }
        }
    }
    Ok((targets, unclaimed))
}

/// The holders of covered users' values whose claim an erasure deleted stop naming the erased
/// profiles: a CleverTap ID there whose tombstone covers this message and which has no profile
/// was erased (an earlier attempt of this chunk added it before the erasure could see the
/// profile). One with a profile is left: a Partner ID's CleverTap ID comes back with a newer
/// message.
async fn sweep_erased_holders(
    store: &(impl Profiles + ErasureLog),
    erasures: &Erasures,
    region: Region,
    row: &InboxRow,
    values: Vec<(HeldValue, String)>,
) -> Result<(), StoreError> {
    let project = row.project_id.as_str();
    for (kind, value) in values {
        let holders = store.holders(region, project, kind, &value).await?;
        let cts: BTreeSet<&str> = holders.iter().map(String::as_str).collect();
        let erased = erasures
            .of_clevertap_ids(store, region, project, &cts)
            .await?;
        for (ct, erased_ms) in erased {
            let covers = crate::domain::erasure::is_before_erasure(row.message_ts, erased_ms);
            if covers && store.profile(region, project, &ct).await?.is_none() {
                remove_holder(store, region, project, kind, &value, &ct).await?;
            }
        }
    }
    Ok(())
}

/// How many profile writes or claims run at once per chunk.
const WRITE_CONCURRENCY: usize = 16;

pub struct ChunkReport {
    pub outcomes: ResolveOutcomes,
    pub changes: Vec<MembershipChange>,
    /// Whether this run moved the row to `resolved` (false on a replay of a resolved row).
    pub handed_off: bool,
}

/// Resolves one stored chunk and hands its membership changes to materialization.
pub async fn resolve_chunk(
    store: &impl ResolvePorts,
    region: Region,
    row: &InboxRow,
) -> Result<ChunkReport, ResolveError> {
    let profiles = decode_chunk(&row.payload).map_err(|e| ResolveError::Payload(e.to_string()))?;
    let project = row.project_id.as_str();
    let mut outcomes = ResolveOutcomes::default();

    // 1. The ladder, per profile and per distinct userIdType among its entries (pure), less the
    //    people an erasure made after this message was sent covers.
    let resolved = ladder(&profiles, &mut outcomes);
    let erasures = Erasures::of(store, region, project).await?;
    let covered = erasures
        .covering(store, region, project, row.message_ts, &resolved)
        .await?;
    let (leftovers, unclaimed) =
        covered_targets(store, region, project, &resolved, &covered).await?;
    undo_for_erased(store, region, row, leftovers, &mut Vec::new()).await?;
    sweep_erased_holders(store, &erasures, region, row, unclaimed).await?;
    let resolved = without_covered(resolved, &covered, &mut outcomes);

    // 2. Identities to CleverTap IDs: existing claims in bulk, then claim the new ones.
    let clevertap_of = claim_identities(store, region, row, &resolved).await?;

    // 3. Profiles: plan the merges and changes (pure), write only what changes.
    let (merges, mut changes) = plan_chunk(row, &resolved, &clevertap_of, &mut outcomes);
    let refused = write_profiles(store, region, row, &merges, &mut outcomes).await?;
    changes.retain(|c| !refused.contains(c.clevertap_id.as_str()));

    // 3b. Checked again after writing: an erasure made meanwhile removed what it found before
    //     these writes landed, so they are removed here (docs/architecture.md, Erasure).
    let erasures = erasures.again(store, region, project).await?;
    let covered = erasures
        .covering(store, region, project, row.message_ts, &resolved)
        .await?;
    let overtaken: Vec<Target> = (resolved.iter().zip(&covered))
        .filter(|(_, erased)| erased.is_some())
        .filter_map(|(r, _)| target_of(r, &clevertap_of))
        .collect();
    outcomes.erased += overtaken.len() as u64;
    undo_for_erased(store, region, row, overtaken, &mut changes).await?;

    // 4. Hand off: the row moves to `resolved` with its changes; its MODIFY drives materialize.
    let adds = changes
        .iter()
        .filter(|c| c.action == ChangeAction::Add)
        .count() as u64;
    //    A counted bulk chunk moves its audiences' progress on with it.
    let (progress, owed_after) =
        row.progress_on_resolve(changes.iter().map(|c| c.audience_id), now_ms());
    let handoff = Handoff {
        changes: &encode_changes(&changes),
        outcomes: &outcomes,
        handed_on: ChangeCounts {
            add: adds,
            delete: changes.len() as u64 - adds,
        },
        owed_after: owed_after.as_ref(),
        progress: &progress,
    };
    let handed_off = store
        .mark_resolved(region, row.key(), handoff)
        .await?
        .applied();
    Ok(ChunkReport {
        outcomes,
        changes,
        handed_off,
    })
}

/// Step 2: the CleverTap ID of every Identity the users resolved to, claiming the new ones (one
/// Identity, one profile, whoever claims first).
async fn claim_identities(
    store: &impl Profiles,
    region: Region,
    row: &InboxRow,
    resolved: &[Resolved<'_>],
) -> Result<HashMap<String, String>, StoreError> {
    let project = row.project_id.as_str();
    let now = now_ms();
    let identities = identities_of(resolved);
    let mut clevertap_of = store
        .claimed_identities(region, project, &identities)
        .await?;
    let mut missing: Vec<&str> = identities
        .iter()
        .copied()
        .filter(|id| !clevertap_of.contains_key(*id))
        .collect();
    missing.sort_unstable();
    let claimed: Vec<(String, String)> = stream::iter(missing)
        .map(|id| async move {
            let new_ct = store.new_clevertap_id();
            let claimed = store
                .claim_identity(region, project, id, &new_ct, &row.message_id, now)
                .await?;
            Ok::<_, StoreError>((id.to_owned(), claimed.clevertap_id))
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    clevertap_of.extend(claimed);
    Ok(clevertap_of)
}

/// Step 3, pure: per profile the merge of its users' email, phone and properties (each field
/// newest by message version; within a message, later profiles win), and the membership changes.
fn plan_chunk(
    row: &InboxRow,
    resolved: &[Resolved<'_>],
    clevertap_of: &HashMap<String, String>,
    outcomes: &mut ResolveOutcomes,
) -> (BTreeMap<String, ProfileMerge>, Vec<MembershipChange>) {
    let mut merges: BTreeMap<String, ProfileMerge> = BTreeMap::new();
    let mut changes = Vec::new();
    for r in resolved {
        let Some(Target {
            clevertap_id: ct,
            identity,
            ..
        }) = target_of(r, clevertap_of)
        else {
            continue;
        };
        let version = data_version(row.message_ts, &row.message_id, r.profile.index);
        let versioned = |value: String| Versioned {
            value,
            version: version.clone(),
        };
        let m = merges.entry(ct.clone()).or_default();
        if let Some(id) = &identity {
            m.identity = Some(versioned(id.clone()));
        }
        if let Some(e) = &r.resolution.email {
            m.email = Some(versioned(e.clone()));
        }
        if let Some(p) = &r.resolution.phone {
            m.phone = Some(versioned(p.clone()));
        }
        for &e in &r.entries {
            let entry = &r.profile.audiences[e];
            for a in &entry.attributes {
                let value = match a.action() {
                    AttributeAction::Upsert => Some(match (&a.list_value, &a.value) {
                        (Some(list), _) => PropertyValue::List(list.clone()),
                        (None, Some(v)) => PropertyValue::Text(v.clone()),
                        (None, None) => PropertyValue::Tag,
                    }),
                    AttributeAction::Delete => None,
                    AttributeAction::Unknown(_) => continue,
                };
                let version = version.clone();
                m.properties
                    .insert(a.key.clone(), Versioned { value, version });
            }
            let (action, audience_id) = match entry_change(entry) {
                Ok(change) => change,
                Err(NoChange::AttributeUpdate) => {
                    outcomes.attribute_updates += 1;
                    continue;
                }
                Err(NoChange::UnknownAction) => {
                    outcomes.unknown_action += 1;
                    continue;
                }
                Err(NoChange::MissingAudienceId) => {
                    outcomes.missing_audience_id += 1;
                    continue;
                }
            };
            changes.push(MembershipChange {
                clevertap_id: ct.clone(),
                identity: identity.clone(),
                audience_id,
                audience_name: entry.name.clone(),
                action,
                ts_ms: row.message_ts,
                message_id: row.message_id.clone(),
                profile_index: r.profile.index,
                entry_index: e as u32,
                received_ms: Some(row.received_ms),
                way: row.way,
            });
        }
    }
    (merges, changes)
}

/// Step 3, the writes: profiles read in bulk, then each brought up to its merge. A profile
/// DynamoDB refuses to store (an item over its size limit) is skipped and counted; it never holds
/// up the rest of the chunk. Transient errors fail the chunk (retried whole). Answers the
/// CleverTap IDs refused.
async fn write_profiles<'m>(
    store: &impl Profiles,
    region: Region,
    row: &InboxRow,
    merges: &'m BTreeMap<String, ProfileMerge>,
    outcomes: &mut ResolveOutcomes,
) -> Result<HashSet<&'m str>, StoreError> {
    let project = row.project_id.as_str();
    let now = now_ms();
    let cts: Vec<String> = merges.keys().cloned().collect();
    let existing: HashMap<String, Profile> = store
        .profiles(region, project, &cts)
        .await?
        .into_iter()
        .map(|p| (p.clevertap_id.clone(), p))
        .collect();
    for ct in merges.keys() {
        if existing.contains_key(ct) {
            outcomes.merged += 1;
        } else {
            outcomes.created += 1;
        }
    }
    let written: Vec<(&String, Result<(), StoreError>)> = stream::iter(merges.iter())
        .map(|(ct, m)| {
            let read = existing.get(ct);
            async move {
                (
                    ct,
                    write_profile(store, region, project, ct, m, read, now).await,
                )
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut refused: HashSet<&str> = HashSet::new();
    for (ct, result) in written {
        match result {
            Ok(()) => {}
            Err(e) if !e.is_transient() => {
                error!(project_id = project, message_id = %row.message_id, error = %e,
                       "a profile could not be stored; skipped with its changes");
                outcomes.too_long += 1;
                refused.insert(ct);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

/// Re-plans of one profile after another writer moved one of its fields first: each lost
/// condition means another chunk made progress on that profile, so this bounds only pathological
/// contention (as `MAX_REPLANS_PER_PAIR` does in materialize).
const MAX_PROFILE_REPLANS: u32 = 25;

/// Brings one profile up to its merge: plans against the item read, writes conditionally, and
/// on a lost condition reads the profile again and re-plans (newest wins, whoever arrives last).
/// Then adds it to the holders of the email and phone it recorded: an erasure that reads the
/// profile before they land takes it off them all the same, and one that read it earlier
/// tombstoned it first, so this chunk's check after writing takes them back.
///
/// A value the profile recorded before, from an older message, is recorded again with this
/// message's version but not added to its holders again (one write less per existing profile):
/// the older message added the holder, or, if it failed between its record and its holder, its
/// retry adds it, because a message whose value is recorded at its version or a newer one adds
/// the holder (below).
async fn write_profile(
    store: &impl Profiles,
    region: Region,
    project: &str,
    clevertap_id: &str,
    merge: &ProfileMerge,
    read: Option<&Profile>,
    now: i64,
) -> Result<(), StoreError> {
    let mut current = read.cloned();
    let mut to_add: Vec<((HeldValue, String), String)> = Vec::new();
    let mut recorded_now: Vec<(HeldValue, String)> = Vec::new();
    for attempt in 0..=MAX_PROFILE_REPLANS {
        if attempt == MAX_PROFILE_REPLANS {
            return Err(StoreError::Unavailable(format!(
                "profile writes keep conflicting after {MAX_PROFILE_REPLANS} re-plans"
            )));
        }
        let Some(mut write) = merge.plan(current.as_ref()) else {
            break;
        };
        write.recorded = write.recording(current.as_ref());
        if store
            .write_profile(region, project, clevertap_id, &write, now)
            .await?
            .applied()
        {
            let held_before = |entry: &(HeldValue, String)| {
                (current.as_ref()).is_some_and(|p| p.held.contains_key(entry))
            };
            recorded_now = write.recorded.iter().map(|(e, _)| e.clone()).collect();
            to_add = (write.recorded.into_iter())
                .filter(|(entry, _)| !held_before(entry))
                .collect();
            break;
        }
        current = store.profile(region, project, clevertap_id).await?;
    }
    // This message's earlier attempt, or an older message's, may have recorded a value and
    // failed before its holder: a value recorded at this message's version or a newer one (so
    // not recorded again just now) gets its holder.
    for (kind, value) in merge.held_values() {
        let entry = (kind, value.to_owned());
        let ours = merge_version(merge, kind);
        let recorded_at = current.as_ref().and_then(|p| p.held.get(&entry));
        let at_or_after_ours = recorded_at.is_some_and(|v| Some(v.as_str()) >= ours);
        let queued = to_add.iter().any(|(e, _)| *e == entry);
        if at_or_after_ours && !recorded_now.contains(&entry) && !queued {
            to_add.push((entry, String::new()));
        }
    }
    add_holders(store, region, project, clevertap_id, &to_add).await
}

/// The version the merge gives an email or phone.
fn merge_version(merge: &ProfileMerge, kind: HeldValue) -> Option<&str> {
    let versioned = match kind {
        HeldValue::Email => &merge.email,
        HeldValue::Phone => &merge.phone,
    };
    versioned.as_ref().map(|v| v.version.as_str())
}

/// Adds the profile to the holders of the values it recorded.
async fn add_holders(
    store: &impl Profiles,
    region: Region,
    project: &str,
    clevertap_id: &str,
    recorded: &[((HeldValue, String), String)],
) -> Result<(), StoreError> {
    for ((kind, value), _) in recorded {
        match store
            .add_holder(region, project, *kind, value, clevertap_id)
            .await
        {
            Ok(()) => {}
            // A value held by so many profiles that its holders item is full (400 KB, about
            // 10,000 CleverTap IDs): far past `SHARED_VALUE_HOLDERS`, so an erasure by it
            // leads to no one anyway, and a lookup lists the first 10,000 (docs/contract.md §3).
            Err(e) if !e.is_transient() => {
                tracing::warn!(project_id = project, kind = kind.as_str(), error = %e,
                               "holders of a value are full; this profile is not listed there");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The resolve Lambda: inbox INSERT records in, `batchItemFailures` out, and what it did.
pub async fn handle_inbox_event(
    store: &impl ResolvePorts,
    names: &TableNames,
    event: Event,
) -> (DynamoDbEventResponse, ResolveBatch) {
    let started = stats::snapshot();
    let failed = std::sync::atomic::AtomicU64::new(0);
    let failed = &failed;
    let (response, handled, retried) = records::drive(&event.records, 4, "resolve", |record| async move {
        let (region, table) = records::record_source(names, record)?;
        if table != Table::Inbox || record.event_name != "INSERT" {
            return Ok(None);
        }
        let row = records::inbox_row(record)?;
        // A bulk row is the bulk worker's (the mapping's filter leaves it out too).
        if row.status != InboxStatus::Received || row.way != crate::domain::ways::Way::Live {
            return Ok(None);
        }
        match resolve_chunk(store, region, &row).await {
            Ok(r) => Ok(Some((row, r))),
            Err(e) if e.is_permanent() => {
                error!(project_id = %row.project_id, message_id = %row.message_id, chunk = row.chunk,
                       error = %e, "chunk can never be resolved; marked failed");
                let _moved_on_already =
                        fail_chunk(store, region, &row, InboxStatus::Received, &e.to_string()).await?;
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, ResolveError>(None)
            }
            Err(e) => Err(e),
        }
    })
    .await;
    let mut batch = ResolveBatch {
        chunks_failed: failed.load(std::sync::atomic::Ordering::Relaxed),
        ..ResolveBatch::default()
    };
    for (row, report) in handled.into_iter().flatten() {
        // A redelivered record (the stream resends from the first failed record on) finds its
        // row resolved already: counted apart, so the figures count each chunk once.
        if !report.handed_off {
            batch.chunks_replayed += 1;
            continue;
        }
        batch.chunks += 1;
        batch.outcomes.add(&report.outcomes);
        batch.changes += report.changes.len() as u64;
        let o = &report.outcomes;
        info!(project_id = %row.project_id, message_id = %row.message_id, chunk = row.chunk,
              changes = report.changes.len(), handed_off = report.handed_off,
              partner_id = o.partner_id, identity = o.identity, mpid = o.mpid, created = o.created,
              merged = o.merged, anonymous = o.anonymous, hashed_unusable = o.hashed_unusable,
              invalid_email = o.invalid_email, invalid_phone = o.invalid_phone,
              no_identity = o.no_identity, "chunk resolved");
    }
    batch.chunks_retried = retried;
    batch.store = stats::snapshot().since(started);
    (response, batch)
}

/// Resolve on the twin: the ladder and merge over real ports, replays, faults between calls,
/// and the erasure checks before and after writing.
#[cfg(test)]
mod on_the_twin {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::batch::build_chunks;
    use crate::domain::changes::decode_changes;
    use crate::domain::erasure::{TombstoneHasher, TombstoneKind};
    use crate::domain::profile_merge::HeldValue;
    use crate::domain::protocol::{Request, parse_request};
    use crate::ports::inbox::{BatchMeta, ChunkKey};
    use crate::twin::{Fault, Twin};

    const P: &str = "P1";
    const R: Region = Region::Eu1;
    const TS: i64 = 1_700_000_000_000;

    fn user(identities: &[(&str, &str)], partner: Option<&str>, audiences: Value) -> Value {
        let ids: Vec<Value> = identities
            .iter()
            .map(|(t, v)| json!({"type": t, "encoding": "raw", "value": v}))
            .collect();
        let partners: Vec<Value> = partner
            .map(|ct| json!({"type": "CleverTap_User_ID", "encoding": "raw", "value": ct}))
            .into_iter()
            .collect();
        json!({"user_identities": ids, "partner_identities": partners, "audiences": audiences,
               "mpid": "4242"})
    }

    fn add(audience_id: i64) -> Value {
        json!([{"audience_id": audience_id, "audience_name": "Cart", "action": "add"}])
    }

    /// Stores a membership message in the twin's inbox as authorize would, and answers its one
    /// chunk's row.
    async fn stored(twin: &Twin, message_id: &str, ts: i64, users: Vec<Value>) -> InboxRow {
        let body = json!({"type": "audience_membership_change_request", "id": message_id,
                          "timestamp_ms": ts, "account": {"account_id": 1},
                          "user_profiles": users})
        .to_string();
        let Ok(Request::AudienceMembershipChange(req)) = parse_request(body.as_bytes()) else {
            panic!("a membership request");
        };
        let chunks = build_chunks(&req.user_profiles.unwrap()).unwrap();
        let meta = BatchMeta {
            project_id: P,
            message_id,
            message_ts: ts,
            received_ms: ts,
            way: Default::default(),
        };
        twin.put_batch(R, &meta, &chunks).await.unwrap();
        let key = ChunkKey {
            project_id: P,
            message_id,
            chunk: 0,
        };
        twin.chunk_row(R, key).await.unwrap().unwrap()
    }

    async fn handed_on(twin: &Twin, row: &InboxRow) -> Vec<MembershipChange> {
        let row = twin.chunk_row(R, row.key()).await.unwrap().unwrap();
        assert_eq!(row.status, InboxStatus::Resolved);
        decode_changes(&row.changes.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_ladder_picks_each_users_profile_and_skips_the_anonymous() {
        let twin = Twin::new();
        let row = stored(
            &twin,
            "m1",
            TS,
            vec![
                user(&[("email", "Ann@x.io")], Some("ct-ann"), add(7)),
                user(
                    &[("customer", "c-bob"), ("mobile_number", "+15550001")],
                    None,
                    add(7),
                ),
                user(&[], None, add(7)),
            ],
        )
        .await;
        let report = resolve_chunk(&twin, R, &row).await.unwrap();
        let o = &report.outcomes;
        assert_eq!((o.partner_id, o.identity, o.anonymous), (1, 1, 1));
        assert_eq!((o.created, o.merged), (2, 0));
        assert!(report.handed_off);

        let ann = twin.profile(R, P, "ct-ann").await.unwrap().unwrap();
        assert_eq!(
            ann.email.as_deref(),
            Some("ann@x.io"),
            "emails are normalized"
        );
        let bob_ct = twin.claims_in(R, P)["c-bob"].clone();
        let bob = twin.profile(R, P, &bob_ct).await.unwrap().unwrap();
        assert_eq!(bob.identity.as_deref(), Some("c-bob"));
        assert_eq!(bob.phone.as_deref(), Some("+15550001"));
        assert_eq!(
            twin.profiles_of(R, P).len(),
            2,
            "the anonymous user made none"
        );
        let holders = twin.holders_in(R, P);
        assert_eq!(
            holders[&(HeldValue::Phone, "+15550001".to_owned())].len(),
            1
        );

        let changes = handed_on(&twin, &row).await;
        let mut cts: Vec<&str> = changes.iter().map(|c| c.clevertap_id.as_str()).collect();
        cts.sort();
        assert_eq!(cts, [bob_ct.as_str(), "ct-ann"]);
    }

    #[tokio::test]
    async fn a_replay_hands_nothing_on_twice_and_an_older_message_loses_each_field() {
        let twin = Twin::new();
        let newer = stored(
            &twin,
            "m2",
            TS + 10,
            vec![user(&[("email", "new@x.io")], Some("ct"), add(7))],
        )
        .await;
        resolve_chunk(&twin, R, &newer).await.unwrap();
        let older = stored(
            &twin,
            "m1",
            TS,
            vec![user(&[("email", "old@x.io")], Some("ct"), add(7))],
        )
        .await;
        let report = resolve_chunk(&twin, R, &older).await.unwrap();
        assert_eq!(report.outcomes.merged, 1);
        let profile = twin.profile(R, P, "ct").await.unwrap().unwrap();
        assert_eq!(
            profile.email.as_deref(),
            Some("new@x.io"),
            "newest by message time wins"
        );

        let replay = resolve_chunk(&twin, R, &older).await.unwrap();
        assert!(!replay.handed_off, "a resolved row is not handed on again");
        assert_eq!(handed_on(&twin, &older).await.len(), 1);
    }

    #[tokio::test]
    async fn a_lost_answer_at_any_write_is_retried_into_one_profile_per_identity() {
        for call in [
            "profiles.claim_identity",
            "profiles.add_holder",
            "profiles.write_profile",
            "inbox.mark_resolved",
        ] {
            let twin = Twin::new();
            let users = vec![user(
                &[("customer", "c-1"), ("email", "a@x.io")],
                None,
                add(7),
            )];
            let row = stored(&twin, "m1", TS, users).await;
            twin.inject(call, Fault::TimeoutAfterCommit);
            let failed = resolve_chunk(&twin, R, &row).await;
            assert!(
                matches!(failed, Err(ResolveError::Store(e)) if e.is_transient()),
                "{call}"
            );
            let retried = resolve_chunk(&twin, R, &row).await.unwrap();
            assert_eq!(twin.profiles_of(R, P).len(), 1, "{call}");
            assert_eq!(twin.claims_in(R, P).len(), 1, "{call}");
            let changes = handed_on(&twin, &row).await;
            assert_eq!(changes.len(), 1, "{call}");
            if call == "inbox.mark_resolved" {
                assert!(!retried.handed_off, "the first attempt's hand-off stands");
            }
        }
    }

    #[tokio::test]
    async fn a_profile_too_large_to_store_is_skipped_and_the_rest_of_the_chunk_goes_on() {
        // Each message's profile is within mParticle's bounds; together they outgrow an item.
        let attributes = |prefix: &str| -> Value {
            let attrs: Vec<Value> = (0..45)
                .map(|i| {
                    json!({"key": format!("{prefix}{i}"), "value": "x".repeat(4000),
                                "action": "upsert"})
                })
                .collect();
            json!([{"audience_id": 7, "audience_name": "Cart", "action": "add",
                    "user_attributes": attrs}])
        };
        let twin = Twin::new();
        for (i, prefix) in ["a", "b"].into_iter().enumerate() {
            let users = vec![user(&[], Some("ct-big"), attributes(prefix))];
            let row = stored(&twin, &format!("m{i}"), TS + i as i64, users).await;
            resolve_chunk(&twin, R, &row).await.unwrap();
        }
        let row = stored(
            &twin,
            "m2",
            TS + 2,
            vec![
                user(&[], Some("ct-big"), attributes("c")),
                user(&[], Some("ct-ok"), add(7)),
            ],
        )
        .await;
        let report = resolve_chunk(&twin, R, &row).await.unwrap();
        assert_eq!(report.outcomes.too_long, 1);
        let big = twin.profile(R, P, "ct-big").await.unwrap().unwrap();
        assert_eq!(
            big.properties.len(),
            90,
            "the refused write left the profile as it was"
        );
        let changes = handed_on(&twin, &row).await;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].clevertap_id, "ct-ok");
    }

    /// Defect 3 of issue 34: `old@` then `new@` left `old@`'s holders naming the erased profile.
    #[tokio::test]
    async fn an_erasure_takes_the_profile_off_its_former_emails_holders_too() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        for (i, email) in ["old@x.io", "new@x.io"].into_iter().enumerate() {
            let users = vec![user(
                &[("customer", "c-ann"), ("email", email)],
                None,
                add(7),
            )];
            let row = stored(&twin, &format!("m{i}"), TS + i as i64, users).await;
            resolve_chunk(&twin, R, &row).await.unwrap();
        }
        let holders = twin.holders_in(R, P);
        assert_eq!(holders.len(), 2, "both emails lead to her: {holders:?}");

        let request = crate::stages::erasure::ErasureRequest {
            request_id: "r1".into(),
            regulation: crate::domain::protocol::Regulation::Gdpr,
            source: crate::domain::erasure::ErasureSource::Mparticle,
            erased_ms: TS + 10,
            submitted_ms: None,
            keys: [crate::domain::erasure::SubjectKey::Identity("c-ann".into())].into(),
            ignored_identities: 0,
        };
        crate::stages::erasure::erase(&twin, R, P, &request)
            .await
            .unwrap();
        assert!(twin.profiles_of(R, P).is_empty());
        assert!(
            twin.holders_in(R, P).is_empty(),
            "no holders item keeps her former email: {:?}",
            twin.holders_in(R, P)
        );
    }

    /// #34 defect 8: mParticle stamped a batch 4 minutes ahead of our clock and sent it before
    /// the person's DSR arrived; resolved after the erasure, it must not bring them back.
    #[tokio::test]
    async fn a_batch_stamped_ahead_of_our_clock_and_sent_before_the_erasure_is_covered() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let ahead = TS + 4 * 60_000;
        let users = vec![user(&[("customer", "c-ann")], None, add(7))];
        let row = stored(&twin, "m1", ahead, users).await;
        // The DSR reaches us at TS, after the batch.
        let dsr = json!({"type": "dsr_processing_request", "id": "d1", "timestamp_ms": TS,
                         "account": {"account_id": 1}, "subject_request_id": "r1",
                         "subject_request_type": "erasure", "regulation": "gdpr",
                         "subject_identities": {"customer_id": {"encoding": "raw",
                                                                "value": "c-ann"}}})
        .to_string();
        let Ok(Request::DsrProcessing(dsr)) = parse_request(dsr.as_bytes()) else {
            panic!("a DSR");
        };
        let request = crate::stages::erasure::ErasureRequest::from_dsr(&dsr, TS);
        crate::stages::erasure::erase(&twin, R, P, &request)
            .await
            .unwrap();

        let report = resolve_chunk(&twin, R, &row).await.unwrap();
        assert!(report.changes.is_empty(), "{:?}", report.changes);
        assert!(twin.profiles_of(R, P).is_empty());
        assert!(twin.claims_in(R, P).is_empty());
    }

    /// An attempt recorded `a@` on the profile and failed before adding the profile to its
    /// holders: the retry, which has nothing left to write, adds it.
    #[tokio::test]
    async fn a_value_recorded_by_a_failed_attempt_gets_its_holder_on_the_retry() {
        let twin = Twin::new();
        let row = stored(
            &twin,
            "m1",
            TS,
            vec![user(&[("email", "a@x.io")], Some("ct-a"), add(7))],
        )
        .await;
        twin.inject("profiles.add_holder", Fault::Transient);
        assert!(resolve_chunk(&twin, R, &row).await.is_err());
        let a = twin.profile(R, P, "ct-a").await.unwrap().unwrap();
        assert!(
            a.held
                .contains_key(&(HeldValue::Email, "a@x.io".to_owned()))
        );
        assert!(
            twin.holders_in(R, P).is_empty(),
            "recorded first, holder after"
        );
        resolve_chunk(&twin, R, &row).await.unwrap();
        let holders = twin.holders_in(R, P);
        assert_eq!(
            holders.get(&(HeldValue::Email, "a@x.io".to_owned())),
            Some(&["ct-a".to_owned()].into())
        );
    }

    #[tokio::test]
    async fn a_person_erased_after_the_message_was_sent_is_skipped_and_others_go_on() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        twin.mark_erasures(R, P).await.unwrap();
        let keys = ErasureLog::tombstone_keys(&twin).await.unwrap();
        let hasher = TombstoneHasher {
            keys: &keys,
            project: P,
            legacy_salt: None,
        };
        let hash = hasher.written(TombstoneKind::Identity, "c-gone");
        let _ = twin.write_tombstone(R, P, &hash, TS + 1).await.unwrap();

        let row = stored(
            &twin,
            "m1",
            TS,
            vec![
                user(&[("customer", "c-gone")], None, add(7)),
                user(&[("customer", "c-stays")], None, add(7)),
            ],
        )
        .await;
        let report = resolve_chunk(&twin, R, &row).await.unwrap();
        assert_eq!(report.outcomes.erased, 1);
        let claims = twin.claims_in(R, P);
        assert!(!claims.contains_key("c-gone") && claims.contains_key("c-stays"));
        assert_eq!(twin.profiles_of(R, P).len(), 1);
        assert_eq!(handed_on(&twin, &row).await.len(), 1);

        // A message sent after the erasure brings the person back.
        let later = stored(
            &twin,
            "m2",
            TS + 2,
            vec![user(&[("customer", "c-gone")], None, add(7))],
        )
        .await;
        resolve_chunk(&twin, R, &later).await.unwrap();
        assert!(twin.claims_in(R, P).contains_key("c-gone"));
    }
}
