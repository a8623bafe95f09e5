//! Erasing a person (a GDPR / CCPA data subject request, docs/contract.md §2.8), in the
//! project's home region. Each step is idempotent and the audit row is written last, so a
//! request that fails part-way is carried out whole when mParticle sends it again.
//!
//! 1. Whom the subject's values lead to now (claims, holders, indexes), recorded with the cut-off
//!    on the request's `B#` item before anything is tombstoned: a retry keeps the first
//!    attempt's cut-off and finds those profiles even after a covered chunk took back a claim
//!    it made.
//! 2. Tombstones of the subject's own values (keyed by salted hashes): resolve skips the person
//!    in any batch sent before the cut-off that arrives from now on, and a chunk being resolved
//!    meanwhile finds them when it checks again after writing.
//! 3. Whom again (a claim made before the tombstones landed), with those recorded; their
//!    CleverTap IDs and Identities get tombstones too. The email and phone found on them are not
//!    followed further: sharing one with the subject does not make someone the subject.
//! 4. Their data: the holders of every value their profiles recorded, former ones included (they
//!    are taken off; the item goes with its last holder), memberships sent before the cut-off
//!    (members leave their segments with exact counts and no Partner Sync event; every segment
//!    gets a row at the erasure's version, so a change sent before the cut-off and still in
//!    flight is stale when it arrives; a row a later change moved is the person back, and
//!    stays), Partner Sync events sent before the cut-off, the claims learned from the profile,
//!    the profile item, the claims the subject's values found — what makes a profile findable
//!    goes last.
//! 5. The audit row: request id, regulation, times and counts, never an identity.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::domain::erasure::{
    ErasureAudit, ErasureCounts, ErasureSource, SHARED_VALUE_HOLDERS, SubjectKey, TombstoneHasher,
    cut_off, erasure_version, subject_keys,
};
use crate::domain::feed::profile_erased;
use crate::domain::profile_merge::HeldValue;
use crate::domain::protocol::{DsrProcessingRequest, Encoding, Regulation, now_ms};
use crate::domain::records::Profile;
use crate::domain::region::Region;
use crate::ports::erasures::RowErased;
use crate::ports::erasures::{Begun, ErasedRows, ErasureAudits, ErasureLog};
use crate::ports::memberships::Memberships;
use crate::ports::profiles::{Profiles, remove_holder};
use crate::store::segment_item::SegmentLayout;
use crate::store::{Store, StoreError};

/// One erasure to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequest {
    /// The idempotency key (mParticle's `subject_request_id`).
    pub request_id: String,
    pub regulation: Regulation,
    pub source: ErasureSource,
    /// The cut-off: batches sent before it skip the person, later ones may bring them back.
    pub erased_ms: i64,
    /// When the person asked (mParticle's `submitted_time`), kept in the audit row.
    pub submitted_ms: Option<i64>,
    pub keys: BTreeSet<SubjectKey>,
    /// Subject identities this output stores nothing under (device ids, hashed values).
    pub ignored_identities: u32,
}

impl ErasureRequest {
    /// The erasure a request that reached this service at `arrived_ms` asks for. The cut-off is
    /// the arrival plus the clock skew a batch's `timestamp_ms` may have (mParticle stamps up to
    /// 5 minutes ahead of our clock): every batch mParticle sent before then is covered,
    /// whatever `submitted_time` says (a batch sent between the two still held the person; a
    /// far-future `submitted_time` is refused by the parser and could never ban the person for
    /// good).
    pub fn from_dsr(r: &DsrProcessingRequest, arrived_ms: i64) -> Self {
        let mut keys = BTreeSet::new();
        let mut ignored = 0;
        for i in &r.subject_identities {
            let found = if i.encoding == Encoding::Raw {
                subject_keys(&i.kind, &i.value)
            } else {
                vec![]
            };
            if found.is_empty() {
                ignored += 1;
            }
            keys.extend(found);
        }
        Self {
            request_id: r.subject_request_id.clone(),
            regulation: r.regulation,
            source: ErasureSource::Mparticle,
            erased_ms: cut_off(arrived_ms),
            submitted_ms: r.submitted_ms,
            keys,
            ignored_identities: ignored,
        }
    }
}

