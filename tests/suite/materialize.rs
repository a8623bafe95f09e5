//! Materialization against DynamoDB Local: idempotent, order-safe, exact counts.

use std::collections::{BTreeMap, HashMap};

use integration_tests::*;
use serde_json::json;
use shared::domain::changes::{ChangeAction, MembershipChange};
use shared::domain::records::{EventValue, InboxStatus, PartnerSyncEvent, Segment};
use shared::domain::region::Region;
use shared::stages::materialize::{MaterializeCounts, materialize_changes};
use shared::store::tables::Table;

fn change(ct: &str, aud: i64, action: ChangeAction, ts: i64, msg: &str) -> MembershipChange {
    MembershipChange {
        clevertap_id: ct.into(),
        identity: Some(format!("id-{ct}")),
        audience_id: aud,
        audience_name: Some(format!("Audience {aud}")),
        action,
        ts_ms: ts,
        message_id: msg.into(),
        profile_index: 0,
        entry_index: 0,
        received_ms: None,
        way: Default::default(),
    }
}

struct View {
    members: BTreeMap<String, bool>,
    /// By profile, then time.
    events: Vec<PartnerSyncEvent>,
    /// `None` until a change was ever applied (a segment is created with its first event).
    segment: Option<Segment>,
}

async fn view(stack: &Stack, aud: i64) -> View {
    // Rows and events of this segment, in whichever of its buckets they are.
    let held = stack.held().await;
    View {
        members: held
            .rows_of(aud)
            .map(|r| (r.clevertap_id.clone(), r.member))
            .collect(),
        events: held.events_of(aud).cloned().collect(),
        segment: held.segment(aud).cloned(),
    }
}

fn seg_count(v: &View, key: &str) -> i64 {
    let Some(s) = &v.segment else { return 0 };
    match key {
        "member_count" => s.counts.member_count,
        "added_total" => s.counts.added_total,
        "removed_total" => s.counts.removed_total,
        other => panic!("no count {other}"),
    }
}

fn segment_status(v: &View) -> Option<&'static str> {
    v.segment.as_ref().map(|s| s.status.as_str())
}

fn assert_counts_agree(v: &View) {
    let members = v.members.values().filter(|m| **m).count() as i64;
    assert_eq!(
        seg_count(v, "member_count"),
        members,
        "member_count equals the member rows"
    );
    let added = v.events.iter().filter(|e| e.action == "Added").count() as i64;
    let removed = v.events.len() as i64 - added;
    assert_eq!(seg_count(v, "added_total"), added);
    assert_eq!(seg_count(v, "removed_total"), removed);
    assert_eq!(added - removed, members);
}

#[tokio::test]
async fn the_same_changes_three_times_give_one_state_and_one_event_each() {
    let stack = Stack::new("mat-redeliver", Region::Eu1).await;
    let changes: Vec<_> = (0..30)
        .map(|i| change(&format!("__p{i}"), 7, ChangeAction::Add, 100, "m1"))
        .chain((0..10).map(|i| change(&format!("__p{i}"), 7, ChangeAction::Delete, 200, "m2")))
        .collect();
    let first = materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &changes)
        .await
        .unwrap();
    assert_eq!((first.added, first.removed), (30, 10));
    let after_first = view(&stack, 7).await;
    for _ in 0..2 {
        let again = materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &changes)
            .await
            .unwrap();
        // The adds of the removed ten are older than their deletes: stale, not duplicates.
        assert_eq!(
            (again.added, again.removed, again.duplicate, again.stale),
            (0, 0, 30, 10)
        );
    }
    let after = view(&stack, 7).await;
    assert_eq!(after.members, after_first.members);
    assert_eq!(after.events.len(), 40);
    assert_eq!(after.events, after_first.events);
    assert_eq!(seg_count(&after, "member_count"), 20);
    assert_counts_agree(&after);

    // Events carry exactly the documented properties.
    let e = &after.events[0];
    let props = &e.event.properties;
    let text = |k: &str| match &props[k] {
        EventValue::Text(s) => s.clone(),
        EventValue::Number(n) => n.to_string(),
    };
    assert_eq!(e.event.name, "Partner Sync");
    assert_eq!(text("Partner Segment Name"), "Audience 7");
    assert_eq!(props["Partner Segment ID"], EventValue::Number(7));
    assert_eq!(text("CT Source"), "mParticle");
    assert_eq!(text("Partner Name"), "mParticle");
    assert!(["Added", "Removed"].contains(&text("Action").as_str()));
    assert_eq!(props.len(), 5);

    // Usage counts every event once, in the month of its time.
    assert_eq!(stack.usage("1970-01").await, 40);
}

