//! Identity resolution against DynamoDB Local, through the stream handler.

use std::collections::{HashMap, HashSet};

use integration_tests::*;
use serde_json::json;
use shared::domain::changes::{ChangeAction, decode_changes};
use shared::domain::records::{InboxStatus, Profile, PropertyValue, SyncRow};
use shared::domain::region::Region;
use shared::store::snapshot::ProjectSnapshot;
use shared::store::tables::Table;

fn profiles_by_ct(held: &ProjectSnapshot) -> HashMap<String, Profile> {
    held.profiles
        .iter()
        .map(|p| (p.clevertap_id.clone(), p.clone()))
        .collect()
}

fn claims(held: &ProjectSnapshot) -> HashMap<String, String> {
    held.claims
        .iter()
        .map(|c| (c.identity.clone(), c.clevertap_id.clone()))
        .collect()
}

fn outcome(row: &SyncRow, key: &str) -> u64 {
    row.outcomes[key] as u64
}

#[tokio::test]
async fn every_rung_and_skip_reason_end_to_end() {
    let stack = Stack::new("rungs", Region::Eu1).await;
    let profiles = json!([
        // 0: partner id → that CleverTap ID, exactly; email and phone merged.
        {"partner_identities": [raw("CleverTap_User_ID", "-h5f3a")],
         "user_identities": [raw("customer", "c-0"), raw("email", " Ann@Example.COM "), raw("mobile_number", "+44 7700 900001")],
         "mpid": "1", "audiences": [entry(10, "add")]},
        // 1: customer id → Identity.
        {"user_identities": [raw("customer", "c-1"), raw("email", "bob@example.com")], "mpid": "2",
         "audiences": [entry(10, "add")]},
        // 2: mpid with a usable email → Identity = mpid.
        {"user_identities": [raw("email", "cy@example.com")], "mpid": "-0077", "audiences": [entry(10, "add")]},
        // 3: only an mpid → anonymous.
        {"mpid": "4", "audiences": [entry(10, "add")]},
        // 4: only hashed identities → hashed_unusable.
        {"user_identities": [{"type": "email", "encoding": "sha256", "value": "86e0b9e5"}], "mpid": "5",
         "audiences": [entry(10, "add")]},
        // 5: nothing usable at all → no_identity.
        {"device_identities": [raw("android_id", "a0504a8cfa15ce2c")], "audiences": [entry(10, "add")]},
        // 6: invalid email and phone are dropped and counted; customer id still resolves.
        {"user_identities": [raw("customer", "c-6"), raw("email", "nope"), raw("mobile_number", "12345")],
         "audiences": [entry(10, "delete")]},
        // 7: the connection maps other2 as the Identity; attribute_update changes properties only.
        {"user_identities": [raw("customer", "ignored"), raw("other2", "o2-7")], "mpid": "8",
         "audiences": [{"audience_id": 11, "audience_name": "Other", "action": "attribute_update",
                        "audience_subscription_settings": {"userIdType": "other2"},
                        "user_attributes": [{"key": "tier", "value": "gold", "action": "upsert"},
                                            {"key": "vip", "value": null, "action": "upsert"},
                                            {"key": "tags", "list_value": ["a", "b"], "action": "upsert"}]}]},
    ]);
    stack.send(&stack.batch("m-rungs", 1_000, profiles)).await;
    let mut pipeline = stack.pipeline().await;
    pipeline.run_until_idle(20).await.unwrap();

    let held = stack.held().await;
    let profiles = profiles_by_ct(&held);
    let claims = claims(&held);

    let p0 = &profiles["-h5f3a"];
    assert_eq!(p0.email.as_deref(), Some("ann@example.com"));
    assert_eq!(p0.phone.as_deref(), Some("+447700900001"));
    assert!(
        !claims.contains_key("c-0"),
        "the partner rung does not claim the customer id"
    );

    let ct1 = &claims["c-1"];
    assert!(ct1.starts_with("__") && ct1.len() == 34, "{ct1}");
    assert_eq!(profiles[ct1].identity.as_deref(), Some("c-1"));
    assert_eq!(profiles[ct1].email.as_deref(), Some("bob@example.com"));

    assert_eq!(
        profiles[&claims["-77"]].email.as_deref(),
        Some("cy@example.com")
    );

    let p6 = &profiles[&claims["c-6"]];
    assert_eq!((&p6.email, &p6.phone), (&None, &None));

    let p7 = &profiles[&claims["o2-7"]];
    assert_eq!(p7.properties["tier"], PropertyValue::Text("gold".into()));
    assert_eq!(p7.properties["vip"], PropertyValue::Tag);
    assert_eq!(
        p7.properties["tags"],
        PropertyValue::List(vec!["a".into(), "b".into()])
    );
    assert!(!claims.contains_key("ignored"));

    assert_eq!(profiles.len(), 5, "no profile for the skipped users");
    assert_eq!(claims.len(), 4);

    let row = &held.inbox[0];
    assert_eq!(row.status, InboxStatus::Materialized);
    for (key, expected) in [
        ("partner_id", 1),
        ("identity", 3),
        ("mpid", 1),
        ("anonymous", 1),
        ("hashed_unusable", 1),
        ("no_identity", 1),
        ("invalid_email", 1),
        ("invalid_phone", 1),
        ("created", 5),
        ("merged", 0),
        ("attribute_updates", 1),
    ] {
        assert_eq!(outcome(row, key), expected, "{key}");
    }
    // A materialized row keeps its counts, not its payload or changes.
    let chunk = &stack.chunks().await[0];
    assert!(chunk.payload.is_empty() && chunk.changes.is_none());
    assert_eq!((row.handed_on["add"], row.handed_on["delete"]), (3, 1));
    // The changes it handed on: resolving the received row again (a replay) computes them.
    let changes = replayed_changes(&stack, Region::Eu1).await;
    assert_eq!(
        changes.len(),
        4,
        "three adds and one delete from resolved users"
    );
    assert_eq!(
        changes
            .iter()
            .filter(|c| c.action == ChangeAction::Delete)
            .count(),
        1
    );
    let c0 = changes.iter().find(|c| c.clevertap_id == "-h5f3a").unwrap();
    assert_eq!(
        (c0.audience_id, c0.ts_ms, c0.message_id.as_str()),
        (10, 1_000, "m-rungs")
    );
    assert_eq!(
        changes
            .iter()
            .find(|c| c.clevertap_id == *ct1)
            .unwrap()
            .identity
            .as_deref(),
        Some("c-1")
    );
}