impl ErasureRequest {
    /// An erasure an operator makes for a request that arrived another way (`scripts/admin
    /// profile erase`): `kind` is `identity`, `email`, `phone` or `clevertap-id`. As of now;
    /// `None` if the value normalises to nothing this output stores.
    pub fn by_operator(
        kind: &str,
        value: &str,
        request_id: Option<String>,
        regulation: Regulation,
    ) -> Option<Self> {
        let subject_kind = match kind {
            "identity" => "customer_id",
            "email" => "email",
            "phone" => "phone",
            "clevertap-id" => crate::domain::protocol::PARTNER_IDENTITY,
            _ => return None,
        };
        let keys: BTreeSet<SubjectKey> = subject_keys(subject_kind, value).into_iter().collect();
        (!keys.is_empty()).then(|| Self {
            request_id: request_id
                .unwrap_or_else(|| format!("admin-{}", uuid::Uuid::new_v4().simple())),
            regulation,
            source: ErasureSource::Admin,
            erased_ms: cut_off(now_ms()),
            submitted_ms: None,
            keys,
            ignored_identities: 0,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureOutcome {
    Erased(ErasureAudit),
    /// The request was carried out before (a redelivery): nothing done again.
    AlreadyErased,
}

/// What the `erase` function is asked: one erasure in one project of its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseCommand {
    pub region: Region,
    pub project_id: String,
    pub request: ErasureRequest,
}

/// What the `erase` function answers: the outcome, or the class of the storage failure (so the
/// endpoint answers mParticle as if it had erased in process: 503 to retry, 500, 400).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EraseReply {
    Done(ErasureOutcome),
    Unavailable(String),
    Corrupt(String),
    Rejected(String),
}

impl EraseReply {
    fn of(result: Result<ErasureOutcome, StoreError>) -> Self {
        match result {
            Ok(o) => EraseReply::Done(o),
            Err(StoreError::Unavailable(m)) => EraseReply::Unavailable(m),
            Err(StoreError::Corrupt(m)) => EraseReply::Corrupt(m),
            Err(StoreError::Rejected(m)) => EraseReply::Rejected(m),
        }
    }

    fn into_result(self) -> Result<ErasureOutcome, StoreError> {
        match self {
            EraseReply::Done(o) => Ok(o),
            EraseReply::Unavailable(m) => Err(StoreError::Unavailable(m)),
            EraseReply::Corrupt(m) => Err(StoreError::Corrupt(m)),
            EraseReply::Rejected(m) => Err(StoreError::Rejected(m)),
        }
    }
}

/// The `erase` function's handler: carries out one command in its own region's tables.
pub async fn handle_command(store: &Store, command: EraseCommand) -> EraseReply {
    EraseReply::of(erase(store, command.region, &command.project_id, &command.request).await)
}

/// Who carries out an erasure for the mParticle endpoint. In AWS, the home region's `erase`
/// function, invoked synchronously (before the 200): only its role may delete a person's data,
/// so the internet-facing role writes nothing but batches and subscriptions. Locally and in
/// tests, the endpoint's own store.
#[derive(Clone)]
pub enum Eraser {
    InProcess(Store),
    Invoke(RemoteEraser),
}

/// The `erase` functions of every region, by name pattern (`{region}`), one Lambda client per
/// AWS region (built at init: no network call).
#[derive(Clone)]
pub struct RemoteEraser {
    function_pattern: String,
    clients: std::collections::HashMap<Region, aws_sdk_lambda::Client>,
}

impl RemoteEraser {
    pub fn new(
        function_pattern: &str,
        clients: std::collections::HashMap<Region, aws_sdk_lambda::Client>,
    ) -> Self {
        Self {
            function_pattern: function_pattern.to_owned(),
            clients,
        }
    }

    /// The function that erases in `region`.
    pub fn function_name(&self, region: Region) -> String {
        self.function_pattern.replace("{region}", region.as_str())
    }

    async fn erase(&self, command: &EraseCommand) -> Result<ErasureOutcome, StoreError> {
        let client = self.clients.get(&command.region).ok_or_else(|| {
            StoreError::Unavailable(format!("no Lambda client for {}", command.region.as_str()))
        })?;
        let payload = serde_json::to_vec(command)
            .map_err(|e| StoreError::Rejected(format!("erase command: {e}")))?;
        let out = client
            .invoke()
            .function_name(self.function_name(command.region))
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(format!("invoking erase: {e}")))?;
        if let Some(error) = out.function_error() {
            // A crash or timeout of the function: mParticle retries, the erasure resumes.
            return Err(StoreError::Unavailable(format!(
                "erase function failed: {error}"
            )));
        }
        let body = out.payload().map(|b| b.as_ref()).unwrap_or_default();
        serde_json::from_slice::<EraseReply>(body)
            .map_err(|e| StoreError::Unavailable(format!("erase function answered {e}")))?
            .into_result()
    }
}

impl Eraser {
    pub async fn erase(
        &self,
        region: Region,
        project_id: &str,
        request: &ErasureRequest,
    ) -> Result<ErasureOutcome, StoreError> {
        match self {
            Eraser::InProcess(store) => erase(store, region, project_id, request).await,
            Eraser::Invoke(remote) => {
                remote
                    .erase(&EraseCommand {
                        region,
                        project_id: project_id.to_owned(),
                        request: request.clone(),
                    })
                    .await
            }
        }
    }
}

/// What the erasure writes through: profiles with claims and holders, the erasure log, the
/// erased rows and events, memberships (the project's segments and a person's rows in them) and
/// the audit rows.
pub trait ErasurePorts: Profiles + ErasureLog + ErasedRows + Memberships + ErasureAudits {}
impl<T: Profiles + ErasureLog + ErasedRows + Memberships + ErasureAudits> ErasurePorts for T {}

/// How many profiles, memberships or tombstones are worked on at once.
const CONCURRENCY: usize = 8;

/// Carries out one erasure (see the module docs for the steps; each is idempotent, and the ones
/// that make a profile unfindable come last, so a retry after a failure finds what is left).
pub async fn erase(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    req: &ErasureRequest,
) -> Result<ErasureOutcome, StoreError> {
    // 0. Done before? The audit row is written last, so it marks a finished erasure.
    if store
        .erasure_audit(region, project_id, &req.request_id)
        .await?
        .is_some()
    {
        // An earlier attempt may have lost its answer before cleaning up.
        store
            .finish_erasure(region, project_id, &req.request_id)
            .await?;
        return Ok(ErasureOutcome::AlreadyErased);
    }
    // 1. Whom the request's values lead to now, recorded with the cut-off before anything is
    //    tombstoned: once a chunk sees a tombstone it may take back a claim it made, and a retry
    //    must still find that profile. The first attempt's cut-off stands: a retry arrives later,
    //    and rows it already scrubbed must not look older than it (docs/contract.md §2.8).
    let before = find_people(store, region, project_id, &req.keys).await?;
    let found = found_with_holders(store, region, project_id, before.people.keys()).await?;
    let begun = store
        .begin_erasure(region, project_id, &req.request_id, req.erased_ms, &found)
        .await?;
    let req = &ErasureRequest {
        erased_ms: begun.cut_off_ms,
        ..req.clone()
    };
    let mut removed = ErasureCounts {
        identities_ignored: req.ignored_identities.into(),
        values_shared: before.shared.len() as u64,
        ..ErasureCounts::default()
    };
    // A shared email or phone is not the subject's alone: no tombstone (it would block everyone
    // holding it), and it leads to no one.
    let own_keys: BTreeSet<SubjectKey> = req.keys.difference(&before.shared).cloned().collect();
    // 2. Tombstones of the subject's own values: from here on a chunk that writes the person
    //    finds them when it checks again after writing.
    let version = erasure_version(req.erased_ms);
    removed.tombstones =
        write_tombstones(store, region, project_id, req.erased_ms, &own_keys).await?;
    // 3. Whom again (a claim made before the tombstones landed), recorded too, with those found
    //    before; their Identities and CleverTap IDs are tombstoned.
    let (held, holders) =
        find_everyone(store, region, project_id, req, &begun, &mut removed).await?;
    // 4. Their data: the holders of their values first (only the profiles know those values, so
    //    a retry after a failure must still find the profiles), then memberships, events,
    //    claims and the profiles themselves.
    for (kind, value, ct) in &holders {
        remove_holder(store, region, project_id, *kind, value, ct).await?;
    }
    let erasure = ErasureAt {
        erased_ms: req.erased_ms,
        version: &version,
    };
    removed.add(&erase_profiles(store, region, project_id, &held.claims, erasure).await?);
    // 5. The audit row.
    let audit = ErasureAudit {
        request_id: req.request_id.clone(),
        regulation: req.regulation.as_str().to_owned(),
        source: req.source,
        erased_ms: req.erased_ms,
        submitted_ms: req.submitted_ms,
        completed_ms: now_ms(),
        removed,
    };
    // Written by an earlier attempt that lost its answer: the erasure stands all the same.
    let _written_before = store.put_erasure_audit(region, project_id, &audit).await?;
    store
        .finish_erasure(region, project_id, &req.request_id)
        .await?;
    Ok(ErasureOutcome::Erased(audit))
}

/// The claims that name one profile: those the subject's Identities found (findable again from
/// the request), and the profile's own Identity when no subject value led to it (findable only
/// through the profile, so deleted before it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProfileClaims {
    found: BTreeSet<String>,
    own: BTreeSet<String>,
}