#[tokio::test]
async fn reversed_order_newest_wins() {
    let stack = Stack::new("mat-order", Region::Eu1).await;
    let history = [
        change("__r", 3, ChangeAction::Add, 10, "a"),
        change("__r", 3, ChangeAction::Delete, 20, "b"),
        change("__r", 3, ChangeAction::Add, 30, "c"),
        change("__r", 3, ChangeAction::Delete, 40, "d"),
    ];
    let mut stale = 0;
    for c in history.iter().rev() {
        let r = materialize_changes(
            &stack.store,
            Region::Eu1,
            &stack.project.id,
            std::slice::from_ref(c),
        )
        .await
        .unwrap();
        stale += r.stale;
    }
    let v = view(&stack, 3).await;
    assert!(!v.members["__r"], "the newest change (delete at 40) wins");
    assert_eq!(stale, 3);
    assert!(
        v.events.is_empty(),
        "a delete for a non-member raises nothing"
    );
    assert_counts_agree(&v);

    // A remove followed by a re-add (identity change) in order raises both.
    let stack = Stack::new("mat-readd", Region::Eu1).await;
    let seq = [
        change("__s", 4, ChangeAction::Add, 10, "a"),
        change("__s", 4, ChangeAction::Delete, 20, "b"),
        change("__s", 4, ChangeAction::Add, 21, "c"),
    ];
    materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &seq)
        .await
        .unwrap();
    let v = view(&stack, 4).await;
    assert!(v.members["__s"]);
    let actions: Vec<String> = v.events.iter().map(|e| e.action.clone()).collect();
    assert_eq!(actions, ["Added", "Removed", "Added"]);
    assert_counts_agree(&v);
}