#[tokio::test]
async fn existing_profiles_are_matched_and_merged_never_duplicated() {
    let stack = Stack::new("merge", Region::Us1).await;
    let mut pipeline = stack.pipeline().await;
    stack
        .send(&stack.batch("m1", 1, json!([
            {"user_identities": [raw("customer", "alice")], "audiences": [entry(1, "add")]},
            {"partner_identities": [raw("CleverTap_User_ID", "__ct-bob")], "audiences": [entry(1, "add")]},
        ])))
        .await;
    pipeline.run_until_idle(20).await.unwrap();
    let before = claims(&stack.held().await);

    stack
        .send(&stack.batch("m2", 2, json!([
            {"user_identities": [raw("customer", "alice"), raw("email", "alice@example.com")], "audiences": [entry(2, "add")]},
            {"partner_identities": [raw("CleverTap_User_ID", "__ct-bob")], "user_identities": [raw("mobile_number", "+14155550123")],
             "audiences": [entry(2, "add")]},
        ])))
        .await;
    pipeline.run_until_idle(20).await.unwrap();

    let held = stack.held().await;
    let profiles = profiles_by_ct(&held);
    assert_eq!(claims(&held), before, "the Identity kept its profile");
    assert_eq!(profiles.len(), 2);
    assert_eq!(
        profiles[&before["alice"]].email.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(profiles["__ct-bob"].phone.as_deref(), Some("+14155550123"));
    let second = held.inbox.iter().find(|r| r.message_id == "m2").unwrap();
    assert_eq!(
        (outcome(second, "merged"), outcome(second, "created")),
        (2, 0)
    );
}

#[tokio::test]
async fn concurrent_resolutions_create_one_profile_per_identity() {
    let stack = Stack::new("race", Region::Sg1).await;
    // 16 batches that all bring the same 40 new identities (in different orders).
    for b in 0..16 {
        let profiles: Vec<_> = (0..40)
            .map(|i| (i * 7 + b * 3) % 40)
            .map(|i| {
                json!({"user_identities": [raw("customer", &format!("shared-{i}")),
                                                  raw("email", &format!("s{i}.b{b}@example.com"))],
                            "audiences": [entry(5, "add")]})
            })
            .collect();
        stack
            .send(&stack.batch(&format!("race-{b}"), b, json!(profiles)))
            .await;
    }
    // Resolve all 16 chunks at once, as 16 concurrent Lambda invocations would.
    let rows = stack.chunks().await;
    assert_eq!(rows.len(), 16);
    let results = futures::future::join_all(rows.iter().map(|row| {
        let store = stack.store.clone();
        async move {
            // Retried on a transient failure, as Lambda redelivers a failed record: under this
            // load DynamoDB Local gives up waiting for a lock ("will succeed in actual DynamoDB").
            let mut attempt = 0;
            loop {
                match shared::stages::resolve::resolve_chunk(&store, Region::Sg1, row).await {
                    Ok(r) => return Ok(r.changes),
                    Err(e) if !e.is_permanent() && attempt < 20 => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }))
    .await;

    let held = stack.held().await;
    let claims = claims(&held);
    let profiles = profiles_by_ct(&held);
    assert_eq!(claims.len(), 40);
    assert_eq!(profiles.len(), 40, "exactly one profile per identity");
    let distinct: HashSet<&String> = claims.values().collect();
    assert_eq!(distinct.len(), 40);
    // Every resolution agrees on which profile each identity is.
    for changes in results {
        for c in changes.unwrap() {
            assert_eq!(&claims[c.identity.as_deref().unwrap()], &c.clevertap_id);
        }
    }
}

#[tokio::test]
async fn a_replayed_record_changes_nothing() {
    let stack = Stack::new("replay", Region::Mec1).await;
    stack
        .send(&stack.batch("m-replay", 9, json!([
            {"user_identities": [raw("customer", "r1"), raw("email", "r1@example.com")], "audiences": [entry(3, "add")]},
            {"user_identities": [raw("email", "r2@example.com")], "mpid": "22", "audiences": [entry(3, "delete")]},
        ])))
        .await;
    let names = stack.names.clone();
    let client = stack.client.clone();
    let arn = local::streams::stream_arn(&client, &names.name(Region::Mec1, Table::Inbox))
        .await
        .unwrap();
    let mut poller =
        local::streams::StreamPoller::new(local::streams::streams_client(&endpoint()), arn);
    let insert = poller.poll().await.unwrap();
    assert_eq!(insert.len(), 1);
    let received = stack.chunks().await;

    let (first, _) = shared::stages::resolve::handle_inbox_event(
        &stack.store,
        &names,
        local::streams::to_event(insert.clone()),
    )
    .await;
    assert!(first.batch_item_failures.is_empty());
    let profiles_after_first = stack.held().await;
    let row_after_first = stack.chunks().await;

    // The same record again, as Lambda may redeliver it.
    let (second, _) = shared::stages::resolve::handle_inbox_event(
        &stack.store,
        &names,
        local::streams::to_event(insert.clone()),
    )
    .await;
    assert!(second.batch_item_failures.is_empty());
    let after_second = stack.held().await;
    assert_eq!(
        (&after_second.profiles, &after_second.claims),
        (&profiles_after_first.profiles, &profiles_after_first.claims)
    );
    assert_eq!(stack.chunks().await, row_after_first);

    // The resolved row keeps the changes, not the payload (a replayed record carries it).
    assert!(row_after_first[0].changes.is_some());
    assert!(row_after_first[0].payload.is_empty());
    // A direct replay of the received row computes the same changes.
    let replay = shared::stages::resolve::resolve_chunk(&stack.store, Region::Mec1, &received[0])
        .await
        .unwrap();
    assert!(!replay.handed_off);
    let stored = decode_changes(row_after_first[0].changes.as_ref().unwrap()).unwrap();
    assert_eq!(replay.changes, stored);
}

#[tokio::test]
async fn a_chunk_whose_batch_get_returns_unprocessed_keys_still_completes() {
    let stack = Stack::new("unprocessed", Region::Aps3).await;
    let profiles: Vec<_> = (0..150)
        .map(|i| json!({"user_identities": [raw("customer", &format!("u{i}"))], "audiences": [entry(4, "add")]}))
        .collect();
    stack
        .send(&stack.batch("m-unprocessed", 1, json!(profiles)))
        .await;
    // Every BatchGetItem of the first few reports half its keys unprocessed.
    let plan = local::faults::FaultPlan::default();
    plan.unprocessed_keys
        .store(6, std::sync::atomic::Ordering::SeqCst);
    let faulty = stack.through(&plan);
    let row = stack.chunks().await.remove(0);
    let report = shared::stages::resolve::resolve_chunk(&faulty, Region::Aps3, &row)
        .await
        .unwrap();

    assert_eq!(
        plan.injected.load(std::sync::atomic::Ordering::SeqCst),
        6,
        "the faults were hit"
    );
    assert_eq!(report.changes.len(), 150);
    let held = stack.held().await;
    assert_eq!(claims(&held).len(), 150);
    assert_eq!(profiles_by_ct(&held).len(), 150);
    // A second run through the faults sees every claim: nothing new is created.
    plan.unprocessed_keys
        .store(6, std::sync::atomic::Ordering::SeqCst);
    let again = shared::stages::resolve::resolve_chunk(&faulty, Region::Aps3, &row)
        .await
        .unwrap();
    assert_eq!(again.changes, report.changes);
    assert_eq!(stack.held().await.profiles.len(), 150);
}

/// The changes resolve hands on for the one chunk of a stack's inbox: its INSERT record, read
/// back from the stream, resolved again (a replay writes nothing and computes the same changes).
async fn replayed_changes(
    stack: &Stack,
    region: Region,
) -> Vec<shared::domain::changes::MembershipChange> {
    let arn = local::streams::stream_arn(&stack.client, &stack.names.name(region, Table::Inbox))
        .await
        .unwrap();
    let mut poller =
        local::streams::StreamPoller::new(local::streams::streams_client(&endpoint()), arn);
    let records = poller.poll().await.unwrap();
    let event = local::streams::to_event(records);
    let insert = event
        .records
        .iter()
        .find(|r| r.event_name == "INSERT")
        .expect("the chunk's INSERT record");
    let row = shared::stages::stream::inbox_row(insert).unwrap();
    let report = shared::stages::resolve::resolve_chunk(&stack.store, region, &row)
        .await
        .unwrap();
    assert!(!report.handed_off, "a replay hands nothing on");
    report.changes
}

#[tokio::test]
async fn an_oversized_profile_is_skipped_and_counted_and_its_neighbours_go_on() {
    let stack = Stack::new("too-long", Region::Eu1).await;
    let huge = "x".repeat(1_500);
    stack
        .send(&stack.batch("m-huge", 5, json!([
            {"partner_identities": [raw("CleverTap_User_ID", &huge)], "audiences": [entry(12, "add")]},
            {"user_identities": [raw("customer", "fine-1")], "audiences": [entry(12, "add")]},
            {"user_identities": [raw("customer", "fine-2")],
             "audiences": [{"audience_id": 12, "audience_name": "y".repeat(5_000), "action": "add"}]},
        ])))
        .await;
    let mut pipeline = stack.pipeline().await;
    pipeline.run_until_idle(20).await.unwrap();

    let rows = stack.held().await.inbox;
    assert_eq!(rows[0].status, InboxStatus::Materialized);
    assert_eq!(outcome(&rows[0], "too_long"), 2);
    assert_eq!(outcome(&rows[0], "identity"), 1);
    let members = stack.member_identities().await;
    assert_eq!(members, ["fine-1"]);
}

#[tokio::test]
async fn a_chunk_that_can_never_be_resolved_is_marked_failed_with_its_reason() {
    let stack = Stack::new("failed", Region::Eu1).await;
    stack
        .send(&stack.batch(
            "m-broken",
            5,
            json!([
                {"user_identities": [raw("customer", "b1")], "audiences": [entry(3, "add")]},
            ]),
        ))
        .await;
    let arn =
        local::streams::stream_arn(&stack.client, &stack.names.name(Region::Eu1, Table::Inbox))
            .await
            .unwrap();
    let mut poller =
        local::streams::StreamPoller::new(local::streams::streams_client(&endpoint()), arn);
    let mut records = poller.poll().await.unwrap();
    assert_eq!(records.len(), 1);
    // The stored payload is unreadable (as a corrupted or foreign row would be): its
    // size prefix beyond any chunk.
    records[0]["dynamodb"]["NewImage"]["payload"] = json!({"B": "/////w=="});
    let (response, batch) = shared::stages::resolve::handle_inbox_event(
        &stack.store,
        &stack.names,
        local::streams::to_event(records),
    )
    .await;
    assert_eq!(
        (batch.chunks, batch.chunks_failed),
        (0, 1),
        "counted as failed, not resolved"
    );
    assert!(
        response.batch_item_failures.is_empty(),
        "a permanent failure is not retried"
    );
    let row = stack.held().await.inbox.remove(0);
    assert_eq!(row.status, InboxStatus::Failed);
    assert!(row.failure.unwrap().contains("unreadable"));

    // The sync log shows it.
    let port = stack.serve_http().await;
    let (status, body) = http(
        port,
        "GET",
        "/v1/syncs",
        &[
            ("X-CleverTap-Account-Id", stack.project.id.as_str()),
            ("X-CleverTap-Passcode", stack.project.passcode.as_str()),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sync = &body["syncs"][0];
    assert_eq!(sync["status"], "failed");
    assert!(sync["failures"][0].as_str().unwrap().contains("unreadable"));
}

#[tokio::test]
async fn a_profile_dynamodb_refuses_to_store_is_skipped_with_its_changes() {
    let stack = Stack::new("refused", Region::Eu1).await;
    let mut pipeline = stack.pipeline().await;
    // Each message gives one profile 45 new properties of 4,000 bytes (within every bound);
    // by the third message the profile item would pass DynamoDB's 400 KB item limit.
    for m in 0..3 {
        let attributes: Vec<_> = (0..45)
            .map(|k| json!({"key": format!("m{m}k{k}"), "value": "v".repeat(4_000), "action": "upsert"}))
            .collect();
        stack
            .send(&stack.batch(&format!("m-big-{m}"), 10 + m, json!([
                {"user_identities": [raw("customer", "grower")],
                 "audiences": [{"audience_id": 8, "audience_name": "Big", "action": "add", "user_attributes": attributes}]},
                {"user_identities": [raw("customer", format!("bystander-{m}").as_str())], "audiences": [entry(8, "add")]},
            ])))
            .await;
        pipeline.run_until_idle(20).await.unwrap();
    }
    let rows = stack.held().await.inbox;
    assert!(rows.iter().all(|r| r.status == InboxStatus::Materialized));
    let refused: u64 = rows.iter().map(|r| outcome(r, "too_long")).sum();
    assert_eq!(refused, 1, "the third write of the growing profile");
    let members = stack.member_identities().await;
    for m in 0..3 {
        assert!(
            members.contains(&format!("bystander-{m}")),
            "bystander {m} is a member"
        );
    }
}