/// What the erased people hold: the values tombstones remember (their CleverTap IDs and their
/// profiles' Identities: an email or phone on their profile may be someone else's too, so only
/// the request's own are remembered), and the claims per profile.
#[derive(Debug, Default, PartialEq, Eq)]
struct Held {
    remembered: BTreeSet<SubjectKey>,
    claims: BTreeMap<String, ProfileClaims>,
}

/// Pure: what the people found (CleverTap ID → the Identities whose claims led there) hold,
/// given their profile items.
fn what_they_hold(people: BTreeMap<String, BTreeSet<String>>, profiles: &[Profile]) -> Held {
    let mut held = Held::default();
    for (ct, found) in people {
        held.remembered.insert(SubjectKey::CleverTapId(ct.clone()));
        held.claims.insert(
            ct,
            ProfileClaims {
                found,
                own: BTreeSet::new(),
            },
        );
    }
    for p in profiles {
        let claims = held.claims.entry(p.clevertap_id.clone()).or_default();
        if let Some(identity) = &p.identity {
            held.remembered
                .insert(SubjectKey::Identity(identity.clone()));
            if !claims.found.contains(identity) {
                claims.own.insert(identity.clone());
            }
        }
    }
    held
}

/// When an erasure holds from: its cut-off, and the membership version that stands for it.
#[derive(Debug, Clone, Copy)]
struct ErasureAt<'a> {
    erased_ms: i64,
    version: &'a str,
}