#[tokio::test]
async fn sixteen_concurrent_materializations_keep_counts_exact() {
    let stack = Stack::new("mat-race", Region::Us1).await;
    // 16 chunks over 60 shared profiles of one segment, each chunk a different message time.
    let chunks: Vec<Vec<MembershipChange>> = (0..16)
        .map(|b| {
            (0..60)
                .filter(|i| (i + b) % 3 != 0)
                .map(|i| {
                    let action = if (i * 7 + b * 5) % 4 == 0 {
                        ChangeAction::Delete
                    } else {
                        ChangeAction::Add
                    };
                    change(
                        &format!("__c{i}"),
                        9,
                        action,
                        1_000 + b as i64,
                        &format!("msg-{b:02}"),
                    )
                })
                .collect()
        })
        .collect();
    let results: Vec<MaterializeCounts> = futures::future::join_all(
        chunks
            .iter()
            .map(|c| materialize_changes(&stack.store, Region::Us1, &stack.project.id, c)),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect();

    let v = view(&stack, 9).await;
    assert_counts_agree(&v);
    // Every profile ends in the state of its newest change.
    let mut newest: HashMap<String, (String, ChangeAction)> = HashMap::new();
    for c in chunks.iter().flatten() {
        let e = newest
            .entry(c.clevertap_id.clone())
            .or_insert((c.version(), c.action));
        if c.version() > e.0 {
            *e = (c.version(), c.action);
        }
    }
    for (ct, (_, action)) in &newest {
        assert_eq!(v.members[ct], *action == ChangeAction::Add, "{ct}");
    }
    // One event per real change: no change id twice, and each profile's events alternate.
    let mut ids: Vec<(String, String)> = v
        .events
        .iter()
        .map(|e| (e.clevertap_id.clone(), e.change_id.clone()))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    let mut by_profile: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &v.events {
        by_profile
            .entry(e.clevertap_id.clone())
            .or_default()
            .push(e.action.clone());
    }
    for (ct, actions) in by_profile {
        for pair in actions.windows(2) {
            assert_ne!(pair[0], pair[1], "{ct}: {actions:?}");
        }
    }
    let reported: u64 = results.iter().map(|r| r.added + r.removed).sum();
    assert_eq!(
        reported as usize,
        v.events.len(),
        "reported counts match the events written"
    );
}

#[tokio::test]
async fn a_cancelled_transaction_drops_the_stale_change_and_applies_the_rest() {
    let stack = Stack::new("mat-cancel", Region::Eu1).await;
    let plan = local::faults::FaultPlan::default();
    let faulty = stack.through(&plan);
    // A concurrent writer records a newer change for __b just before our transaction commits.
    let table = stack.names.name(Region::Eu1, Table::Memberships);
    plan.before_transaction.lock().unwrap().push(json!({
        "TableName": table,
        "Item": {"pk": {"S": shared::store::keys::memberships::pk(&stack.project.id, 5, stack.store.new_segment_buckets(), "__b")}, "sk": {"S": "__b"},
                 "audience_id": {"N": "5"}, "member": {"BOOL": false},
                 "version": {"S": "9999999999999#later#000000#0000"}}
    }));
    let changes = vec![
        change("__a", 5, ChangeAction::Add, 50, "m"),
        change("__b", 5, ChangeAction::Add, 50, "m"),
        change("__c", 5, ChangeAction::Add, 50, "m"),
    ];
    let counts = materialize_changes(&faulty, Region::Eu1, &stack.project.id, &changes)
        .await
        .unwrap();
    assert_eq!(
        plan.injected.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the race happened"
    );
    assert_eq!((counts.added, counts.stale), (2, 1));
    let v = view(&stack, 5).await;
    assert_eq!(v.members.get("__a"), Some(&true));
    assert_eq!(v.members.get("__b"), Some(&false));
    assert_eq!(v.members.get("__c"), Some(&true));
    assert_eq!(v.events.len(), 2);
    assert_counts_agree(&v);
}

#[tokio::test]
async fn removal_clears_a_segment_of_hundreds_of_members_in_the_background() {
    let stack = Stack::new("mat-remove", Region::In1).await;
    let sub = |action: &str, ts: i64| {
        json!({"type": "audience_subscription_request", "id": format!("s{ts}"), "timestamp_ms": ts,
               "account": stack.project.account(), "audience_id": 77, "audience_name": "Big", "action": action})
        .to_string()
    };
    stack.send(&sub("add", 1)).await;
    let adds: Vec<_> = (0..300)
        .map(|i| change(&format!("__m{i:04}"), 77, ChangeAction::Add, 10, "fill"))
        .collect();
    let c = materialize_changes(&stack.store, Region::In1, &stack.project.id, &adds)
        .await
        .unwrap();
    assert_eq!(c.added, 300);
    assert_eq!(seg_count(&view(&stack, 77).await, "member_count"), 300);

    let mut pipeline = stack.pipeline().await;
    pipeline.run_until_idle(10).await.unwrap();
    let clearing_began = shared::domain::protocol::now_ms();
    stack.send(&sub("remove", 2)).await;
    pipeline.run_until_idle(10).await.unwrap();
    let clearing_days =
        [clearing_began, shared::domain::protocol::now_ms()].map(shared::domain::calendar::day_of);

    let v = view(&stack, 77).await;
    assert_eq!(segment_status(&v), Some("archived"));
    assert_eq!(seg_count(&v, "member_count"), 0);
    assert!(v.members.values().all(|m| !m), "no member left");
    assert_eq!(v.events.len(), 300, "clearing raises no per-user events");
    // The segment's history: 300 added on the day of the events, cleared on the day of the
    // clearing; the members at the end of the last day are the count.
    let (_, days) = stack
        .store
        .segment_with_history(Region::In1, &stack.project.id, 77)
        .await
        .unwrap()
        .unwrap();
    let added: i64 = days.values().map(|d| d.added).sum();
    let cleared: i64 = days.values().map(|d| d.cleared).sum();
    assert_eq!((added, cleared), (300, 300));
    assert_eq!(days[&shared::domain::calendar::day_of(10)].added, 300);
    let cleared_on: Vec<&String> = days
        .iter()
        .filter(|(_, d)| d.cleared > 0)
        .map(|(day, _)| day)
        .collect();
    assert!(
        cleared_on.iter().all(|d| clearing_days.contains(d)),
        "{cleared_on:?}"
    );

    // Changes that arrive for the archived segment are counted and ignored.
    let late = vec![change("__late", 77, ChangeAction::Add, 20, "late")];
    let c = materialize_changes(&stack.store, Region::In1, &stack.project.id, &late)
        .await
        .unwrap();
    assert_eq!((c.archived, c.added), (1, 0));
    assert!(!view(&stack, 77).await.members.contains_key("__late"));
}

#[tokio::test]
async fn batches_flow_through_resolve_and_materialize_to_the_sync_log() {
    let stack = Stack::new("mat-flow", Region::Sk1).await;
    let mut pipeline = stack.pipeline().await;
    stack
        .send(&membership_body(
            &stack.project,
            "flow-1",
            1_000,
            520,
            31,
            "add",
        ))
        .await;
    stack
        .send(&membership_body(
            &stack.project,
            "flow-1",
            1_000,
            520,
            31,
            "add",
        ))
        .await; // redelivery
    stack
        .send(&membership_body(
            &stack.project,
            "flow-2",
            2_000,
            50,
            31,
            "delete",
        ))
        .await;
    stack
        .send(&membership_body(
            &stack.project,
            "flow-0",
            500,
            50,
            31,
            "delete",
        ))
        .await; // older: stale
    pipeline.run_until_idle(30).await.unwrap();

    let rows = stack.held().await.inbox;
    // 520 profiles: two chunks of at most 500 (the fewest that still cross a chunk boundary).
    assert_eq!(rows.len(), 4, "flow-1 is two chunks, stored once");
    for r in &rows {
        assert_eq!(r.status, InboxStatus::Materialized, "{r:?}");
    }
    let applied = |msg: &str, key: &str| -> u64 {
        rows.iter()
            .filter(|r| r.message_id == msg)
            .map(|r| r.applied[key] as u64)
            .sum()
    };
    // Chunks materialize concurrently, so flow-2's deletes may land before flow-1's adds of the
    // same users; then those adds are stale. Either way the end state is the newest.
    assert_eq!(applied("flow-1", "added") + applied("flow-1", "stale"), 520);
    assert_eq!(applied("flow-2", "removed") + applied("flow-2", "noop"), 50);
    // flow-0 is older than everything, but may arrive before flow-1 reaches its users.
    assert_eq!(applied("flow-0", "stale") + applied("flow-0", "noop"), 50);
    assert_eq!(applied("flow-0", "removed"), 0);
    let v = view(&stack, 31).await;
    assert_eq!(seg_count(&v, "member_count"), 470);
    assert_eq!(v.members.len(), 520);
    assert_eq!(v.members.values().filter(|m| !**m).count(), 50);
    assert_eq!(
        v.events.len() as u64,
        applied("flow-1", "added") + applied("flow-2", "removed")
    );
    assert_counts_agree(&v);
}

#[tokio::test]
async fn archiving_seals_the_counters_at_once_and_a_second_archiving_is_cleared_whole() {
    let stack = Stack::new("mat-rearchive", Region::Eu1).await;
    let sub = |action: &str, ts: i64| {
        json!({"type": "audience_subscription_request", "id": format!("s{ts}"), "timestamp_ms": ts,
               "account": stack.project.account(), "audience_id": 88, "audience_name": "Flappy", "action": action})
        .to_string()
    };
    let adds = |from: usize, to: usize, ts: i64, msg: &str| -> Vec<MembershipChange> {
        (from..to)
            .map(|i| change(&format!("__f{i:03}"), 88, ChangeAction::Add, ts, msg))
            .collect()
    };
    stack.send(&sub("add", 1)).await;
    let c = materialize_changes(
        &stack.store,
        Region::Eu1,
        &stack.project.id,
        &adds(0, 40, 10, "a"),
    )
    .await
    .unwrap();
    assert_eq!(c.added, 40);

    // Disconnected: before any clearing ran, a chunk read the segment as active. Its changes
    // must not count: archiving sealed the counter shards in the same transaction.
    stack.send(&sub("remove", 2)).await;
    let late = materialize_changes(
        &stack.store,
        Region::Eu1,
        &stack.project.id,
        &adds(40, 60, 11, "b"),
    )
    .await
    .unwrap();
    assert_eq!((late.added, late.archived), (0, 20));

    // Connected again before the clearing ran, members added, disconnected again: one clearing
    // pass must leave nothing, whichever archiving's record it runs for.
    stack.send(&sub("add", 3)).await;
    let again = materialize_changes(
        &stack.store,
        Region::Eu1,
        &stack.project.id,
        &adds(60, 90, 12, "c"),
    )
    .await
    .unwrap();
    assert_eq!(again.added, 30);
    assert_eq!(seg_count(&view(&stack, 88).await, "member_count"), 70);
    stack.send(&sub("remove", 4)).await;
    let mut pipeline = stack.pipeline().await;
    pipeline.run_until_idle(20).await.unwrap();

    let v = view(&stack, 88).await;
    assert_eq!(segment_status(&v), Some("archived"));
    assert_eq!(seg_count(&v, "member_count"), 0);
    assert!(v.members.values().all(|m| !m), "no member left");
    assert_eq!(v.events.len(), 70, "clearing raises no per-user events");
}

#[tokio::test]
async fn find_people_reads_clevertap_ids_that_contain_hashes() {
    let stack = Stack::new("mat-hash", Region::Eu1).await;
    let changes = vec![
        change("__a#b", 5, ChangeAction::Add, 10, "msg#1"),
        change("plain", 5, ChangeAction::Add, 10, "msg#1#x"),
        change("__c#d#e", 5, ChangeAction::Add, 11, "m"),
    ];
    let c = materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &changes)
        .await
        .unwrap();
    assert_eq!(c.added, 3);
    let mut found = stack.people(5, Some("Added"), 10).await;
    found.sort();
    assert_eq!(found, ["__a#b", "__c#d#e", "plain"]);
    // Paging one profile at a time still lists each profile once.
    let mut one_by_one = stack.people(5, None, 1).await;
    one_by_one.sort();
    assert_eq!(one_by_one, ["__a#b", "__c#d#e", "plain"]);
}

