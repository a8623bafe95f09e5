//! The reference model: what the tables must hold once every message is delivered, every
//! erasure answered and every stream drained, computed plainly from the workload, and the
//! invariants checked against the twin. An erased person's users in messages stamped before the
//! cut-off are as if never sent; later ones bring them back (a new profile for an Identity, the
//! same CleverTap ID for a Partner ID).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::workload::{CUT_OFF_MS, Message, Person, User, Workload};
use super::{P, R};
use crate::domain::calendar::month_of;
use crate::domain::changes::{ChangeAction, MembershipChange};
use crate::domain::feed::{FeedKind, SyncEventRow};
use crate::domain::profile_merge::{HeldValue, data_version};
use crate::domain::records::InboxStatus;
use crate::domain::segment_state::SyncAction;
use crate::ports::inbox::{ChunkKey, Inbox};
use crate::ports::memberships::Memberships;
use crate::ports::profiles::Profiles;
use crate::store::feed::FeedRecord;
use crate::twin::{Twin, TwinBus};

/// Whom a user's profile is: a CleverTap ID given, or an Identity to claim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    CleverTapId(String),
    Identity(String),
}

/// The ladder, plainly: Partner ID, else Customer ID, else the mParticle ID of a user with an
/// email or phone; else skipped. (It runs per audience entry's connection: a user in no
/// audience is not resolved at all.)
fn key_of(workload: &Workload, user: &User) -> Option<Key> {
    if user.entries.is_empty() {
        return None;
    }
    match &workload.people[user.person] {
        Person::Partner(ct) => Some(Key::CleverTapId(ct.clone())),
        Person::Customer(id) => Some(Key::Identity(id.clone())),
        Person::Mpid(m) if user.email.is_some() || user.phone.is_some() => {
            Some(Key::Identity(m.clone()))
        }
        Person::Mpid(_) => None,
    }
}

/// One change as the stages version it.
fn change_of(
    message: &Message,
    profile: usize,
    entry: usize,
    aud: i64,
    add: bool,
) -> MembershipChange {
    MembershipChange {
        clevertap_id: String::new(),
        identity: None,
        audience_id: aud,
        audience_name: None,
        action: if add {
            ChangeAction::Add
        } else {
            ChangeAction::Delete
        },
        ts_ms: message.ts_ms,
        message_id: message.id.clone(),
        profile_index: profile as u32,
        entry_index: entry as u32,
        received_ms: None,
        way: Default::default(),
    }
}

/// What the model expects of one profile.
#[derive(Debug, Default)]
struct ProfileExpectation {
    /// (data version, value), newest kept.
    email: Option<(String, String)>,
    phone: Option<(String, String)>,
    /// Every email and phone sent for it: the holders naming it are exactly these.
    held: BTreeSet<(HeldValue, String)>,
}

/// One change sent for a (segment, person).
#[derive(Debug, Clone)]
struct Sent {
    version: String,
    add: bool,
    change_id: String,
}

pub struct Model {
    /// (audience, person) → every change sent (and not erased).
    changes: BTreeMap<(i64, Key), Vec<Sent>>,
    profiles: BTreeMap<Key, ProfileExpectation>,
    /// Every (message, chunk) stored.
    chunks: Vec<String>,
    /// Per DSR: the change ids its erasure takes back (sent before the cut-off).
    erased_changes: Vec<BTreeSet<String>>,
    /// Per audience: the changes the bulk way received (every entry of a bulk message).
    bulk_received: BTreeMap<i64, u64>,
}

/// The person a DSR names, as the ladder keys them.
fn erased_key(workload: &Workload, person: usize) -> Key {
    match &workload.people[person] {
        Person::Partner(ct) => Key::CleverTapId(ct.clone()),
        Person::Customer(id) | Person::Mpid(id) => Key::Identity(id.clone()),
    }
}