/// Takes these profiles out of every segment at the erasure's version, then, per profile: the
/// feed's notice if it has Partner Sync events (they were published), its events, the claims
/// learned from the profile, the profile and the claims the subject's values found, in that
/// order (a retry finds the events still there until the notice is written).
async fn erase_profiles(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    claims: &BTreeMap<String, ProfileClaims>,
    erasure: ErasureAt<'_>,
) -> Result<ErasureCounts, StoreError> {
    let cts: Vec<String> = claims.keys().cloned().collect();
    let mut removed = ErasureCounts::default();
    (removed.memberships, removed.members_removed) =
        leave_their_segments(store, region, project_id, &cts, erasure.version).await?;
    for (ct, profile_claims) in claims {
        let notice = profile_erased(project_id, region, ct, erasure.erased_ms, now_ms());
        removed.events += store
            .delete_profile_events(region, project_id, ct, erasure.erased_ms, &notice)
            .await?;
        for identity in &profile_claims.own {
            removed.claims += u64::from(
                store
                    .delete_claim(region, project_id, identity, ct)
                    .await?
                    .applied(),
            );
        }
        removed.profiles += u64::from(
            store
                .delete_profile(region, project_id, ct)
                .await?
                .applied(),
        );
        for identity in &profile_claims.found {
            removed.claims += u64::from(
                store
                    .delete_claim(region, project_id, identity, ct)
                    .await?
                    .applied(),
            );
        }
    }
    Ok(removed)
}