#[tokio::test]
async fn a_pair_with_more_changes_than_a_transaction_holds_is_written_in_steps() {
    let stack = Stack::new("mat-steps", Region::Eu1).await;
    // 250 alternating changes of one (segment, profile) in one chunk: 250 events, over 100
    // actions for one pair.
    let changes: Vec<_> = (0..250u32)
        .map(|i| {
            let mut c = change(
                "__busy",
                6,
                if i % 2 == 0 {
                    ChangeAction::Add
                } else {
                    ChangeAction::Delete
                },
                100,
                "m-busy",
            );
            c.profile_index = i;
            c
        })
        .collect();
    let c = materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &changes)
        .await
        .unwrap();
    assert_eq!((c.added, c.removed), (125, 125));
    let v = view(&stack, 6).await;
    assert_eq!(v.events.len(), 250);
    assert_eq!(v.members.get("__busy"), Some(&false));
    assert_counts_agree(&v);
    // Again: all duplicates, nothing new.
    let again = materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &changes)
        .await
        .unwrap();
    // Again: nothing new; the last change is the stored version, the rest are older.
    assert_eq!(
        (again.added, again.removed, again.duplicate, again.stale),
        (0, 0, 1, 249)
    );
}

/// Three full pages of the clearing's 1,000-row pages: the paging is the same at any size (the
/// bench's first sync is where size is measured), and the test loop stays short.
const MEMBERS: usize = 3_000;

