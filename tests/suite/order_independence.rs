//! The same chunks through one lane in order and through eight lanes in shuffled order, with
//! redeliveries and concurrent senders, end in the same state: profiles, memberships, member
//! counts, usage and Partner Sync events (none missing, none twice). Against DynamoDB Local.

use std::collections::{BTreeMap, BTreeSet};

use integration_tests::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use shared::domain::records::{Profile, PropertyValue};
use shared::domain::region::Region;

const SEGMENTS: i64 = 4;
const USERS: usize = 90;
// Half of what it was: the simulation (`shared/src/sim`) runs order independence on the twin
// over a thousand schedules; this keeps it true on DynamoDB Local.
const MESSAGES: usize = 12;
const PROFILES_PER_MESSAGE: usize = 25;

/// One membership request of the workload: id, `timestamp_ms` and profiles.
struct Message {
    id: String,
    ts: i64,
    profiles: Value,
}

/// A user's identities; several users share one customer id (different mParticle ids, one profile).
fn identities(user: usize, message: usize, rng: &mut StdRng) -> Value {
    let email = raw("email", &format!("u{user}.m{message}@example.com"));
    let phone = raw(
        "mobile_number",
        &format!("+1415555{:04}", rng.random_range(0..10_000)),
    );
    match user % 9 {
        // Partner id only: the CleverTap ID is given.
        0 => json!({"partner_identities": [raw("CleverTap_User_ID", &format!("pt-{user}"))],
                    "user_identities": [email], "mpid": format!("{user}")}),
        // Partner id and customer id: the partner id wins.
        1 => json!({"partner_identities": [raw("CleverTap_User_ID", &format!("pt-{user}"))],
                    "user_identities": [raw("customer", &format!("cust-{}", user / 2)), phone],
                    "mpid": format!("{user}")}),
        // mParticle id with an email: the mpid becomes the Identity.
        2 => json!({"user_identities": [email], "mpid": format!("{user}")}),
        // Anonymous: skipped.
        3 => json!({"mpid": format!("{user}")}),
        // Customer ids shared by pairs of users.
        _ => {
            json!({"user_identities": [raw("customer", &format!("cust-{}", user / 2)), email, phone],
                    "mpid": format!("{user}")})
        }
    }
}

fn audience_entries(message: usize, rng: &mut StdRng) -> Value {
    let mut entries = Vec::new();
    let mut auds: Vec<i64> = (1..=SEGMENTS).collect();
    auds.shuffle(rng);
    for aud in auds.into_iter().take(rng.random_range(1..=2)) {
        let action = match rng.random_range(0..10) {
            0..=5 => "add",
            6..=8 => "delete",
            _ => "attribute_update",
        };
        let mut e = json!({"audience_id": aud, "audience_name": format!("Audience {aud}"),
                           "audience_subscription_settings": {"userIdType": "customer"}, "action": action});
        if rng.random_bool(0.4) {
            e["user_attributes"] = if rng.random_bool(0.8) {
                json!([{"key": "tier", "value": format!("t{message}"), "action": "upsert"},
                       {"key": "seen", "list_value": [format!("m{message}")], "action": "upsert"}])
            } else {
                json!([{"key": "tier", "action": "delete"}])
            };
        }
        entries.push(e);
    }
    Value::Array(entries)
}

/// A deterministic workload: distinct message times in shuffled message order, so later
/// messages are often older (stale changes), and users spread over the messages.
fn workload(seed: u64) -> Vec<Message> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut times: Vec<i64> = (0..MESSAGES as i64)
        .map(|i| 1_764_000_000_000 + i * 60_000)
        .collect();
    times.shuffle(&mut rng);
    (0..MESSAGES)
        .map(|m| {
            let mut users: Vec<usize> = (0..USERS).collect();
            users.shuffle(&mut rng);
            let profiles = users
                .into_iter()
                .take(PROFILES_PER_MESSAGE)
                .map(|u| {
                    let mut p = identities(u, m, &mut rng);
                    p["audiences"] = audience_entries(m, &mut rng);
                    p
                })
                .collect();
            Message {
                id: format!("order-{seed}-{m:02}"),
                ts: times[m],
                profiles: Value::Array(profiles),
            }
        })
        .collect()
}

/// Everything a run leaves behind, with random CleverTap IDs replaced by the profile's Identity.
#[derive(Debug, PartialEq)]
struct Snapshot {
    profiles: BTreeMap<String, BTreeMap<String, String>>,
    /// (audience, profile, member, version)
    memberships: BTreeSet<(String, String, bool, String)>,
    /// audience → (status, member count)
    segments: BTreeMap<String, (String, String)>,
    /// audience → (added total, removed total)
    totals: BTreeMap<String, (i64, i64)>,
    /// (profile, audience, ts, change id, action)
    events: BTreeSet<(String, String, String, String, String)>,
    usage: i64,
}