impl Model {
    pub fn of(workload: &Workload) -> Self {
        let mut changes: BTreeMap<(i64, Key), Vec<Sent>> = BTreeMap::new();
        let mut profiles: BTreeMap<Key, ProfileExpectation> = BTreeMap::new();
        let erased: Vec<Key> = (workload.erasures.iter())
            .map(|d| erased_key(workload, d.person))
            .collect();
        let mut erased_changes = vec![BTreeSet::new(); erased.len()];
        for m in &workload.messages {
            for (index, user) in m.users.iter().enumerate() {
                let Some(key) = key_of(workload, user) else {
                    continue;
                };
                if m.ts_ms < CUT_OFF_MS && erased.contains(&key) {
                    for (entry, (aud, add)) in user.entries.iter().enumerate() {
                        let id = change_of(m, index, entry, *aud, *add).change_id();
                        for (d, k) in erased.iter().enumerate() {
                            if *k == key {
                                erased_changes[d].insert(id.clone());
                            }
                        }
                    }
                    continue;
                }
                let version = data_version(m.ts_ms, &m.id, index as u32);
                let p = profiles.entry(key.clone()).or_default();
                let newer = |held: &Option<(String, String)>| {
                    held.as_ref().is_none_or(|(v, _)| *v < version)
                };
                if let Some(e) = user.email.as_ref().filter(|_| newer(&p.email)) {
                    p.email = Some((version.clone(), e.clone()));
                }
                if let Some(ph) = user.phone.as_ref().filter(|_| newer(&p.phone)) {
                    p.phone = Some((version.clone(), ph.clone()));
                }
                p.held
                    .extend(user.email.iter().map(|e| (HeldValue::Email, e.clone())));
                p.held
                    .extend(user.phone.iter().map(|ph| (HeldValue::Phone, ph.clone())));
                for (entry, (aud, add)) in user.entries.iter().enumerate() {
                    let c = change_of(m, index, entry, *aud, *add);
                    changes.entry((*aud, key.clone())).or_default().push(Sent {
                        version: c.version(),
                        add: *add,
                        change_id: c.change_id(),
                    });
                }
            }
        }
        let chunks = workload.messages.iter().map(|m| m.id.clone()).collect();
        let mut bulk_received: BTreeMap<i64, u64> = BTreeMap::new();
        for m in workload.messages.iter().filter(|m| m.bulk) {
            for (aud, _) in m.users.iter().flat_map(|u| &u.entries) {
                *bulk_received.entry(*aud).or_default() += 1;
            }
        }
        Model {
            changes,
            profiles,
            chunks,
            erased_changes,
            bulk_received,
        }
    }

    /// Checks the twin against the model; answers every violation found. `answered`: per DSR,
    /// how many entries the bus had when its erasure answered 200.
    pub async fn check(
        &self,
        twin: &Twin,
        bus: &TwinBus,
        answered: &[Option<usize>],
    ) -> Vec<String> {
        let mut v = Vec::new();
        let claims = twin.claims_in(R, P);
        let ct_of = |key: &Key| -> Option<String> {
            match key {
                Key::CleverTapId(ct) => Some(ct.clone()),
                Key::Identity(id) => claims.get(id).cloned(),
            }
        };
        self.check_liveness(twin, &mut v).await;
        self.check_progress(twin, &mut v).await;
        self.check_profiles(twin, &claims, &ct_of, &mut v).await;
        let records = twin.feed_records(R);
        let stored: Vec<&SyncEventRow> = (records.iter())
            .filter_map(|r| match r {
                FeedRecord::Sync(e) => Some(e),
                FeedRecord::Notice(_) => None,
            })
            .collect();
        let members = self.check_memberships(twin, &stored, &ct_of, &mut v);
        let ever = events_ever_stored(twin);
        check_counts(twin, &members, &ever, &mut v).await;
        self.check_feed(bus, &stored, answered, &mut v);
        v
    }

    /// Every chunk ends materialized.
    async fn check_liveness(&self, twin: &Twin, v: &mut Vec<String>) {
        for message_id in &self.chunks {
            let key = ChunkKey {
                project_id: P,
                message_id,
                chunk: 0,
            };
            match twin.chunk_row(R, key).await {
                Ok(Some(row)) if row.status == InboxStatus::Materialized => {}
                Ok(Some(row)) => v.push(format!(
                    "liveness: chunk of {message_id} ended {:?} ({:?})",
                    row.status, row.failure
                )),
                other => v.push(format!("liveness: chunk of {message_id}: {other:?}")),
            }
        }
    }