#[tokio::test]
async fn clearing_three_pages_of_members_goes_forward_to_the_end_while_adds_race_it() {
    let stack = Stack::new("mat-clear3k", Region::Eu1).await;
    let sub = |action: &str, ts: i64| {
        json!({"type": "audience_subscription_request", "id": format!("s{ts}"), "timestamp_ms": ts,
               "account": stack.project.account(), "audience_id": 99, "audience_name": "Huge", "action": action})
        .to_string()
    };
    stack.send(&sub("add", 1)).await;
    let adds: Vec<_> = (0..MEMBERS)
        .map(|i| {
            change(
                &format!("__h{i:05}"),
                99,
                ChangeAction::Add,
                10,
                &format!("fill{}", i / 500),
            )
        })
        .collect();
    futures::future::join_all(
        adds.chunks(500)
            .map(|c| materialize_changes(&stack.store, Region::Eu1, &stack.project.id, c)),
    )
    .await
    .into_iter()
    .for_each(|r| assert_eq!(r.unwrap().added, 500));

    stack.send(&sub("remove", 2)).await;
    // Clearing (three pages of 1,000 rows; every page after the first starts among tombstones)
    // while more adds keep arriving for the removed audience.
    let late: Vec<_> = (0..500)
        .map(|i| {
            change(
                &format!("__late{i:04}"),
                99,
                ChangeAction::Add,
                20,
                &format!("late{}", i / 100),
            )
        })
        .collect();
    let (cleared, late_counts) = tokio::join!(
        shared::stages::materialize::clear_segment(
            &stack.store,
            Region::Eu1,
            &stack.project.id,
            99
        ),
        futures::future::join_all(late.chunks(100).map(|c| materialize_changes(
            &stack.store,
            Region::Eu1,
            &stack.project.id,
            c
        )),)
    );
    assert_eq!(cleared.unwrap(), MEMBERS as u64);
    for c in late_counts {
        let c = c.unwrap();
        assert_eq!(
            (c.added, c.archived),
            (0, 100),
            "the removed audience takes no member"
        );
    }
    let v = view(&stack, 99).await;
    assert_eq!(segment_status(&v), Some("archived"));
    assert_eq!(seg_count(&v, "member_count"), 0);
    assert!(v.members.values().all(|m| !m), "no member left");
    assert_eq!(v.members.len(), MEMBERS);
}

