//! Materialization against DynamoDB Local: idempotent, order-safe, exact counts.

use std::collections::{BTreeMap, HashMap};

use integration_tests::*;
use serde_json::json;
use shared::Region;
use shared::changes::{ChangeAction, MembershipChange};
use shared::materialize::{MaterializeCounts, materialize_changes};
use shared::tables::Table;

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
    }
}

struct View {
    members: BTreeMap<String, bool>,
    events: Vec<Item>,
    /// `None` until a change was ever applied (a segment is created with its first event).
    segment: Option<Item>,
}

async fn view(stack: &Stack, aud: i64) -> View {
    let pk = format!("{}#{aud}", stack.project.id);
    let members = stack
        .scan(Table::Memberships)
        .await
        .into_iter()
        .filter(|i| text(i, "pk").as_deref() == Some(pk.as_str()))
        .map(|i| (text(&i, "sk").unwrap(), *i["member"].as_bool().unwrap()))
        .collect();
    let mut events: Vec<Item> = stack
        .scan(Table::Events)
        .await
        .into_iter()
        .filter(|i| text(i, "segment_key").as_deref() == Some(pk.as_str()))
        .collect();
    events.sort_by_key(|e| text(e, "sk"));
    let segment = stack
        .segments()
        .await
        .into_iter()
        .find(|i| text(i, "sk").as_deref() == Some(format!("S#{aud}").as_str()));
    View {
        members,
        events,
        segment,
    }
}

fn count(item: &Item, key: &str) -> i64 {
    text(item, key).unwrap().parse().unwrap()
}

fn seg_count(v: &View, key: &str) -> i64 {
    v.segment.as_ref().map(|s| count(s, key)).unwrap_or(0)
}