    /// Each audience's import progress counted every bulk change exactly once at each step,
    /// however often its message was delivered or its chunk worked: all received, resolved and
    /// done once every chunk is materialized.
    async fn check_progress(&self, twin: &Twin, v: &mut Vec<String>) {
        let audiences: BTreeSet<i64> = (self.changes.keys().map(|(a, _)| *a))
            .chain(self.bulk_received.keys().copied())
            .collect();
        for aud in audiences {
            let received = self.bulk_received.get(&aud).copied().unwrap_or(0);
            let now = crate::domain::protocol::now_ms();
            let counts = match twin.import_progress(R, P, aud, now).await {
                Ok(reading) => reading.counts,
                Err(e) => {
                    v.push(format!("progress: audience {aud} unreadable: {e}"));
                    continue;
                }
            };
            let expected = (received, received, received, 0);
            let got = (
                counts.received,
                counts.resolved,
                counts.done(),
                counts.failed,
            );
            if got != expected {
                v.push(format!(
                    "progress: audience {aud} counted (received, resolved, done, failed) {got:?}, \
                     the bulk way carried {expected:?}"
                ));
            }
        }
    }

    /// One profile per person the ladder finds, each field newest by version, and each email
    /// and phone recorded among the holders of its value.
    async fn check_profiles(
        &self,
        twin: &Twin,
        claims: &HashMap<String, String>,
        ct_of: &impl Fn(&Key) -> Option<String>,
        v: &mut Vec<String>,
    ) {
        let identities: BTreeSet<&String> = (self.profiles.keys())
            .filter_map(|k| match k {
                Key::Identity(id) => Some(id),
                Key::CleverTapId(_) => None,
            })
            .collect();
        let claimed: BTreeSet<&String> = claims.keys().collect();
        if claimed != identities {
            v.push(format!(
                "claims: {claimed:?} claimed, the model has {identities:?}"
            ));
        }
        let stored = twin.profiles_of(R, P);
        if stored.len() != self.profiles.len() {
            v.push(format!(
                "profiles: {} stored, {} expected",
                stored.len(),
                self.profiles.len()
            ));
        }
        let holders = twin.holders_in(R, P);
        let mut expected_holders: BTreeSet<(HeldValue, String, String)> = BTreeSet::new();
        for (key, expected) in &self.profiles {
            if let Some(ct) = ct_of(key) {
                for (kind, value) in &expected.held {
                    expected_holders.insert((*kind, value.clone(), ct.clone()));
                }
            }
        }
        let held: BTreeSet<(HeldValue, String, String)> = (holders.iter())
            .flat_map(|((kind, value), cts)| {
                cts.iter().map(|ct| (*kind, value.clone(), ct.clone()))
            })
            .collect();
        for extra in held.difference(&expected_holders) {
            v.push(format!(
                "holders: {extra:?} names a profile that was never sent it, or was erased"
            ));
        }
        for (key, expected) in &self.profiles {
            let Some(ct) = ct_of(key) else {
                v.push(format!("profiles: {key:?} has no claim"));
                continue;
            };
            let Ok(Some(profile)) = twin.profile(R, P, &ct).await else {
                v.push(format!("profiles: {key:?} ({ct}) missing"));
                continue;
            };
            let stray: Vec<&(HeldValue, String)> = (profile.held.keys())
                .filter(|e| !expected.held.contains(*e))
                .collect();
            if !stray.is_empty() {
                v.push(format!(
                    "erasure: {ct} records {stray:?}, which no kept message sent it"
                ));
            }
            let want = |f: &Option<(String, String)>| f.as_ref().map(|(_, value)| value.clone());
            if profile.email != want(&expected.email) || profile.phone != want(&expected.phone) {
                v.push(format!(
                    "profiles: {ct} holds {:?}/{:?}, newest are {:?}/{:?}",
                    profile.email,
                    profile.phone,
                    want(&expected.email),
                    want(&expected.phone)
                ));
            }
            for kind in [HeldValue::Email, HeldValue::Phone] {
                let Some(value) = kind.of(&profile) else {
                    continue;
                };
                let recorded =
                    (holders.get(&(kind, value.to_owned()))).is_some_and(|h| h.contains(&ct));
                if !recorded {
                    v.push(format!(
                        "holders: {ct} holds a {kind:?} not recorded as held"
                    ));
                }
            }
        }
    }