/// The partition keys a segment's membership rows are on (its layout, as stored).
async fn row_keys(stack: &Stack, aud: i64) -> std::collections::BTreeSet<String> {
    local::raw::row_partition_keys(
        &stack.client,
        &stack.names.name(stack.project.region, Table::Memberships),
        aud,
    )
    .await
}

/// Everything the read API answers about one segment: members, counts, each member's Partner
/// Sync events, and Find People by action (sorted: the order across buckets is the bucket's).
async fn segment_answers(stack: &Stack, aud: i64) -> serde_json::Value {
    let mut members = stack.members(aud, 37).await;
    members.sort();
    let (_, segment) = stack
        .read_api("GET", &format!("/v1/segments/{aud}"), "")
        .await;
    // Each Partner Sync of a sample of profiles, members and former members.
    let mut events = Vec::new();
    for ct in (0..60).step_by(5).map(|i| format!("__p{i:03}")) {
        let (_, page) = stack
            .read_api("GET", &format!("/v1/profiles/{ct}/events?limit=100"), "")
            .await;
        let actions: Vec<String> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["properties"]["Action"].as_str().unwrap().to_owned())
            .collect();
        events.push(json!({"ct": ct, "actions": actions}));
    }
    let mut added = stack.people(aud, Some("Added"), 23).await;
    added.sort();
    let mut removed = stack.people(aud, Some("Removed"), 23).await;
    removed.sort();
    json!({"members": members, "member_count": segment["member_count"],
           "added_total": segment["added_total"], "removed_total": segment["removed_total"],
           "history": segment["history"], "events": events, "added": added, "removed": removed})
}