fn property_text(v: &PropertyValue) -> String {
    match v {
        PropertyValue::Text(s) => s.clone(),
        PropertyValue::List(l) => l.join(","),
        PropertyValue::Tag => "true".into(),
    }
}

/// A profile's fields by their stored names (the times it was written left out).
fn profile_fields(p: &Profile) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let versions = &p.versions;
    for (name, value) in [
        ("identity", &p.identity),
        ("email", &p.email),
        ("phone", &p.phone),
        ("v#email", &versions.email),
        ("v#phone", &versions.phone),
    ] {
        if let Some(v) = value {
            fields.insert(name.to_owned(), v.clone());
        }
    }
    for (k, v) in &p.properties {
        fields.insert(format!("attr#{k}"), property_text(v));
    }
    for (k, v) in &versions.properties {
        fields.insert(format!("v#attr#{k}"), v.clone());
    }
    fields
}

async fn snapshot(stack: &Stack) -> Snapshot {
    // The store's typed snapshot of the project: no attribute is read by name here.
    let held = stack.held().await;
    let name_of: BTreeMap<&str, String> = held
        .profiles
        .iter()
        .map(|p| {
            let ct = p.clevertap_id.as_str();
            let name = p
                .identity
                .as_ref()
                .map_or(ct.to_owned(), |id| format!("identity:{id}"));
            (ct, name)
        })
        .collect();
    let name = |ct: &str| name_of.get(ct).cloned().unwrap_or_else(|| ct.to_owned());
    let profiles = held
        .profiles
        .iter()
        .map(|p| (name(&p.clevertap_id), profile_fields(p)))
        .collect();
    let memberships = held
        .memberships
        .iter()
        .map(|m| {
            (
                m.audience_id.to_string(),
                name(&m.clevertap_id),
                m.member,
                m.version.clone(),
            )
        })
        .collect();
    let segments = held
        .segments
        .iter()
        .map(|s| {
            let status = (
                s.status.as_str().to_owned(),
                s.counts.member_count.to_string(),
            );
            (s.audience_id.to_string(), status)
        })
        .collect();
    let totals = held
        .segments
        .iter()
        .map(|s| {
            let totals = (s.counts.added_total, s.counts.removed_total);
            (s.audience_id.to_string(), totals)
        })
        .collect();
    let events: BTreeSet<_> = held
        .events
        .iter()
        .map(|e| {
            (
                name(&e.clevertap_id),
                e.audience_id.to_string(),
                format!("{:0>13}", e.event.ts_ms),
                e.change_id.clone(),
                e.action.clone(),
            )
        })
        .collect();
    assert_eq!(
        events.len(),
        held.events.len(),
        "no change raised two events"
    );
    Snapshot {
        profiles,
        memberships,
        segments,
        totals,
        events,
        usage: held.usage.get("2025-11").copied().unwrap_or(0),
    }
}

/// Sends every delivery (`order` indexes the workload; repeats are redeliveries), `senders` at
/// a time, then runs the pipeline with `lanes` until it is idle.
async fn run(
    test: &str,
    messages: &[Message],
    order: &[usize],
    senders: usize,
    lanes: usize,
) -> Snapshot {
    let stack = Stack::new(test, Region::Eu1).await;
    let mut pipeline = stack.pipeline_with_lanes(lanes).await;
    let stack = &stack;
    for (round, group) in order.chunks(senders).enumerate() {
        let posts = group.iter().map(|&m| {
            let body = stack.batch(
                &messages[m].id,
                messages[m].ts,
                messages[m].profiles.clone(),
            );
            async move { stack.post(&body).await }
        });
        for (status, answer) in futures::future::join_all(posts).await {
            assert_eq!(status, 200, "{answer}");
        }
        // Let the pipeline catch up now and then, so deliveries and stages interleave.
        if round % 3 == 2 {
            pipeline.run_until_idle(500).await.unwrap();
        }
    }
    pipeline.run_until_idle(500).await.unwrap();
    snapshot(stack).await
}

/// What must hold of any run's Partner Sync events: per (profile, segment) they alternate
/// Added, Removed, … in version order (the order they were applied), the last one agrees with
/// the final membership, and the segment totals and the usage count each event once.
fn check_events(run: &str, s: &Snapshot) {
    let mut by_pair: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for (profile, aud, _ts, _change, action) in &s.events {
        by_pair
            .entry((profile.clone(), aud.clone()))
            .or_default()
            .push(action);
    }
    for ((profile, aud), actions) in &by_pair {
        for (i, a) in actions.iter().enumerate() {
            let want = if i % 2 == 0 { "Added" } else { "Removed" };
            assert_eq!(
                *a, want,
                "{run}: events of {profile} in {aud} alternate: {actions:?}"
            );
        }
    }
    for (aud, profile, member, _) in &s.memberships {
        let last = by_pair
            .get(&(profile.clone(), aud.clone()))
            .and_then(|a| a.last());
        assert_eq!(
            *member,
            last == Some(&"Added"),
            "{run}: {profile} in {aud}: membership agrees with its last event"
        );
    }
    for (aud, (added, removed)) in &s.totals {
        let count = |action: &str| {
            s.events
                .iter()
                .filter(|e| &e.1 == aud && e.4 == action)
                .count() as i64
        };
        assert_eq!(
            (*added, *removed),
            (count("Added"), count("Removed")),
            "{run}: totals of {aud}"
        );
    }
    assert_eq!(
        s.usage,
        s.events.len() as i64,
        "{run}: usage counts every event once"
    );
}