    /// The newest change of each pair decides membership; each pair's events are a history of
    /// changes sent, alternating from Added, ending where the row is. Answers the members per
    /// audience.
    fn check_memberships(
        &self,
        twin: &Twin,
        stored: &[&SyncEventRow],
        ct_of: &impl Fn(&Key) -> Option<String>,
        v: &mut Vec<String>,
    ) -> BTreeMap<i64, i64> {
        let rows = twin.membership_rows(R, P);
        let mut events: BTreeMap<(i64, String), Vec<&SyncEventRow>> = BTreeMap::new();
        for e in stored {
            (events
                .entry((e.partner_segment_id, e.clevertap_id.clone()))
                .or_default())
            .push(e);
        }
        let mut members: BTreeMap<i64, i64> = BTreeMap::new();
        let mut expected_pairs = BTreeSet::new();
        for ((aud, key), sent) in &self.changes {
            let Some(ct) = ct_of(key) else {
                v.push(format!("memberships: {key:?} has no claim"));
                continue;
            };
            let newest = sent.iter().max_by(|a, b| a.version.cmp(&b.version));
            let member = newest.is_some_and(|c| c.add);
            *members.entry(*aud).or_default() += i64::from(member);
            let row = rows
                .iter()
                .find(|r| r.audience_id == *aud && r.clevertap_id == ct);
            if row.is_some_and(|r| r.member) != member {
                v.push(format!(
                    "memberships: ({aud}, {ct}) member={}, newest says {member}",
                    !member
                ));
            }
            let history = events.remove(&(*aud, ct.clone())).unwrap_or_default();
            check_history(*aud, &ct, history, sent, member, v);
            expected_pairs.insert((*aud, ct));
        }
        for ((aud, ct), list) in &events {
            v.push(format!(
                "events: ({aud}, {ct}) {} events of a pair no change names",
                list.len()
            ));
        }
        for r in rows.iter().filter(|r| r.member) {
            if !expected_pairs.contains(&(r.audience_id, r.clevertap_id.clone())) {
                v.push(format!(
                    "memberships: ({}, {}) is a member no change made",
                    r.audience_id, r.clevertap_id
                ));
            }
        }
        for r in rows.iter().filter(|r| r.identity.is_some()) {
            if !expected_pairs.contains(&(r.audience_id, r.clevertap_id.clone())) {
                v.push(format!(
                    "erasure: ({}, {}) row still names an Identity no kept change gave it",
                    r.audience_id, r.clevertap_id
                ));
            }
        }
        members
    }
}

/// One pair's stored events, by version: each a change sent with its action, alternating from
/// Added, the last one saying whether the row is a member.
fn check_history(
    aud: i64,
    ct: &str,
    mut history: Vec<&SyncEventRow>,
    sent: &[Sent],
    member: bool,
    v: &mut Vec<String>,
) {
    history.sort_by(|a, b| a.version.cmp(&b.version));
    let mut was_member = false;
    for e in history {
        let adds = e.action == SyncAction::Added;
        let version = e.version.clone().unwrap_or_default();
        if adds == was_member {
            v.push(format!(
                "events: ({aud}, {ct}) {:?} at {version} repeats",
                e.action
            ));
        }
        was_member = adds;
        let sent_it = (sent.iter())
            .any(|c| c.version == version && c.add == adds && c.change_id == e.change_id);
        if !sent_it {
            v.push(format!(
                "events: ({aud}, {ct}) {:?} {} is no change sent",
                e.action, e.change_id
            ));
        }
    }
    if was_member != member {
        v.push(format!(
            "events: ({aud}, {ct}) history ends member={was_member}, row should be {member}"
        ));
    }
}