#[tokio::test]
async fn one_bucket_and_many_give_the_same_members_counts_events_and_people() {
    let one = Stack::with_buckets("mat-one-bucket", Region::Eu1, 1).await;
    let many = Stack::new("mat-many-buckets", Region::Eu1).await;
    let adds: Vec<_> = (0..60)
        .map(|i| change(&format!("__p{i:03}"), 9, ChangeAction::Add, 10, "adds"))
        .collect();
    let removes: Vec<_> = (0..60)
        .step_by(6)
        .map(|i| {
            change(
                &format!("__p{i:03}"),
                9,
                ChangeAction::Delete,
                20,
                "removes",
            )
        })
        .collect();
    for stack in [&one, &many] {
        for chunk in [&adds[..30], &adds[30..], &removes[..]] {
            materialize_changes(&stack.store, Region::Eu1, &stack.project.id, chunk)
                .await
                .unwrap();
        }
    }
    let (a, b) = (
        segment_answers(&one, 9).await,
        segment_answers(&many, 9).await,
    );
    assert_eq!(a["members"].as_array().unwrap().len(), 50);
    assert_eq!(a["member_count"], 50);
    assert_eq!(a["removed"].as_array().unwrap().len(), 10);
    assert_eq!(a, b, "one bucket and many answer alike");
    // One key for the one-bucket segment (the key segments always had), many for the other.
    let expected_one = shared::store::keys::memberships::bucket_pk(&one.project.id, 9, 1, 0);
    assert_eq!(
        row_keys(&one, 9).await.into_iter().collect::<Vec<_>>(),
        [expected_one]
    );
    assert!(
        row_keys(&many, 9).await.len() > 25,
        "60 profiles use many of 64 buckets"
    );
    assert_counts_agree(&view(&many, 9).await);
}

#[tokio::test]
async fn a_segment_created_before_buckets_keeps_its_one_key() {
    let stack = Stack::new("mat-legacy", Region::Eu1).await;
    // A segment as it was stored before buckets existed: no bucket count recorded.
    stack.send(&stack.subscription(12, "Old", "add", 1)).await;
    local::raw::forget_segment_buckets(
        &stack.client,
        &stack.names.name(Region::Eu1, Table::Segments),
        &stack.project.id,
        12,
    )
    .await;
    let adds: Vec<_> = (0..40)
        .map(|i| change(&format!("__o{i:02}"), 12, ChangeAction::Add, 10, "old"))
        .collect();
    materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &adds)
        .await
        .unwrap();
    let keys: Vec<String> = row_keys(&stack, 12).await.into_iter().collect();
    assert_eq!(keys, [format!("{}#12", stack.project.id)]);
    assert_eq!(stack.members(12, 100).await.len(), 40);
    assert_eq!(stack.people(12, Some("Added"), 100).await.len(), 40);
    // A newly connected segment records its buckets; a change to it lands in many keys.
    stack.send(&stack.subscription(13, "New", "add", 1)).await;
    let adds: Vec<_> = (0..40)
        .map(|i| change(&format!("__n{i:02}"), 13, ChangeAction::Add, 10, "new"))
        .collect();
    materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &adds)
        .await
        .unwrap();
    assert!(row_keys(&stack, 13).await.len() > 20);
}