fn assert_counts_agree(v: &View) {
    let members = v.members.values().filter(|m| **m).count() as i64;
    assert_eq!(
        seg_count(v, "member_count"),
        members,
        "member_count equals the member rows"
    );
    let added = v
        .events
        .iter()
        .filter(|e| text(e, "action").as_deref() == Some("Added"))
        .count() as i64;
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
    let props = e["properties"].as_m().unwrap();
    assert_eq!(text(e, "event").as_deref(), Some("Partner Sync"));
    assert_eq!(props["Partner Segment Name"].as_s().unwrap(), "Audience 7");
    assert_eq!(props["Partner Segment ID"].as_n().unwrap(), "7");
    assert_eq!(props["CT Source"].as_s().unwrap(), "mParticle");
    assert_eq!(props["Partner Name"].as_s().unwrap(), "mParticle");
    assert!(["Added", "Removed"].contains(&props["Action"].as_s().unwrap().as_str()));
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
    let actions: Vec<String> = v
        .events
        .iter()
        .map(|e| text(e, "action").unwrap())
        .collect();
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
        .map(|e| {
            (
                text(e, "clevertap_id").unwrap(),
                text(e, "change_id").unwrap(),
            )
        })
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    let mut by_profile: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &v.events {
        by_profile
            .entry(text(e, "clevertap_id").unwrap())
            .or_default()
            .push(text(e, "action").unwrap());
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
    let faulty = shared::store::Store::new(
        shared::clients::RegionalClients::single(local::faults::faulty_client(
            &endpoint(),
            plan.clone(),
        )),
        stack.names.clone(),
    );
    // A concurrent writer records a newer change for __b just before our transaction commits.
    let table = stack.names.name(Region::Eu1, Table::Memberships);
    plan.before_transaction.lock().unwrap().push(json!({
        "TableName": table,
        "Item": {"pk": {"S": format!("{}#5", stack.project.id)}, "sk": {"S": "__b"},
                 "member": {"BOOL": false}, "version": {"S": "9999999999999#later#000000#0000"}}
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
async fn removal_clears_a_thousand_member_segment_in_the_background() {
    let stack = Stack::new("mat-remove", Region::In1).await;
    let sub = |action: &str, ts: i64| {
        json!({"type": "audience_subscription_request", "id": format!("s{ts}"), "timestamp_ms": ts,
               "account": stack.project.account(), "audience_id": 77, "audience_name": "Big", "action": action})
        .to_string()
    };
    stack.send(&sub("add", 1)).await;
    let adds: Vec<_> = (0..1_000)
        .map(|i| change(&format!("__m{i:04}"), 77, ChangeAction::Add, 10, "fill"))
        .collect();
    let c = materialize_changes(&stack.store, Region::In1, &stack.project.id, &adds)
        .await
        .unwrap();
    assert_eq!(c.added, 1_000);
    assert_eq!(seg_count(&view(&stack, 77).await, "member_count"), 1_000);

    let mut pipeline = stack.pipeline().await;
    pipeline.run_until_idle(10).await.unwrap();
    let clearing_began = shared::protocol::now_ms();
    stack.send(&sub("remove", 2)).await;
    pipeline.run_until_idle(10).await.unwrap();
    let clearing_days = [clearing_began, shared::protocol::now_ms()].map(shared::calendar::day_of);

    let v = view(&stack, 77).await;
    assert_eq!(
        text(v.segment.as_ref().unwrap(), "status").as_deref(),
        Some("archived")
    );
    assert_eq!(seg_count(&v, "member_count"), 0);
    assert!(v.members.values().all(|m| !m), "no member left");
    assert_eq!(v.events.len(), 1_000, "clearing raises no per-user events");
    // The segment's history: 1,000 added on the day of the events, cleared on the day of the
    // clearing; the members at the end of the last day are the count.
    let (_, days) = stack
        .store
        .segment_with_history(Region::In1, &stack.project.id, 77)
        .await
        .unwrap()
        .unwrap();
    let added: i64 = days.values().map(|d| d.added).sum();
    let cleared: i64 = days.values().map(|d| d.cleared).sum();
    assert_eq!((added, cleared), (1_000, 1_000));
    assert_eq!(days[&shared::calendar::day_of(10)].added, 1_000);
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
            700,
            31,
            "add",
        ))
        .await;
    stack
        .send(&membership_body(
            &stack.project,
            "flow-1",
            1_000,
            700,
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

    let rows = stack.scan(Table::Inbox).await;
    assert_eq!(rows.len(), 4, "flow-1 is two chunks, stored once");
    for r in &rows {
        assert_eq!(
            text(r, "status").as_deref(),
            Some("materialized"),
            "{:?}",
            text(r, "sk")
        );
    }
    let applied = |msg: &str, key: &str| -> u64 {
        rows.iter()
            .filter(|r| text(r, "message_id").as_deref() == Some(msg))
            .map(|r| {
                r["applied"].as_m().unwrap()[key]
                    .as_n()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    // Chunks materialize concurrently, so flow-2's deletes may land before flow-1's adds of the
    // same users; then those adds are stale. Either way the end state is the newest.
    assert_eq!(applied("flow-1", "added") + applied("flow-1", "stale"), 700);
    assert_eq!(applied("flow-2", "removed") + applied("flow-2", "noop"), 50);
    // flow-0 is older than everything, but may arrive before flow-1 reaches its users.
    assert_eq!(applied("flow-0", "stale") + applied("flow-0", "noop"), 50);
    assert_eq!(applied("flow-0", "removed"), 0);
    let v = view(&stack, 31).await;
    assert_eq!(seg_count(&v, "member_count"), 650);
    assert_eq!(v.members.len(), 700);
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
    assert_eq!(
        text(v.segment.as_ref().unwrap(), "status").as_deref(),
        Some("archived")
    );
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
    let (found, next) = stack
        .store
        .find_people(Region::Eu1, &stack.project.id, 5, Some("Added"), 10, None)
        .await
        .unwrap();
    assert_eq!(found, ["__a#b", "__c#d#e", "plain"]);
    assert_eq!(next, None);
    // Paging by CleverTap ID still lists each profile once.
    let (first, cursor) = stack
        .store
        .find_people(Region::Eu1, &stack.project.id, 5, None, 1, None)
        .await
        .unwrap();
    let (second, _) = stack
        .store
        .find_people(
            Region::Eu1,
            &stack.project.id,
            5,
            None,
            5,
            cursor.as_deref(),
        )
        .await
        .unwrap();
    assert_eq!(first, ["__a#b"]);
    assert_eq!(second, ["__c#d#e", "plain"]);
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
        shared::materialize::clear_segment(&stack.store, Region::Eu1, &stack.project.id, 99),
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
    assert_eq!(
        text(v.segment.as_ref().unwrap(), "status").as_deref(),
        Some("archived")
    );
    assert_eq!(seg_count(&v, "member_count"), 0);
    assert!(v.members.values().all(|m| !m), "no member left");
    assert_eq!(v.members.len(), MEMBERS);
}