/// Takes these profiles out of every segment they have a row in (see `Store::erase_membership`);
/// answers (membership rows cleared, members removed). The rows are found in bulk (BatchGetItem,
/// 100 keys a call, strongly consistent) and only those that exist are written, so the writes
/// grow with what the person holds and a retry rewrites nothing already erased. A change still in
/// flight meets the CleverTap ID's tombstone in materialize, before or after it writes.
async fn leave_their_segments(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    cts: &[String],
    version: &str,
) -> Result<(u64, u64), StoreError> {
    if cts.is_empty() {
        return Ok((0, 0));
    }
    let now = now_ms();
    // Where they have rows: the segments their events name (a member row always came with an
    // Added event; a row that never held a member holds no Identity). Calls grow with what the
    // person holds, not with the project's segments.
    let mut theirs: Vec<(i64, &str)> = Vec::new();
    for ct in cts {
        let segments = store.segments_of_events(region, project_id, ct).await?;
        theirs.extend(segments.into_iter().map(|aud| (aud, ct.as_str())));
    }
    let audience_ids: Vec<i64> = theirs
        .iter()
        .map(|(aud, _)| *aud)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let segments = store
        .segments_by_id(region, project_id, &audience_ids)
        .await?;
    let every: Vec<(SegmentLayout, &str)> = (theirs.iter())
        .map(|(aud, ct)| {
            let layout =
                SegmentLayout::of_read(*aud, segments.get(aud), store.new_segment_buckets());
            (layout, *ct)
        })
        .collect();
    let by_id: BTreeMap<i64, SegmentLayout> =
        every.iter().map(|(l, _)| (l.audience_id, *l)).collect();
    let held = store.pair_states(region, project_id, &every).await?;
    let pairs: Vec<(SegmentLayout, String)> = held
        .into_keys()
        .filter_map(|(aud, ct)| Some((*by_id.get(&aud)?, ct)))
        .collect();
    let rows: Vec<RowErased> = stream::iter(pairs)
        .map(|(aud, ct)| async move {
            store
                .erase_membership(region, project_id, aud, &ct, version, now)
                .await
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let cleared = rows
        .iter()
        .filter(|r| matches!(r, RowErased::MemberRemoved | RowErased::Scrubbed))
        .count();
    let removed = rows
        .iter()
        .filter(|r| **r == RowErased::MemberRemoved)
        .count();
    Ok((cleared as u64, removed as u64))
}

/// Every profile the request's values lead to (its Identities' claims, the holders and indexes
/// of its emails and phones, a CleverTap ID itself) and what they hold; their CleverTap IDs and
/// Identities are tombstoned too. The email and phone found on those profiles are not followed to
/// other profiles: someone who only shares an email or phone with the subject is not the subject
/// (docs/contract.md §2.8). Answers the holders records to take them off.
async fn find_everyone(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    req: &ErasureRequest,
    recorded: &Begun,
    removed: &mut ErasureCounts,
) -> Result<(Held, BTreeSet<HolderOf>), StoreError> {
    let Found {
        mut people,
        mut holders,
        ..
    } = find_people(store, region, project_id, &req.keys).await?;
    for ct in &recorded.clevertap_ids {
        people.entry(ct.clone()).or_default();
    }
    let cts: Vec<String> = people.keys().cloned().collect();
    let profiles = store.profiles(region, project_id, &cts).await?;
    let mut found = Begun::default();
    for p in &profiles {
        found.holders.extend(holders_of(p));
    }
    found.clevertap_ids = (people.keys())
        .filter(|ct| !recorded.clevertap_ids.contains(*ct))
        .cloned()
        .collect();
    found.holders.retain(|h| !recorded.holders.contains(h));
    if !found.clevertap_ids.is_empty() || !found.holders.is_empty() {
        let _begun =
            (store.begin_erasure(region, project_id, &req.request_id, req.erased_ms, &found))
                .await?;
    }
    holders.extend(found.holders);
    holders.extend(recorded.holders.iter().cloned());
    let held = what_they_hold(people, &profiles);
    let more: BTreeSet<SubjectKey> = held.remembered.difference(&req.keys).cloned().collect();
    removed.tombstones += write_tombstones(store, region, project_id, req.erased_ms, &more).await?;
    Ok((held, holders))
}

/// A holders record: this value (email or phone) leads to this CleverTap ID.
type HolderOf = (HeldValue, String, String);

/// The holders records naming a profile: its email and phone, and every value it recorded
/// (`old@` names the profile in its holders until it is taken off).
fn holders_of(p: &Profile) -> Vec<HolderOf> {
    let current = [HeldValue::Email, HeldValue::Phone]
        .into_iter()
        .filter_map(|kind| Some((kind, kind.of(p)?.to_owned())));
    current
        .chain(p.held.keys().cloned())
        .map(|(kind, value)| (kind, value, p.clevertap_id.clone()))
        .collect()
}

/// These CleverTap IDs with the holders records their profiles name, read before anything is
/// tombstoned: recorded, so a retry can take them off after a covered chunk took a profile back.
async fn found_with_holders(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    clevertap_ids: impl Iterator<Item = &String>,
) -> Result<Begun, StoreError> {
    let cts: Vec<String> = clevertap_ids.cloned().collect();
    let profiles = store.profiles(region, project_id, &cts).await?;
    Ok(Begun {
        cut_off_ms: 0,
        clevertap_ids: cts.into_iter().collect(),
        holders: profiles.iter().flat_map(holders_of).collect(),
    })
}

/// Whom the subject's keys lead to: the CleverTap IDs, each with the claimed Identities that
/// led there, the holders records that led there, and the request's emails and phones held by
/// more than [`SHARED_VALUE_HOLDERS`] profiles (they lead nowhere). Emails and phones are read
/// from their holders (strongly consistent; `scripts/admin holders backfill` recorded those of
/// profiles written before holders were).
struct Found {
    people: BTreeMap<String, BTreeSet<String>>,
    holders: BTreeSet<HolderOf>,
    shared: BTreeSet<SubjectKey>,
}

async fn find_people(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    keys: &BTreeSet<SubjectKey>,
) -> Result<Found, StoreError> {
    let mut found = Found {
        people: BTreeMap::new(),
        holders: BTreeSet::new(),
        shared: BTreeSet::new(),
    };
    let identities: HashSet<&str> = keys
        .iter()
        .filter_map(|k| match k {
            SubjectKey::Identity(i) => Some(i.as_str()),
            _ => None,
        })
        .collect();
    for (identity, ct) in store
        .claimed_identities(region, project_id, &identities)
        .await?
    {
        found.people.entry(ct).or_default().insert(identity);
    }
    for key in keys {
        let (kind, value) = match key {
            SubjectKey::Email(e) => (HeldValue::Email, e),
            SubjectKey::Phone(p) => (HeldValue::Phone, p),
            SubjectKey::CleverTapId(ct) => {
                found.people.entry(ct.clone()).or_default();
                continue;
            }
            SubjectKey::Identity(_) => continue,
        };
        let held = store.holders(region, project_id, kind, value).await?;
        if held.len() > SHARED_VALUE_HOLDERS {
            found.shared.insert(key.clone());
            continue;
        }
        for ct in held {
            found.holders.insert((kind, value.clone(), ct.clone()));
            found.people.entry(ct).or_default();
        }
    }
    Ok(found)
}

async fn write_tombstones(
    store: &impl ErasurePorts,
    region: Region,
    project_id: &str,
    erased_ms: i64,
    remembered: &BTreeSet<SubjectKey>,
) -> Result<u64, StoreError> {
    if remembered.is_empty() {
        return Ok(0);
    }
    // The mark first: a check that finds a tombstone then finds the mark too.
    store.mark_erasures(region, project_id).await?;
    let keys = ErasureLog::tombstone_keys(store).await?;
    let hasher = TombstoneHasher {
        keys: &keys,
        project: project_id,
        legacy_salt: None,
    };
    let hashes: Vec<String> = remembered
        .iter()
        .map(|k| {
            let (kind, value) = k.tombstone();
            hasher.written(kind, value)
        })
        .collect();
    let written = hashes.len() as u64;
    stream::iter(hashes)
        .map(|h| async move {
            // An older erasure's time never replaces a newer one's.
            let _newer_stands = store
                .write_tombstone(region, project_id, &h, erased_ms)
                .await?;
            Ok::<_, StoreError>(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erased_profiles_values_are_remembered_and_their_claims_go_in_order() {
        let people = BTreeMap::from([
            ("__a".to_owned(), BTreeSet::new()),
            ("__b".to_owned(), BTreeSet::from(["c-2".to_owned()])),
        ]);
        let profile = |ct: &str, identity: &str| Profile {
            clevertap_id: ct.into(),
            identity: Some(identity.into()),
            phone: Some("+14155550100".into()),
            ..Profile::default()
        };
        let held = what_they_hold(people, &[profile("__a", "c-1"), profile("__b", "c-2")]);
        assert_eq!(
            held.remembered,
            BTreeSet::from([
                SubjectKey::CleverTapId("__a".into()),
                SubjectKey::CleverTapId("__b".into()),
                SubjectKey::Identity("c-1".into()),
                SubjectKey::Identity("c-2".into()),
            ])
        );
        // c-1 is findable only through __a's profile: it goes before the profile.
        assert_eq!(held.claims["__a"].own, BTreeSet::from(["c-1".to_owned()]));
        // c-2 was found from the request: it goes after, and stays findable till then.
        assert!(held.claims["__b"].own.is_empty());
        assert_eq!(held.claims["__b"].found, BTreeSet::from(["c-2".to_owned()]));
    }

    #[test]
    fn operators_name_one_kind_of_value() {
        let r = ErasureRequest::by_operator("email", " Ann@Example.com ", None, Regulation::Gdpr)
            .unwrap();
        assert_eq!(r.source, ErasureSource::Admin);
        assert!(r.request_id.starts_with("admin-"));
        assert!(
            r.keys
                .contains(&SubjectKey::Email("ann@example.com".into()))
        );
        assert!(ErasureRequest::by_operator("mpid", "1", None, Regulation::Gdpr).is_none());
    }
}

/// The erasure on the twin: what goes, a retry after a failure part-way, a lost answer.
#[cfg(test)]
mod on_the_twin {
    use super::*;
    use crate::domain::changes::{ChangeAction, MembershipChange};
    use crate::domain::profile_merge::{ProfileMerge, Versioned, data_version};
    use crate::store::feed::FeedRecord;
    use crate::twin::{Fault, Twin};

    const P: &str = "P1";
    const R: Region = Region::Eu1;
    const TS: i64 = 1_700_000_000_000;

    /// Ann: Identity c-1, CleverTap ID ct-ann, an email, and a member of audience 7.
    async fn ann(twin: &Twin) {
        twin.setup_project(R, P);
        let claimed = twin
            .claim_identity(R, P, "c-1", "ct-ann", "m1", TS)
            .await
            .unwrap();
        assert!(claimed.won);
        let version = data_version(TS, "m1", 0);
        let merge = ProfileMerge {
            identity: Some(Versioned {
                value: "c-1".into(),
                version: version.clone(),
            }),
            email: Some(Versioned {
                value: "ann@x.io".into(),
                version,
            }),
            ..ProfileMerge::default()
        };
        twin.add_holder(R, P, HeldValue::Email, "ann@x.io", "ct-ann")
            .await
            .unwrap();
        let write = merge.plan(None).unwrap();
        assert!(
            twin.write_profile(R, P, "ct-ann", &write, TS)
                .await
                .unwrap()
                .applied()
        );
        let change = MembershipChange {
            clevertap_id: "ct-ann".into(),
            identity: Some("c-1".into()),
            audience_id: 7,
            audience_name: Some("Cart".into()),
            action: ChangeAction::Add,
            ts_ms: TS,
            message_id: "m1".into(),
            profile_index: 0,
            entry_index: 0,
            received_ms: None,
            way: Default::default(),
        };
        crate::stages::materialize::materialize_changes(twin, R, P, &[change])
            .await
            .unwrap();
    }

    fn request(id: &str) -> ErasureRequest {
        ErasureRequest {
            request_id: id.into(),
            regulation: Regulation::Gdpr,
            source: crate::domain::erasure::ErasureSource::Mparticle,
            erased_ms: TS + 1_000,
            submitted_ms: None,
            keys: [SubjectKey::Identity("c-1".into())].into(),
            ignored_identities: 0,
        }
    }

    async fn assert_ann_is_gone(twin: &Twin) {
        assert!(twin.profiles_of(R, P).is_empty(), "her profile");
        assert!(twin.claims_in(R, P).is_empty(), "her claim");
        assert!(twin.holders_in(R, P).is_empty(), "her email's holders item");
        let rows = twin.membership_rows(R, P);
        assert!(
            rows.iter().all(|r| !r.member && r.identity.is_none()),
            "{rows:?}"
        );
        let counts = twin.segment_counts(R, P, &[7]).await.unwrap();
        assert_eq!(counts[&7].member_count, 0);
        let records = twin.feed_records(R);
        assert!(
            !records.iter().any(|r| matches!(r, FeedRecord::Sync(_))),
            "her Partner Sync events"
        );
        assert!(
            records.iter().any(|r| matches!(r, FeedRecord::Notice(_))),
            "subscribers are told"
        );
    }

    #[tokio::test]
    async fn an_erasure_takes_everything_of_the_person_and_a_redelivery_does_nothing_again() {
        let twin = Twin::new();
        ann(&twin).await;
        let ErasureOutcome::Erased(audit) = erase(&twin, R, P, &request("r1")).await.unwrap()
        else {
            panic!("carried out");
        };
        assert_eq!(
            (
                audit.removed.profiles,
                audit.removed.claims,
                audit.removed.members_removed
            ),
            (1, 1, 1)
        );
        assert_ann_is_gone(&twin).await;
        assert!(twin.erasure_marks(R, P).await.unwrap().had_erasure);
        let again = erase(&twin, R, P, &request("r1")).await.unwrap();
        assert_eq!(again, ErasureOutcome::AlreadyErased);
    }

    #[tokio::test]
    async fn an_erasure_failing_part_way_or_losing_its_answer_completes_on_the_retry() {
        for (call, fault) in [
            ("erasures.erase_membership", Fault::Transient),
            ("erasures.delete_profile_events", Fault::TimeoutAfterCommit),
            ("profiles.delete_profile", Fault::Throttle),
            ("profiles.drop_holders_if_empty", Fault::Transient),
            ("erasures.put_erasure_audit", Fault::TimeoutAfterCommit),
        ] {
            let twin = Twin::new();
            ann(&twin).await;
            twin.inject(call, fault);
            let failed = erase(&twin, R, P, &request("r1")).await;
            assert!(
                matches!(&failed, Err(e) if e.is_transient()),
                "{call}: {failed:?}"
            );
            let retried = erase(&twin, R, P, &request("r1")).await.unwrap();
            if call == "erasures.put_erasure_audit" {
                assert_eq!(
                    retried,
                    ErasureOutcome::AlreadyErased,
                    "the audit row stands"
                );
            }
            assert_ann_is_gone(&twin).await;
        }
    }

    /// #34 defect 5: the retry arrives a minute later; it keeps the first attempt's cut-off, so
    /// what the first attempt scrubbed is not older than the retry and is not rewritten.
    #[tokio::test]
    async fn a_retried_erasure_keeps_the_cut_off_of_its_first_attempt() {
        let twin = Twin::new();
        ann(&twin).await;
        twin.inject("profiles.delete_profile", Fault::Transient);
        let first = request("r1");
        assert!(erase(&twin, R, P, &first).await.is_err());
        let tombstones = twin.tombstones_in(R, P);
        assert!(!tombstones.is_empty());
        let later = ErasureRequest {
            erased_ms: first.erased_ms + 60_000,
            ..first.clone()
        };
        let ErasureOutcome::Erased(audit) = erase(&twin, R, P, &later).await.unwrap() else {
            panic!("carried out");
        };
        assert_eq!(audit.erased_ms, first.erased_ms, "the audit row's cut-off");
        assert_eq!(
            twin.tombstones_in(R, P),
            tombstones,
            "no tombstone rewritten"
        );
        assert_ann_is_gone(&twin).await;
    }

    /// #34 defect 4: Bob shares Ann's phone and nothing else; erasing Ann leaves Bob whole, and
    /// blocks none of his batches.
    #[tokio::test]
    async fn someone_who_only_shares_a_phone_with_the_subject_is_left_alone() {
        let twin = Twin::new();
        ann(&twin).await;
        let phone = "+14155550100";
        for (ct, identity) in [("ct-ann", "c-1"), ("ct-bob", "c-2")] {
            let _ = twin
                .claim_identity(R, P, identity, ct, "m2", TS)
                .await
                .unwrap();
            let current = twin.profile(R, P, ct).await.unwrap();
            let merge = ProfileMerge {
                phone: Some(Versioned {
                    value: phone.into(),
                    version: data_version(TS, "m2", 1),
                }),
                ..ProfileMerge::default()
            };
            twin.add_holder(R, P, HeldValue::Phone, phone, ct)
                .await
                .unwrap();
            let write = merge.plan(current.as_ref()).unwrap();
            assert!(
                twin.write_profile(R, P, ct, &write, TS)
                    .await
                    .unwrap()
                    .applied()
            );
        }

        erase(&twin, R, P, &request("r1")).await.unwrap();

        let left: Vec<String> = twin
            .profiles_of(R, P)
            .into_iter()
            .map(|p| p.clevertap_id)
            .collect();
        assert_eq!(left, ["ct-bob"], "Bob's profile stays");
        assert_eq!(
            twin.claims_in(R, P).get("c-2").map(String::as_str),
            Some("ct-bob")
        );
        let holders = twin.holders_in(R, P);
        assert_eq!(
            holders.get(&(HeldValue::Phone, phone.to_owned())),
            Some(&["ct-bob".to_owned()].into()),
            "Ann is taken off the phone's holders, Bob stays on them"
        );
        // A batch of Bob's sent before the erasure is not covered by it.
        let keys = ErasureLog::tombstone_keys(&twin).await.unwrap();
        let hasher = crate::domain::erasure::TombstoneHasher {
            keys: &keys,
            project: P,
            legacy_salt: None,
        };
        let phone_hashes = hasher.checked(crate::domain::erasure::TombstoneKind::Phone, phone);
        let found = twin.tombstones(R, P, &phone_hashes).await.unwrap();
        assert!(found.is_empty(), "the shared phone is not tombstoned");
    }

    /// #34 invariant 4: the erasure's calls grow with what the person holds, not with the
    /// project's segments (it once read every segment, and every row of the person in each).
    #[tokio::test]
    async fn an_erasures_calls_do_not_grow_with_the_projects_segments() {
        let (mut calls, mut keys) = (Vec::new(), Vec::new());
        for others in [2_i64, 60] {
            let twin = Twin::new();
            ann(&twin).await;
            let bob: Vec<MembershipChange> = (0..others)
                .map(|i| MembershipChange {
                    clevertap_id: "ct-bob".into(),
                    identity: Some("c-2".into()),
                    audience_id: 100 + i,
                    audience_name: Some("Other".into()),
                    action: ChangeAction::Add,
                    ts_ms: TS,
                    message_id: "m9".into(),
                    profile_index: 0,
                    entry_index: i as u32,
                    received_ms: None,
                    way: Default::default(),
                })
                .collect();
            crate::stages::materialize::materialize_changes(&twin, R, P, &bob)
                .await
                .unwrap();
            let (before, read_before) = (twin.calls().len(), twin.keys_read());
            erase(&twin, R, P, &request("r1")).await.unwrap();
            calls.push(twin.calls().len() - before);
            keys.push(twin.keys_read() - read_before);
            let rows = twin.membership_rows(R, P);
            let ann_rows: Vec<_> = rows.iter().filter(|r| r.clevertap_id == "ct-ann").collect();
            assert!(ann_rows.iter().all(|r| !r.member && r.identity.is_none()));
            let bob_members = rows.iter().filter(|r| r.member).count() as i64;
            assert_eq!(bob_members, others, "Bob stays in every segment");
            assert!(twin.profiles_of(R, P).is_empty());
        }
        assert_eq!(
            calls[0], calls[1],
            "calls with 3 and with 61 segments: {calls:?}"
        );
        assert_eq!(keys, [1, 1], "rows read: Ann's one, in her one segment");
    }

    /// #34 invariant 3: a placeholder phone held by more profiles than one person has, named in
    /// a request, erases and blocks none of them; the request's other values still erase Ann.
    #[tokio::test]
    async fn a_placeholder_phone_in_a_request_erases_and_blocks_no_one_else() {
        let twin = Twin::new();
        ann(&twin).await;
        let placeholder = "+15555550000";
        let holders = SHARED_VALUE_HOLDERS + 1;
        for i in 0..holders {
            let ct = if i == 0 {
                "ct-ann".to_owned()
            } else {
                format!("ct-{i}")
            };
            let merge = ProfileMerge {
                phone: Some(Versioned {
                    value: placeholder.into(),
                    version: data_version(TS, "m2", i as u32),
                }),
                ..ProfileMerge::default()
            };
            let current = twin.profile(R, P, &ct).await.unwrap();
            let write = merge.plan(current.as_ref()).unwrap();
            assert!(
                twin.write_profile(R, P, &ct, &write, TS)
                    .await
                    .unwrap()
                    .applied()
            );
            twin.add_holder(R, P, HeldValue::Phone, placeholder, &ct)
                .await
                .unwrap();
        }
        let only_the_phone = ErasureRequest {
            keys: [SubjectKey::Phone(placeholder.into())].into(),
            ..request("r1")
        };
        let ErasureOutcome::Erased(audit) = erase(&twin, R, P, &only_the_phone).await.unwrap()
        else {
            panic!("answered");
        };
        assert_eq!(
            (audit.removed.profiles, audit.removed.values_shared),
            (0, 1)
        );
        assert_eq!(twin.profiles_of(R, P).len(), holders, "no one erased");

        let ann_and_the_phone = ErasureRequest {
            keys: [
                SubjectKey::Identity("c-1".into()),
                SubjectKey::Phone(placeholder.into()),
            ]
            .into(),
            ..request("r2")
        };
        let ErasureOutcome::Erased(audit) = erase(&twin, R, P, &ann_and_the_phone).await.unwrap()
        else {
            panic!("answered");
        };
        assert_eq!(
            (audit.removed.profiles, audit.removed.values_shared),
            (1, 1)
        );
        let left = twin.profiles_of(R, P);
        assert_eq!(left.len(), holders - 1);
        assert!(left.iter().all(|p| p.clevertap_id != "ct-ann"));
        assert_eq!(
            twin.holders_in(R, P)[&(HeldValue::Phone, placeholder.to_owned())].len(),
            holders - 1,
            "Ann is taken off the placeholder's holders, no one else"
        );
        let keys = ErasureLog::tombstone_keys(&twin).await.unwrap();
        let hasher = crate::domain::erasure::TombstoneHasher {
            keys: &keys,
            project: P,
            legacy_salt: None,
        };
        let hashes = hasher.checked(crate::domain::erasure::TombstoneKind::Phone, placeholder);
        let found = twin.tombstones(R, P, &hashes).await.unwrap();
        assert!(
            found.is_empty(),
            "the placeholder is not tombstoned: no one is blocked"
        );
    }

    /// A request naming only an email finds the profile that got it a moment ago, through the
    /// value's holders (read strongly consistent).
    #[tokio::test]
    async fn an_email_is_followed_through_its_holders() {
        let twin = Twin::new();
        ann(&twin).await;
        assert!(
            !twin
                .holders(R, P, HeldValue::Email, "ann@x.io")
                .await
                .unwrap()
                .is_empty(),
            "resolve recorded the holder"
        );
        let mut by_email = request("r-email");
        by_email.keys = [SubjectKey::Email("ann@x.io".into())].into();
        erase(&twin, R, P, &by_email).await.unwrap();
        assert_ann_is_gone(&twin).await;
    }
}