#[tokio::test]
async fn paging_across_buckets_lists_every_member_present_throughout_exactly_once() {
    let stack = Stack::new("mat-paging", Region::Eu1).await;
    let first: Vec<_> = (0..200)
        .map(|i| change(&format!("__s{i:03}"), 21, ChangeAction::Add, 10, "first"))
        .collect();
    materialize_changes(&stack.store, Region::Eu1, &stack.project.id, &first)
        .await
        .unwrap();
    // Adds race the paging: 100 more members arrive while pages of 19 are read.
    let racing: Vec<_> = (0..100)
        .map(|i| change(&format!("__r{i:03}"), 21, ChangeAction::Add, 10, "race"))
        .collect();
    let adder = async {
        for chunk in racing.chunks(10) {
            materialize_changes(&stack.store, Region::Eu1, &stack.project.id, chunk)
                .await
                .unwrap();
        }
    };
    let readers = async {
        (
            stack.members(21, 19).await,
            stack.people(21, Some("Added"), 19).await,
        )
    };
    let ((), (listed, people)) = tokio::join!(adder, readers);
    for list in [&listed, &people] {
        let mut seen = std::collections::HashSet::new();
        for ct in list.iter() {
            assert!(seen.insert(ct), "{ct} listed twice");
        }
        for i in 0..200 {
            assert!(seen.contains(&format!("__s{i:03}")), "__s{i:03} missing");
        }
        assert!(
            seen.iter()
                .all(|ct| ct.starts_with("__s") || ct.starts_with("__r"))
        );
    }
    assert_eq!(stack.members(21, 100).await.len(), 300);
}

#[tokio::test]
async fn a_page_of_members_or_people_costs_a_bounded_number_of_dynamodb_calls() {
    let stack = Stack::new("mat-bounded-reads", Region::Eu1).await;
    let project = stack.project.id.clone();
    // 21 and 12 (one bucket, as stored before buckets) hold only former members; 22 holds
    // members none of whom ever left.
    stack.send(&stack.subscription(12, "Old", "add", 1)).await;
    local::raw::forget_segment_buckets(
        &stack.client,
        &stack.names.name(Region::Eu1, Table::Segments),
        &project,
        12,
    )
    .await;
    let mut changes = Vec::new();
    // More rows than a page may read one at a time (a page of one asks for one row a Query).
    for i in 0..200 {
        let ct = format!("__f{i:03}");
        for aud in [12, 21] {
            changes.push(change(&ct, aud, ChangeAction::Add, 10, "in"));
            changes.push(change(&ct, aud, ChangeAction::Delete, 20, "out"));
        }
        changes.push(change(&ct, 22, ChangeAction::Add, 10, "in"));
    }
    for chunk in changes.chunks(500) {
        materialize_changes(&stack.store, Region::Eu1, &project, chunk)
            .await
            .unwrap();
    }
    let plan = local::faults::FaultPlan::default();
    let counting = stack.through(&plan);
    let bound = shared::store::reads::MAX_PAGE_QUERIES as u32 + 8;
    for path in [
        "/v1/segments/21/members?limit=1",
        "/v1/segments/12/members?limit=1",
        "/v1/people?event=Partner%20Sync&segment=22&action=Removed&limit=1",
    ] {
        let path = path.replace("%20", " ");
        plan.calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let (status, page) = stack
            .read_api_through(&counting, &stack.project.passcode, "GET", &path, "")
            .await;
        let calls = plan.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(status, 200, "{path}: {page}");
        assert!(
            calls <= bound,
            "{path}: {calls} DynamoDB calls for one page"
        );
        // What was found so far comes back with a cursor to go on from.
        assert!(page["next_cursor"].is_string(), "{path}: {page}");
    }
    // Followed to the end, the pages find what there is: nobody.
    assert!(stack.members(21, 100).await.is_empty());
    assert!(stack.people(22, Some("Removed"), 100).await.is_empty());
}
