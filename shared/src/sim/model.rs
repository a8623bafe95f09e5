//! The reference model: what the tables must hold once every message is delivered and every
//! stream drained, computed plainly from the workload, and the invariants checked against the
//! twin.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::workload::{Message, Person, User, Workload};
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
    }
}

/// What the model expects of one profile.
#[derive(Debug, Default)]
struct ProfileExpectation {
    /// (data version, value), newest kept.
    email: Option<(String, String)>,
    phone: Option<(String, String)>,
}

/// One change sent for a (segment, person).
#[derive(Debug, Clone)]
struct Sent {
    version: String,
    add: bool,
    change_id: String,
}

pub struct Model {
    /// (audience, person) → every change sent.
    changes: BTreeMap<(i64, Key), Vec<Sent>>,
    profiles: BTreeMap<Key, ProfileExpectation>,
    /// Every (message, chunk) stored.
    chunks: Vec<String>,
}

impl Model {
    pub fn of(workload: &Workload) -> Self {
        let mut changes: BTreeMap<(i64, Key), Vec<Sent>> = BTreeMap::new();
        let mut profiles: BTreeMap<Key, ProfileExpectation> = BTreeMap::new();
        for m in &workload.messages {
            for (index, user) in m.users.iter().enumerate() {
                let Some(key) = key_of(workload, user) else {
                    continue;
                };
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
        Model {
            changes,
            profiles,
            chunks,
        }
    }

    /// Checks the twin against the model; answers every violation found.
    pub async fn check(&self, twin: &Twin, bus: &TwinBus) -> Vec<String> {
        let mut v = Vec::new();
        let claims = twin.claims_in(R, P);
        let ct_of = |key: &Key| -> Option<String> {
            match key {
                Key::CleverTapId(ct) => Some(ct.clone()),
                Key::Identity(id) => claims.get(id).cloned(),
            }
        };
        self.check_liveness(twin, &mut v).await;
        self.check_profiles(twin, &claims, &ct_of, &mut v).await;
        let records = twin.feed_records(R);
        let stored: Vec<&SyncEventRow> = (records.iter())
            .filter_map(|r| match r {
                FeedRecord::Sync(e) => Some(e),
                FeedRecord::Notice(_) => None,
            })
            .collect();
        let members = self.check_memberships(twin, &stored, &ct_of, &mut v);
        check_counts(twin, &members, &stored, &mut v).await;
        check_feed(bus, &stored, &mut v);
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

    /// One profile per person the ladder finds, each field newest by version, and each email
    /// and phone recorded among the holders of its value.
    async fn check_profiles(
        &self,
        twin: &Twin,
        claims: &HashMap<String, String>,
        ct_of: &impl Fn(&Key) -> Option<String>,
        v: &mut Vec<String>,
    ) {
        let identities = (self.profiles.keys())
            .filter(|k| matches!(k, Key::Identity(_)))
            .count();
        if claims.len() != identities {
            v.push(format!(
                "claims: {} for {identities} identities",
                claims.len()
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
        for (key, expected) in &self.profiles {
            let Some(ct) = ct_of(key) else {
                v.push(format!("profiles: {key:?} has no claim"));
                continue;
            };
            let Ok(Some(profile)) = twin.profile(R, P, &ct).await else {
                v.push(format!("profiles: {key:?} ({ct}) missing"));
                continue;
            };
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

/// Counts and usage equal the member rows and the stored events.
async fn check_counts(
    twin: &Twin,
    members: &BTreeMap<i64, i64>,
    stored: &[&SyncEventRow],
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

/// The feed: every stored event published, nothing published that is not stored; by event id,
/// each change once.
fn check_feed(bus: &TwinBus, stored: &[&SyncEventRow], v: &mut Vec<String>) {
    let stored_ids: BTreeSet<&str> = stored.iter().map(|e| e.change_id.as_str()).collect();
    let mut published: BTreeSet<String> = BTreeSet::new();
    for entry in bus.put_entries() {
        if entry.kind != FeedKind::PartnerSync {
            continue;
        }
        let detail: serde_json::Value = serde_json::from_str(&entry.detail).unwrap_or_default();
        let id = detail["event_id"].as_str().unwrap_or_default().to_owned();
        if !stored_ids.contains(id.as_str()) {
            v.push(format!("feed: {id} published, no such event stored"));
        }
        published.insert(id);
    }
    for id in stored_ids {
        if !published.contains(id) {
            v.push(format!("feed: event {id} stored, never published"));
        }
    }
}