/// Every Partner Sync event ever stored (an erasure deletes some; counts and usage keep them).
fn events_ever_stored(twin: &Twin) -> Vec<SyncEventRow> {
    (twin
        .changes(R, crate::store::tables::Table::Events)
        .into_iter())
    .filter(|c| c.kind == crate::twin::ChangeKind::Insert)
    .filter_map(|c| {
        let image: serde_dynamo::Item = c.new_image?.into();
        match crate::store::feed::feed_record_of_image(&image).ok()? {
            FeedRecord::Sync(e) => Some(e),
            FeedRecord::Notice(_) => None,
        }
    })
    .collect()
}

/// Counts and usage equal the member rows and the events ever stored.
async fn check_counts(
    twin: &Twin,
    members: &BTreeMap<i64, i64>,
    stored: &[SyncEventRow],
    v: &mut Vec<String>,
) {
    let auds: Vec<i64> = members.keys().copied().collect();
    let counts = twin.segment_counts(R, P, &auds).await.unwrap_or_default();
    for aud in &auds {
        let c = counts.get(aud).cloned().unwrap_or_default();
        let of = |a: SyncAction| {
            (stored.iter())
                .filter(|e| e.partner_segment_id == *aud && e.action == a)
                .count() as i64
        };
        let want = (members[aud], of(SyncAction::Added), of(SyncAction::Removed));
        let got = (c.member_count, c.added_total, c.removed_total);
        if got != want {
            v.push(format!("counts: audience {aud} (members, added, removed) {got:?}, rows and events say {want:?}"));
        }
    }
    let month = month_of(super::workload::BASE_MS);
    let usage = twin.usage_events(R, P, &month).await.unwrap_or(-1);
    if usage != stored.len() as i64 {
        v.push(format!("usage: {usage}, {} events stored", stored.len()));
    }
}

impl Model {
    /// The feed: every stored event published, nothing published that is not stored, except an
    /// event an erasure took back, published before the erasure answered, or after it with a
    /// `Profile Erased` notice covering it (a subscriber drops it, contract §5.4: the stream
    /// still held its record when the item was deleted); by event id, each change once.
    fn check_feed(
        &self,
        bus: &TwinBus,
        stored: &[&SyncEventRow],
        answered: &[Option<usize>],
        v: &mut Vec<String>,
    ) {
        let stored_ids: BTreeSet<&str> = stored.iter().map(|e| e.change_id.as_str()).collect();
        let entries = bus.put_entries();
        let detail_of = |e: &crate::domain::feed::FeedEntry| -> serde_json::Value {
            serde_json::from_str(&e.detail).unwrap_or_default()
        };
        // CleverTap ID → the latest cut-off a notice announced.
        let mut notices: BTreeMap<String, i64> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.kind == FeedKind::ProfileErased) {
            let d = detail_of(e);
            let ct = d["clevertap_id"].as_str().unwrap_or_default().to_owned();
            let before = d["erased_before_ms"].as_i64().unwrap_or(0);
            let at = notices.entry(ct).or_default();
            *at = (*at).max(before);
        }
        let mut published: BTreeSet<String> = BTreeSet::new();
        for (at, entry) in entries.iter().enumerate() {
            if entry.kind != FeedKind::PartnerSync {
                continue;
            }
            let detail = detail_of(entry);
            let id = detail["event_id"].as_str().unwrap_or_default().to_owned();
            let ct = detail["clevertap_id"].as_str().unwrap_or_default();
            let sent_ms = detail["mparticle_time_ms"].as_i64().unwrap_or(i64::MAX);
            let noticed = notices.get(ct).is_some_and(|before| sent_ms < *before);
            let erased_after = (self.erased_changes.iter().zip(answered))
                .filter(|(ids, _)| ids.contains(&id))
                .map(|(_, answered)| answered.unwrap_or(0))
                .min();
            match erased_after {
                Some(answered) if at >= answered && !noticed => v.push(format!(
                    "erasure: {id} published after the erasure covering it answered, no \
                     Profile Erased notice covers it"
                )),
                Some(_) => {}
                None if !stored_ids.contains(id.as_str()) => {
                    v.push(format!("feed: {id} published, no such event stored"))
                }
                None => {}
            }
            published.insert(id);
        }
        for id in stored_ids {
            if !published.contains(id) {
                v.push(format!("feed: event {id} stored, never published"));
            }
        }
    }
}