/// The profile a workload user resolves to, named as in [`Snapshot`]; `None` if skipped.
fn user_name(user: usize) -> Option<String> {
    match user % 9 {
        0 | 1 => Some(format!("pt-{user}")),
        2 => Some(format!("identity:{user}")),
        3 => None,
        _ => Some(format!("identity:cust-{}", user / 2)),
    }
}

/// (profile, audience) pairs whose add/delete changes all come from one message: their events
/// cannot depend on the order of delivery.
fn single_message_pairs(messages: &[Message]) -> BTreeSet<(String, String)> {
    let mut seen: BTreeMap<(String, String), BTreeSet<usize>> = BTreeMap::new();
    for (m, message) in messages.iter().enumerate() {
        for p in message.profiles.as_array().unwrap() {
            let user = p["mpid"].as_str().unwrap().parse().unwrap();
            let Some(name) = user_name(user) else {
                continue;
            };
            for e in p["audiences"].as_array().unwrap() {
                if e["action"] != "attribute_update" {
                    seen.entry((name.clone(), e["audience_id"].to_string()))
                        .or_default()
                        .insert(m);
                }
            }
        }
    }
    seen.into_iter()
        .filter(|(_, ms)| ms.len() == 1)
        .map(|(pair, _)| pair)
        .collect()
}

#[tokio::test]
async fn one_lane_in_order_and_eight_lanes_shuffled_end_in_the_same_state() {
    let messages = workload(11);

    let in_order: Vec<usize> = (0..messages.len()).collect();
    let serial = run("order-serial", &messages, &in_order, 1, 1).await;

    let mut rng = StdRng::seed_from_u64(12);
    let mut shuffled: Vec<usize> = (0..messages.len()).collect();
    shuffled.extend((0..6).map(|_| rng.random_range(0..messages.len())));
    shuffled.shuffle(&mut rng);
    let parallel = run("order-lanes", &messages, &shuffled, 6, 8).await;

    // The workload exercises what it claims to.
    assert!(serial.events.len() > 50, "{} events", serial.events.len());
    assert!(serial.events.iter().any(|e| e.4 == "Removed"));
    assert_eq!(serial.segments.len(), SEGMENTS as usize);
    assert!(serial.profiles.keys().any(|k| k.starts_with("pt-")));
    assert!(
        serial
            .profiles
            .keys()
            .any(|k| k.starts_with("identity:cust-"))
    );
    assert!(
        serial
            .profiles
            .values()
            .any(|p| p.contains_key("attr#tier"))
    );
    assert!(
        serial
            .profiles
            .values()
            .any(|p| p.contains_key("v#attr#tier") && !p.contains_key("attr#tier")),
        "a deleted property keeps its version"
    );
    for u in (0..USERS).filter(|u| u % 9 == 3) {
        assert!(
            !serial.profiles.contains_key(&format!("identity:{u}")),
            "anonymous user {u} is skipped"
        );
    }
    for (run, s) in [("1 lane", &serial), ("8 lanes", &parallel)] {
        check_events(run, s);
        for (aud, (status, members)) in &s.segments {
            let rows = s.memberships.iter().filter(|m| &m.0 == aud && m.2).count();
            assert_eq!(status, "active");
            assert_eq!(
                members,
                &rows.to_string(),
                "{run}: segment {aud}: count equals member rows"
            );
        }
    }

    // The same state, whichever way it was delivered.
    assert_eq!(serial.profiles, parallel.profiles, "profiles");
    assert_eq!(
        serial.memberships, parallel.memberships,
        "memberships and versions"
    );
    assert_eq!(
        serial.segments, parallel.segments,
        "segments and member counts"
    );
    // Which change of a pair raises its events depends on arrival (a late, older change raises
    // nothing), so events are compared where arrival cannot matter: pairs changed by one message.
    let fixed = single_message_pairs(&messages);
    assert!(
        fixed.len() > 30,
        "{} pairs changed by one message",
        fixed.len()
    );
    let of_fixed = |s: &Snapshot| -> BTreeSet<_> {
        s.events
            .iter()
            .filter(|e| fixed.contains(&(e.0.clone(), e.1.clone())))
            .cloned()
            .collect()
    };
    let (a, b) = (of_fixed(&serial), of_fixed(&parallel));
    let missing: Vec<_> = a.difference(&b).collect();
    let extra: Vec<_> = b.difference(&a).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "events missing {missing:?}, extra {extra:?}"
    );
}
