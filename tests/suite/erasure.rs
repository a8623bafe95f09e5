//! Erasure (a `dsr_processing_request`, docs/contract.md §2.8) against DynamoDB Local: what goes,
//! what stays, redelivery, late and newer batches, an unknown person, another project, the audit
//! row, and the operator's path.

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::erasure::{TombstoneHasher, TombstoneKind};
use shared::domain::protocol::{Regulation, now_ms};
use shared::domain::records::MembershipRow;
use shared::domain::region::Region;
use shared::ports::erasures::ErasureLog;
use shared::stages::erasure::{ErasureOutcome, ErasureRequest, erase};
use shared::store::snapshot::ProjectSnapshot;
use shared::store::tables::Table;

const ANN_EMAIL: &str = "ann@example.com";
const ANN_PHONE: &str = "+14155550100";

fn subject_email(email: &str) -> Value {
    json!({"email": {"encoding": "raw", "value": email}})
}

/// Ann (c-1, email, phone) joins audiences 7 and 8; Bob (c-2) joins 7.
fn first_batch(stack: &Stack, ts: i64) -> String {
    stack.batch(
        &format!("m-{ts}"),
        ts,
        json!([
            {"user_identities": [raw("customer", "c-1"), raw("email", "Ann@Example.com"),
                                 raw("mobile_number", ANN_PHONE)],
             "audiences": [entry(7, "add"), entry(8, "add")]},
            {"user_identities": [raw("customer", "c-2"), raw("email", "bob@example.com")],
             "audiences": [entry(7, "add")]},
        ]),
    )
}

/// A batch with only Ann joining audience 7.
fn ann_batch(stack: &Stack, id: &str, ts: i64) -> String {
    stack.batch(
        id,
        ts,
        json!([{"user_identities": [raw("customer", "c-1"), raw("email", ANN_EMAIL)],
                "audiences": [entry(7, "add")]}]),
    )
}

/// The key a tombstone of `value` is written under in the stack's project, now.
async fn tombstone_key(stack: &Stack, kind: TombstoneKind, value: &str) -> String {
    let keys = stack.store.tombstone_keys().await.unwrap();
    let hasher = TombstoneHasher {
        keys: &keys,
        project: &stack.project.id,
        legacy_salt: None,
    };
    hasher.written(kind, value)
}

async fn read(stack: &Stack, path: &str) -> Value {
    stack.read_api("GET", path, "").await.1
}

/// Imports the first batch (sent a minute ago); answers Bob's CleverTap ID.
async fn imported_bob(stack: &Stack) -> String {
    stack.send(&first_batch(stack, now_ms() - 60_000)).await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    read(stack, "/v1/profiles?identity=c-2").await["profiles"][0]["clevertap_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn member_count(stack: &Stack, audience: i64) -> (i64, i64, i64) {
    let s = read(stack, &format!("/v1/segments/{audience}")).await;
    let n = |k: &str| s[k].as_i64().unwrap();
    (n("member_count"), n("added_total"), n("removed_total"))
}

/// Every stored item of one project that mentions `needle` anywhere (keys or values), as
/// text, in a stable order.
async fn items_mentioning(stack: &Stack, project_id: &str, needle: &str) -> Vec<String> {
    stack
        .snapshot()
        .await
        .into_iter()
        .filter(|item| item.contains(project_id) && item.contains(needle))
        .collect()
}

/// The project's data less what an erasure of nobody may add: tombstones and audit rows (the
/// project's erasure mark is not in it).
async fn data_snapshot(stack: &Stack) -> ProjectSnapshot {
    let mut held = stack.held().await;
    held.tombstones = 0;
    held.erasures.clear();
    held
}

#[tokio::test]
async fn erasure_takes_a_person_out_of_everything_exactly_once() {
    let stack = Stack::new("erasure", Region::Eu1).await;
    let other = provision(&stack.store, Region::Eu1).await;
    let mut pipeline = stack.pipeline().await;
    let t0 = now_ms() - 60_000;
    stack.send(&first_batch(&stack, t0)).await;
    // Another project holds the same person: it must not be touched.
    let mut other_batch: Value = serde_json::from_str(&first_batch(&stack, t0)).unwrap();
    other_batch["account"] = other.account();
    stack.send(&other_batch.to_string()).await;
    pipeline.run_until_idle(50).await.unwrap();
    let ann = read(&stack, "/v1/profiles?identity=c-1").await["profiles"][0].clone();
    let ann_ct = ann["clevertap_id"].as_str().unwrap().to_owned();
    assert_eq!(ann["phone"], ANN_PHONE);
    assert_eq!(member_count(&stack, 7).await, (2, 2, 0));
    assert_eq!(member_count(&stack, 8).await, (1, 1, 0));
    let other_before = items_mentioning(&stack, &other.id, "").await;
    assert!(!other_before.is_empty());

    // The erasure, by email (GDPR).
    let (status, answer) = stack
        .post(&dsr(
            &stack.project,
            "req-1",
            "erasure",
            subject_email("ANN@example.com"),
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "dsr_processing_response");
    assert_eq!(answer["id"], "msg-req-1");

    // Counts stay exact, no Partner Sync event is raised for it, Bob stays.
    assert_eq!(member_count(&stack, 7).await, (1, 2, 0));
    assert_eq!(member_count(&stack, 8).await, (0, 1, 0));
    let members = read(&stack, "/v1/segments/7/members").await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    assert_eq!(members["members"][0]["identity"], "c-2");
    // Nothing of Ann is left: profile, claims, email and phone indexes, events, identity on rows.
    assert!(
        read(&stack, "/v1/profiles?identity=c-1").await["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        read(&stack, &format!("/v1/profiles?email={ANN_EMAIL}")).await["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        read(&stack, "/v1/profiles?phone=%2B14155550100").await["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        read(&stack, &format!("/v1/profiles/{ann_ct}/events")).await["error"],
        "profile not found"
    );
    for needle in ["c-1", ANN_EMAIL, "4155550100"] {
        let left = items_mentioning(&stack, &stack.project.id, needle).await;
        assert!(left.is_empty(), "{needle}: {left:?}");
    }
    let rows: Vec<MembershipRow> = stack
        .held()
        .await
        .memberships
        .into_iter()
        .filter(|m| m.clevertap_id == ann_ct)
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|m| !m.member && m.identity.is_none()));
    // The history shows the two members leaving as cleared, not as Removed events.
    let history = read(&stack, "/v1/segments/8").await["history"].clone();
    assert_eq!(history.as_array().unwrap().last().unwrap()["members"], 0);
    // Bob's data and the other project are untouched.
    assert_eq!(
        read(&stack, "/v1/profiles?identity=c-2").await["profiles"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(items_mentioning(&stack, &other.id, "").await, other_before);

    // The audit row: counts, never the identities.
    let audits = read(&stack, "/v1/erasures").await;
    let audit = &audits["erasures"][0];
    assert_eq!(audit["request_id"], "req-1");
    assert_eq!(audit["regulation"], "gdpr");
    assert_eq!(audit["source"], "mparticle");
    let removed = &audit["removed"];
    assert_eq!(
        (
            removed["profiles"].as_i64(),
            removed["members_removed"].as_i64(),
            removed["memberships"].as_i64(),
            removed["events"].as_i64()
        ),
        (Some(1), Some(2), Some(2), Some(2))
    );
    assert!(
        removed["claims"].as_i64().unwrap() >= 1 && removed["tombstones"].as_i64().unwrap() >= 4
    );
    assert!(!audits.to_string().contains("ann") && !audits.to_string().contains("c-1"));

    // Redelivered: answered again, nothing changes.
    let before = stack.snapshot().await;
    let (status, _) = stack
        .post(&dsr(
            &stack.project,
            "req-1",
            "erasure",
            subject_email(ANN_EMAIL),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        stack.snapshot().await,
        before,
        "a redelivered erasure writes nothing"
    );

    // A late batch sent before the erasure cannot bring Ann back; the sync log counts her as erased.
    stack.send(&ann_batch(&stack, "late", t0 + 1)).await;
    pipeline.run_until_idle(50).await.unwrap();
    assert_eq!(member_count(&stack, 7).await, (1, 2, 0));
    assert!(
        items_mentioning(&stack, &stack.project.id, ANN_EMAIL)
            .await
            .is_empty()
    );
    let syncs = read(&stack, "/v1/syncs").await;
    assert_eq!(syncs["syncs"][0]["request_id"], "late");
    assert_eq!(syncs["syncs"][0]["outcomes"]["erased"], 1);

    // The preview of such a batch says so.
    let body = ann_batch(&stack, "preview", t0 + 2);
    let (_, preview) = stack.read_api("POST", "/v1/preview", &body).await;
    assert_eq!(preview["users"][0]["skip"], "erased", "{preview}");
    assert_eq!(preview["totals"]["ladder"]["erased"], 1);

    // A batch stamped after the cut-off (the erasure's arrival plus the 5 minutes mParticle's
    // clock may run ahead) may: Ann is a new profile again.
    let past_cut_off = now_ms() + shared::domain::protocol::limits::MAX_CLOCK_SKEW_MS;
    stack.send(&ann_batch(&stack, "newer", past_cut_off)).await;
    pipeline.run_until_idle(50).await.unwrap();
    assert_eq!(member_count(&stack, 7).await, (2, 3, 0));
    let again = read(&stack, "/v1/profiles?identity=c-1").await["profiles"][0].clone();
    assert_eq!(again["email"], ANN_EMAIL);
    assert_ne!(
        again["clevertap_id"],
        ann_ct.as_str(),
        "a new profile, not the erased one"
    );

    // Another late batch, sent before the erasure: skipped, and what the newer batch brought back
    // stays (it takes back only its own message's writes).
    stack.send(&ann_batch(&stack, "late-again", t0 + 3)).await;
    pipeline.run_until_idle(50).await.unwrap();
    let still = read(&stack, "/v1/profiles?identity=c-1").await["profiles"][0].clone();
    assert_eq!(still, again);
    assert_eq!(member_count(&stack, 7).await, (2, 3, 0));
}

#[tokio::test]
async fn a_subject_identity_too_long_to_be_a_key_is_ignored_and_the_rest_is_erased() {
    let stack = Stack::new("erasure-huge", Region::Eu1).await;
    stack.send(&first_batch(&stack, now_ms() - 60_000)).await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    let huge = "c".repeat(3_000);
    let identities = json!({
        "email": {"encoding": "raw", "value": ANN_EMAIL},
        "controller_customer_id": {"encoding": "raw", "value": huge},
    });
    let (status, answer) = stack
        .post(&dsr(&stack.project, "req-huge", "erasure", identities))
        .await;
    // A 400 would never be retried by mParticle, and nothing would be erased.
    assert_eq!(status, 200, "{answer}");
    assert!(
        read(&stack, "/v1/profiles?identity=c-1").await["profiles"]
            .as_array()
            .unwrap()
            .is_empty(),
        "Ann is erased"
    );
    let audits = read(&stack, "/v1/erasures").await;
    assert_eq!(audits["erasures"][0]["removed"]["identities_ignored"], 1);
    assert_eq!(audits["erasures"][0]["removed"]["profiles"], 1);
}

#[tokio::test]
async fn an_unknown_person_is_answered_and_nothing_else_is_touched() {
    let stack = Stack::new("erasure-unknown", Region::Eu1).await;
    stack.send(&first_batch(&stack, now_ms() - 60_000)).await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    let before = data_snapshot(&stack).await;
    let (status, answer) = stack
        .post(&dsr(
            &stack.project,
            "req-nobody",
            "erasure",
            json!({"email": {"encoding": "raw", "value": "nobody@example.com"},
                          "ios_advertising_id": {"encoding": "raw", "value": "ABC"}}),
        ))
        .await;
    assert_eq!(
        (status, answer["type"].as_str()),
        (200, Some("dsr_processing_response"))
    );
    assert_eq!(data_snapshot(&stack).await, before);
    let audit = &read(&stack, "/v1/erasures").await["erasures"][0];
    assert_eq!(audit["removed"]["profiles"], 0);
    assert_eq!(
        audit["removed"]["identities_ignored"], 1,
        "a device id is not stored here"
    );
}

#[tokio::test]
async fn other_requests_are_refused_clearly_and_registration_declares_erasure() {
    let stack = Stack::new("erasure-refused", Region::Eu1).await;
    let (status, answer) = stack
        .post(&dsr(
            &stack.project,
            "req-a",
            "access",
            subject_email(ANN_EMAIL),
        ))
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("not supported"),
        "{answer}"
    );
    // The Account Token names the project: without it, nothing is erased.
    let mut wrong = stack.project.clone();
    wrong.token = "wrong".into();
    let (status, _) = stack
        .post(&dsr(&wrong, "req-w", "erasure", subject_email(ANN_EMAIL)))
        .await;
    assert_eq!(status, 403);
    let (status, answer) = stack
        .post(r#"{"type":"dsr_processing_request","account":{}}"#)
        .await;
    assert_eq!(
        (status, answer["path"].as_str()),
        (400, Some("subject_request_id"))
    );
    assert_eq!(
        stack
            .store
            .count_items(Region::Eu1, Table::Profiles)
            .await
            .unwrap(),
        0,
        "nothing written"
    );

    let (status, reg) = stack
        .post(r#"{"type":"module_registration_request","id":"r1"}"#)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        reg["dsr_processing_registration"]["supported_dsr_types"],
        json!(["erasure"])
    );
    assert_eq!(
        reg["dsr_processing_registration"]["account_settings"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn an_operator_erases_by_clevertap_id() {
    let stack = Stack::new("erasure-admin", Region::Eu1).await;
    let bob = imported_bob(&stack).await;
    let request = ErasureRequest::by_operator(
        "clevertap-id",
        &bob,
        Some("ticket-1".into()),
        Regulation::Ccpa,
    )
    .unwrap();
    let outcome = erase(&stack.store, Region::Eu1, &stack.project.id, &request)
        .await
        .unwrap();
    let ErasureOutcome::Erased(audit) = outcome else {
        panic!("erased")
    };
    assert_eq!(
        (
            audit.removed.profiles,
            audit.removed.members_removed,
            audit.removed.claims
        ),
        (1, 1, 1)
    );
    assert_eq!(audit.regulation, "ccpa");
    assert_eq!(member_count(&stack, 7).await.0, 1);
    assert!(
        read(&stack, "/v1/profiles?identity=c-2").await["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let again = erase(&stack.store, Region::Eu1, &stack.project.id, &request)
        .await
        .unwrap();
    assert_eq!(again, ErasureOutcome::AlreadyErased);
    assert!(
        ErasureRequest::by_operator("email", "not-an-email", None, Regulation::Unknown).is_none()
    );
}

/// A project that has had an erasure (of someone else), so resolve checks tombstones, holding
/// Ann's batch (sent a minute ago) as a stored chunk: the stack and the row.
async fn erased_before_with_ann_chunk(test: &str) -> (Stack, shared::ports::inbox::InboxRow) {
    let stack = Stack::new(test, Region::Eu1).await;
    let earlier =
        ErasureRequest::by_operator("identity", "someone-else", None, Regulation::Gdpr).unwrap();
    erase(&stack.store, Region::Eu1, &stack.project.id, &earlier)
        .await
        .unwrap();
    stack
        .send(&ann_batch(&stack, "in-flight", now_ms() - 60_000))
        .await;
    let row = stack.chunks().await.into_iter().next().unwrap();
    (stack, row)
}

#[tokio::test]
async fn an_erasure_that_overtakes_a_chunk_in_flight_still_wins() {
    let (stack, row) = erased_before_with_ann_chunk("erasure-race").await;
    // As resolve claims Ann's Identity (after its first look at the tombstones), an erasure of
    // her lands its tombstone: she was unknown till now, so that erasure found nothing to delete.
    let report =
        resolve_overtaken(&stack, &row, vec![identity_tombstone(&stack, "c-1").await]).await;

    // What resolve wrote after the erasure is gone again, and nothing is handed on to materialize.
    assert_ann_taken_back(&stack, &report).await;
}

/// Bob (c-2) joining `audience`, sent 30 s ago, as resolve hands it to materialize.
fn in_flight_add(bob: &str, audience: i64) -> shared::domain::changes::MembershipChange {
    shared::domain::changes::MembershipChange {
        clevertap_id: bob.to_owned(),
        identity: Some("c-2".into()),
        audience_id: audience,
        audience_name: None,
        action: shared::domain::changes::ChangeAction::Add,
        ts_ms: now_ms() - 30_000,
        message_id: "in-flight".into(),
        profile_index: 0,
        entry_index: 0,
        received_ms: None,
        way: Default::default(),
    }
}

#[tokio::test]
async fn a_change_in_flight_during_an_erasure_is_stale_in_every_segment() {
    let stack = Stack::new("erasure-stale", Region::Eu1).await;
    let bob = imported_bob(&stack).await;
    let request = ErasureRequest::by_operator("identity", "c-2", None, Regulation::Gdpr).unwrap();
    erase(&stack.store, Region::Eu1, &stack.project.id, &request)
        .await
        .unwrap();
    // Resolved before the erasure, materialized after it: Bob into 8, where he never was.
    let change = in_flight_add(&bob, 8);
    let counts = shared::stages::materialize::materialize_changes(
        &stack.store,
        Region::Eu1,
        &stack.project.id,
        &[change],
    )
    .await
    .unwrap();
    assert_eq!((counts.added, counts.stale), (0, 1));
    assert_eq!(member_count(&stack, 8).await, (1, 1, 0), "Ann only");
}

#[tokio::test]
async fn a_retried_chunk_takes_back_what_its_failed_attempt_wrote_for_an_erased_person() {
    let (stack, row) = erased_before_with_ann_chunk("erasure-retry").await;
    let (region, project) = (Region::Eu1, stack.project.id.clone());
    // The first attempt wrote Ann's claim and profile, then failed before it looked at the
    // tombstones again (an erasure of Ann landed in between): its row is still `received`.
    shared::stages::resolve::resolve_chunk(&stack.store, region, &row)
        .await
        .unwrap();
    local::raw::mark_inbox_received(&stack.client, &stack.names.name(region, Table::Inbox)).await;
    let hash = tombstone_key(&stack, TombstoneKind::Email, ANN_EMAIL).await;
    let written = stack
        .store
        .write_tombstone(region, &project, &hash, now_ms())
        .await
        .unwrap();
    assert!(written.applied());
    assert!(!items_mentioning(&stack, &project, "c-1").await.is_empty());

    // The retry skips Ann and takes back the claim and profile its message made.
    let report = shared::stages::resolve::resolve_chunk(&stack.store, region, &row)
        .await
        .unwrap();
    assert_ann_taken_back(&stack, &report).await;
}

/// Resolves `row` through a client that, just before resolve's first conditional put (claiming
/// the Identity), lets an erasure land these writes: the race an erasure wins mid-chunk.
async fn resolve_overtaken(
    stack: &Stack,
    row: &shared::ports::inbox::InboxRow,
    erasure_writes: Vec<Value>,
) -> shared::stages::resolve::ChunkReport {
    let expected = erasure_writes.len() as u32;
    let plan = local::faults::FaultPlan::default();
    *plan.before_put.lock().unwrap() = erasure_writes;
    let faulty = stack.through(&plan);
    let report = shared::stages::resolve::resolve_chunk(&faulty, Region::Eu1, row)
        .await
        .unwrap();
    assert_eq!(
        plan.injected.load(std::sync::atomic::Ordering::SeqCst),
        expected,
        "the race happened"
    );
    report
}

/// Resolve skipped Ann (counted erased), handed nothing on, and left nothing of her.
async fn assert_ann_taken_back(stack: &Stack, report: &shared::stages::resolve::ChunkReport) {
    let project = &stack.project.id;
    assert_eq!(report.outcomes.erased, 1);
    assert!(report.changes.is_empty());
    assert!(items_mentioning(stack, project, "c-1").await.is_empty());
    assert!(items_mentioning(stack, project, ANN_EMAIL).await.is_empty());
}

/// The tombstone an erasure as of now leaves for an Identity, as a PutItem body.
async fn identity_tombstone(stack: &Stack, identity: &str) -> Value {
    let hash = tombstone_key(stack, TombstoneKind::Identity, identity).await;
    json!({
        "TableName": stack.names.name(Region::Eu1, Table::Profiles),
        "Item": {"pk": {"S": shared::store::keys::profiles::tombstone_pk(&stack.project.id, &hash)},
                 "erased_ms": {"N": now_ms().to_string()}}
    })
}

#[tokio::test]
async fn the_projects_first_erasure_overtaking_a_chunk_still_wins() {
    // A project that never had an erasure: resolve finds no mark when the chunk begins.
    let stack = Stack::new("erasure-first-race", Region::Eu1).await;
    stack
        .send(&ann_batch(&stack, "in-flight", now_ms() - 60_000))
        .await;
    let row = stack.chunks().await.into_iter().next().unwrap();
    let project = stack.project.id.clone();
    // The project's first erasure (of Ann) lands meanwhile: the mark, then Ann's tombstone.
    let mark = json!({
        "__target": "UpdateItem",
        "TableName": stack.names.name(Region::Eu1, Table::Projects),
        "Key": {"project_id": {"S": project}},
        "UpdateExpression": "SET erasure_keyed = :yes",
        "ExpressionAttributeValues": {":yes": {"BOOL": true}},
    });
    let report = resolve_overtaken(
        &stack,
        &row,
        vec![mark, identity_tombstone(&stack, "c-1").await],
    )
    .await;
    let marks = stack.store.erasure_marks(Region::Eu1, &project);
    assert!(marks.await.unwrap().had_erasure);

    // Nothing of Ann stays, and nothing is handed on to materialize.
    assert_ann_taken_back(&stack, &report).await;
}

#[tokio::test]
async fn a_take_back_removes_a_profile_that_holds_only_its_identity() {
    let (stack, _) = erased_before_with_ann_chunk("erasure-identity-only").await;
    // Cy has a customer id and nothing else: his profile holds only that Identity.
    stack
        .send(&stack.batch(
            "cy-in-flight",
            now_ms() - 30_000,
            json!([{"user_identities": [raw("customer", "c-9")],
                    "audiences": [entry(7, "add")]}]),
        ))
        .await;
    let row = stack
        .chunks()
        .await
        .into_iter()
        .find(|r| r.message_id == "cy-in-flight")
        .unwrap();
    let project = stack.project.id.clone();
    let report =
        resolve_overtaken(&stack, &row, vec![identity_tombstone(&stack, "c-9").await]).await;

    assert_eq!(report.outcomes.erased, 1);
    assert!(report.changes.is_empty());
    assert!(items_mentioning(&stack, &project, "c-9").await.is_empty());
    assert!(
        read(&stack, "/v1/profiles?identity=c-9").await["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// An erasure request of customer `c-2` whose `submitted_time` (if any) is `submitted`.
fn dsr_of_bob(stack: &Stack, request_id: &str, submitted: Option<Value>) -> String {
    let mut body: Value = serde_json::from_str(&dsr(
        &stack.project,
        request_id,
        "erasure",
        json!({"customer_id": {"encoding": "raw", "value": "c-2"}}),
    ))
    .unwrap();
    match submitted {
        Some(t) => body["submitted_time"] = t,
        None => {
            body.as_object_mut().unwrap().remove("submitted_time");
        }
    }
    body.to_string()
}

#[tokio::test]
async fn a_batch_sent_before_the_request_arrived_never_lands_after_the_erasure() {
    let stack = Stack::new("erasure-cut-off", Region::Eu1).await;
    let project = stack.project.id.clone();
    let bob = imported_bob(&stack).await;
    // Bob asked 30 s ago; 10 s ago mParticle still sent him into audience 8. That batch is
    // resolved before the request arrives and materialized after it.
    stack
        .send(&stack.batch(
            "between",
            now_ms() - 10_000,
            json!([{"user_identities": [raw("customer", "c-2")], "audiences": [entry(8, "add")]}]),
        ))
        .await;
    let row = stack
        .chunks()
        .await
        .into_iter()
        .find(|r| r.message_id == "between")
        .unwrap();
    let resolved = shared::stages::resolve::resolve_chunk(&stack.store, Region::Eu1, &row)
        .await
        .unwrap();
    assert_eq!(resolved.changes.len(), 1);
    let asked = (now_ms() - 30_000) as f64 / 1000.0;
    let (status, answer) = stack
        .post(&dsr_of_bob(&stack, "req-cut", Some(json!(asked))))
        .await;
    assert_eq!(status, 200, "{answer}");
    let counts = shared::stages::materialize::materialize_changes(
        &stack.store,
        Region::Eu1,
        &project,
        &resolved.changes,
    )
    .await
    .unwrap();

    // No membership, no Partner Sync event, no count for the erased CleverTap ID.
    assert_eq!((counts.added, counts.stale), (0, 1));
    assert_eq!(member_count(&stack, 8).await, (1, 1, 0), "Ann only");
    let left: Vec<String> = items_mentioning(&stack, &project, &bob)
        .await
        .into_iter()
        .filter(|i| i.contains("Partner Sync") || i.contains("c-2"))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
    // The audit row keeps both times: the cut-off is the arrival, after the person asked.
    let audit = stack
        .store
        .erasure_audit(Region::Eu1, &project, "req-cut")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(audit.submitted_ms, Some((asked * 1000.0).round() as i64));
    assert!(audit.erased_ms > now_ms() - 10_000);
}

#[tokio::test]
async fn an_erasures_times_are_bounded_like_a_batchs() {
    let stack = Stack::new("erasure-times", Region::Eu1).await;
    imported_bob(&stack).await;
    let far_future = (now_ms() + 86_400_000) as f64 / 1000.0;
    for (submitted, path) in [
        (Some(json!(far_future)), "submitted_time"),
        (Some(json!(-5)), "submitted_time"),
        (Some(json!("soon")), "submitted_time"),
    ] {
        let (status, answer) = stack
            .post(&dsr_of_bob(&stack, "req-bad", submitted.clone()))
            .await;
        assert_eq!(
            (status, answer["path"].as_str()),
            (400, Some(path)),
            "{submitted:?}: {answer}"
        );
    }
    let mut negative: Value = serde_json::from_str(&dsr_of_bob(&stack, "req-neg", None)).unwrap();
    negative["timestamp_ms"] = json!(-1);
    let (status, answer) = stack.post(&negative.to_string()).await;
    assert_eq!(
        (status, answer["path"].as_str()),
        (400, Some("timestamp_ms")),
        "{answer}"
    );
    // Nothing was erased by the refused requests.
    assert_eq!(member_count(&stack, 7).await.0, 2);

    // Without a `submitted_time` the cut-off is still the arrival: a batch sent just before it
    // is covered, whatever the message's own `timestamp_ms` says.
    let before = now_ms() - 1;
    let mut old_message: Value =
        serde_json::from_str(&dsr_of_bob(&stack, "req-none", None)).unwrap();
    old_message["timestamp_ms"] = json!(1);
    let (status, answer) = stack.post(&old_message.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    stack
        .send(&stack.batch(
            "just-before",
            before,
            json!([{"user_identities": [raw("customer", "c-2")], "audiences": [entry(8, "add")]}]),
        ))
        .await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    assert_eq!(member_count(&stack, 8).await, (1, 1, 0), "Ann only");
    assert!(
        read(&stack, "/v1/profiles?identity=c-2").await["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// #34 defect 4: a profile that only shares the subject's phone is someone else's: it stays,
/// with its phone, its claim and its membership.
#[tokio::test]
async fn a_profile_that_only_shares_the_subjects_phone_stays() {
    let stack = Stack::new("erasure-closure", Region::Eu1).await;
    let project = stack.project.id.clone();
    stack.send(&first_batch(&stack, now_ms() - 60_000)).await;
    // Another customer id holds Ann's phone, and nothing else of hers.
    stack
        .send(&stack.batch(
            "second-profile",
            now_ms() - 50_000,
            json!([{"user_identities": [raw("customer", "c-5"), raw("mobile_number", ANN_PHONE)],
                    "audiences": [entry(8, "add")]}]),
        ))
        .await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    assert_eq!(member_count(&stack, 8).await, (2, 2, 0));

    let request = ErasureRequest::by_operator("email", ANN_EMAIL, None, Regulation::Gdpr).unwrap();
    erase(&stack.store, Region::Eu1, &project, &request)
        .await
        .unwrap();

    assert!(
        !items_mentioning(&stack, &project, "c-5").await.is_empty(),
        "c-5 stays"
    );
    assert_eq!(
        member_count(&stack, 8).await.0,
        1,
        "Ann left segment 8, c-5 did not"
    );
    assert_eq!(member_count(&stack, 7).await.0, 1, "Bob stays");
    assert!(
        items_mentioning(&stack, &project, ANN_EMAIL)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn an_erasures_cost_grows_with_what_the_person_holds_not_with_the_project() {
    let stack = Stack::new("erasure-bounded", Region::Eu1).await;
    let project = stack.project.id.clone();
    stack.send(&first_batch(&stack, now_ms() - 60_000)).await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    // The project has 300 more segments (copies of 7's item, written directly: creating them
    // through materialize is slow on DynamoDB Local): Ann holds 2 of its 302.
    let segments = stack.names.name(Region::Eu1, Table::Segments);
    let seven = stack
        .client
        .get_item()
        .table_name(&segments)
        .key(
            "pk",
            AttributeValue::S(shared::store::keys::segments::pk(&project)),
        )
        .key(
            "sk",
            AttributeValue::S(shared::store::keys::segments::segment_sk(7)),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    for aud in 100..400 {
        let mut item = seven.clone();
        item.insert(
            "sk".into(),
            AttributeValue::S(shared::store::keys::segments::segment_sk(aud)),
        );
        item.insert("audience_id".into(), AttributeValue::N(aud.to_string()));
        stack
            .client
            .put_item()
            .table_name(&segments)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    let plan = local::faults::FaultPlan::default();
    let counting = stack.through(&plan);
    let erase_ann = |id: &str| {
        ErasureRequest::by_operator("identity", "c-1", Some(id.into()), Regulation::Gdpr).unwrap()
    };
    let ErasureOutcome::Erased(audit) = erase(&counting, Region::Eu1, &project, &erase_ann("a"))
        .await
        .unwrap()
    else {
        panic!("a new request")
    };
    let calls = plan.calls.swap(0, std::sync::atomic::Ordering::SeqCst);
    eprintln!("an erasure of a person holding 2 of 302 segments: {calls} DynamoDB calls");
    assert_eq!(
        (audit.removed.memberships, audit.removed.members_removed),
        (2, 2)
    );
    // A read and a write per segment would be over 600 calls.
    assert!(
        calls < 60,
        "{calls} DynamoDB calls to erase a person holding 2 of 302 segments"
    );
    assert_eq!(member_count(&stack, 7).await.0, 1, "Bob stays");

    // Asked again (another request id): nothing is left to write.
    let ErasureOutcome::Erased(again) = erase(&counting, Region::Eu1, &project, &erase_ann("b"))
        .await
        .unwrap()
    else {
        panic!("a new request")
    };
    assert_eq!(again.removed.memberships, 0);
    assert!(items_mentioning(&stack, &project, "c-1").await.is_empty());
}

#[tokio::test]
async fn a_membership_written_as_an_erasure_reads_the_rows_is_erased_after_writing() {
    let stack = Stack::new("erasure-materialize-race", Region::Eu1).await;
    let project = stack.project.id.clone();
    let bob = imported_bob(&stack).await;
    let earlier =
        ErasureRequest::by_operator("identity", "someone-else", None, Regulation::Gdpr).unwrap();
    erase(&stack.store, Region::Eu1, &project, &earlier)
        .await
        .unwrap();
    // Bob into 9, sent before an erasure of him that tombstones his CleverTap ID just before the
    // transaction goes out, and had read his rows already (it found none in 9).
    let hash = tombstone_key(&stack, TombstoneKind::CleverTapId, &bob).await;
    let plan = local::faults::FaultPlan::default();
    plan.before_transaction.lock().unwrap().push(json!({
        "TableName": stack.names.name(Region::Eu1, Table::Profiles),
        "Item": {"pk": {"S": shared::store::keys::profiles::tombstone_pk(&project, &hash)},
                 "erased_ms": {"N": now_ms().to_string()}}
    }));
    let faulty = stack.through(&plan);
    let change = in_flight_add(&bob, 9);
    shared::stages::materialize::materialize_changes(&faulty, Region::Eu1, &project, &[change])
        .await
        .unwrap();
    assert_eq!(
        plan.injected.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the race happened"
    );

    // No member, no event, no identity on the row.
    assert_eq!(member_count(&stack, 9).await.0, 0);
    let left: Vec<String> = items_mentioning(&stack, &project, &bob)
        .await
        .into_iter()
        .filter(|i| i.starts_with("events") || i.starts_with("memberships"))
        .filter(|i| i.contains("N(\"9\")"))
        .filter(|i| i.contains("Partner Sync") || i.contains("c-2"))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

/// An endpoint whose erasures go to an `erase` function (a mocked Lambda client answering
/// `answer`, or failing like a crashed function); answers what mParticle is told and the
/// commands the function was sent.
async fn erase_through_function(
    stack: &Stack,
    answer: Option<Value>,
) -> (u16, Value, Vec<shared::stages::erasure::EraseCommand>) {
    use aws_sdk_lambda::operation::invoke::InvokeOutput;
    use aws_sdk_lambda::primitives::Blob;
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sent.clone();
    let rule = aws_smithy_mocks::mock!(aws_sdk_lambda::Client::invoke)
        .match_requests(move |req| {
            let command = serde_json::from_slice(req.payload().unwrap().as_ref()).unwrap();
            seen.lock()
                .unwrap()
                .push((req.function_name().unwrap().to_owned(), command));
            true
        })
        .then_output(move || match &answer {
            Some(a) => InvokeOutput::builder()
                .status_code(200)
                .payload(Blob::new(a.to_string()))
                .build(),
            None => InvokeOutput::builder()
                .status_code(200)
                .function_error("Unhandled")
                .payload(Blob::new(r#"{"errorMessage":"Task timed out"}"#))
                .build(),
        });
    let client = aws_smithy_mocks::mock_client!(aws_sdk_lambda, [&rule]);
    let clients = Region::ALL.iter().map(|r| (*r, client.clone())).collect();
    let endpoint =
        shared::stages::endpoint::Endpoint::new(&config(&stack.names, 60), stack.store.clone())
            .with_eraser(shared::stages::erasure::Eraser::Invoke(
                shared::stages::erasure::RemoteEraser::new("ctmp-{region}-erase", clients),
            ));
    let reply = endpoint
        .handle(
            "POST",
            Some(&format!("Token {CALLER_TOKEN}")),
            dsr(
                &stack.project,
                "req-remote",
                "erasure",
                subject_email(ANN_EMAIL),
            )
            .as_bytes(),
        )
        .await;
    let sent = sent.lock().unwrap().clone();
    let commands = sent
        .into_iter()
        .map(
            |(function, command): (String, shared::stages::erasure::EraseCommand)| {
                assert_eq!(function, "ctmp-eu1-erase", "the home region's function");
                command
            },
        )
        .collect();
    (
        reply.status,
        serde_json::from_str(&reply.body).unwrap(),
        commands,
    )
}

#[tokio::test]
async fn authorize_has_the_home_regions_erase_function_carry_out_the_erasure() {
    let stack = Stack::new("erasure-remote", Region::Eu1).await;
    stack.send(&first_batch(&stack, now_ms() - 60_000)).await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    let before = stack.snapshot().await;

    // The function did it: authorize answers 200 and writes nothing itself.
    let (status, answer, commands) =
        erase_through_function(&stack, Some(json!({"done": "already_erased"}))).await;
    assert_eq!(
        (status, answer["type"].as_str()),
        (200, Some("dsr_processing_response"))
    );
    assert_eq!(commands.len(), 1);
    let command = &commands[0];
    assert_eq!(
        (command.region, command.project_id.as_str()),
        (Region::Eu1, stack.project.id.as_str())
    );
    assert_eq!(command.request.request_id, "req-remote");
    assert!(
        command
            .request
            .keys
            .contains(&shared::domain::erasure::SubjectKey::Email(
                ANN_EMAIL.into()
            ))
    );
    assert_eq!(
        stack.snapshot().await,
        before,
        "authorize erased nothing itself"
    );

    // Its failures keep their class: a crash or timeout and an outage are retried (503), a
    // refusal is not.
    for (answer, expected) in [
        (None, 503),
        (Some(json!({"unavailable": "throttled"})), 503),
        (Some(json!({"corrupt": "unreadable project"})), 500),
        (Some(json!({"rejected": "too large"})), 400),
    ] {
        let (status, body, _) = erase_through_function(&stack, answer.clone()).await;
        assert_eq!(status, expected, "{answer:?}: {body}");
    }
}

#[tokio::test]
async fn the_erase_functions_command_carries_the_whole_request() {
    let stack = Stack::new("erasure-command", Region::Eu1).await;
    imported_bob(&stack).await;
    let request =
        ErasureRequest::by_operator("identity", "c-2", Some("req-cmd".into()), Regulation::Ccpa)
            .unwrap();
    let command = shared::stages::erasure::EraseCommand {
        region: Region::Eu1,
        project_id: stack.project.id.clone(),
        request,
    };
    // As the function receives it: JSON in, JSON out.
    let wire: shared::stages::erasure::EraseCommand =
        serde_json::from_str(&serde_json::to_string(&command).unwrap()).unwrap();
    assert_eq!(wire, command);
    let reply = shared::stages::erasure::handle_command(&stack.store, wire).await;
    let reply: Value = serde_json::to_value(&reply).unwrap();
    assert_eq!(reply["done"]["erased"]["request_id"], "req-cmd");
    assert_eq!(reply["done"]["erased"]["removed"]["profiles"], 1);
    assert_eq!(member_count(&stack, 7).await.0, 1, "Ann stays");
}

/// A store of the stack hashing tombstones with other keys.
fn with_keys(stack: &Stack, json: &str) -> shared::store::Store {
    let keys = shared::domain::erasure::TombstoneKeys::parse(json).unwrap();
    (stack.store.clone()).with_keyring(shared::store::keyring::Keyring::fixed(keys))
}

/// The project's tombstone keys as stored (the part after `T#<project>#`).
async fn stored_tombstones(stack: &Stack) -> Vec<String> {
    let table = stack.names.name(Region::Eu1, Table::Profiles);
    let prefix = shared::store::keys::profiles::tombstone_pk(&stack.project.id, "");
    local::scan_all(&stack.client, &table)
        .await
        .unwrap()
        .iter()
        .filter_map(|i| {
            i.get("pk")?
                .as_s()
                .ok()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect()
}

const OTHER_KEY: &str = "another-key-that-is-not-the-stacks-own-key";

#[tokio::test]
async fn a_tombstone_cannot_be_found_without_the_key_kept_outside_the_tables() {
    let (stack, row) = erased_before_with_ann_chunk("erasure-keyed").await;
    let erase_ann = ErasureRequest::by_operator("email", ANN_EMAIL, None, Regulation::Gdpr);
    erase(
        &stack.store,
        Region::Eu1,
        &stack.project.id,
        &erase_ann.unwrap(),
    )
    .await
    .unwrap();
    // Every tombstone names its key version; the project item holds no salt to test guesses
    // with (nor does any other item of the tables).
    let stored = stored_tombstones(&stack).await;
    assert!(stored.len() >= 2, "{stored:?}");
    assert!(stored.iter().all(|h| h.starts_with("k1#")), "{stored:?}");
    let marks = stack.store.erasure_marks(Region::Eu1, &stack.project.id);
    let marks = marks.await.unwrap();
    assert!(marks.had_erasure && marks.legacy_salt.is_none());
    for unkeyed in ["", &stack.project.id] {
        let guess =
            shared::domain::erasure::tombstone_hash(unkeyed, TombstoneKind::Email, ANN_EMAIL);
        assert!(!stored.iter().any(|h| h.ends_with(&guess)));
    }

    // Whoever hashes Ann's email with any other key does not find her tombstone: resolving
    // her batch (sent before the erasure) with another key lets her through...
    let guessing = with_keys(&stack, &format!(r#"{{"current":1,"k1":"{OTHER_KEY}"}}"#));
    let report = shared::stages::resolve::resolve_chunk(&guessing, Region::Eu1, &row)
        .await
        .unwrap();
    assert_eq!(report.outcomes.erased, 0);
    assert!(!report.changes.is_empty());
    // ...and with the stack's key the same chunk, retried, is stopped and taken back.
    local::raw::mark_inbox_received(&stack.client, &stack.names.name(Region::Eu1, Table::Inbox))
        .await;
    let report = shared::stages::resolve::resolve_chunk(&stack.store, Region::Eu1, &row)
        .await
        .unwrap();
    assert_ann_taken_back(&stack, &report).await;
}

#[tokio::test]
async fn tombstones_stay_checkable_across_a_key_rotation_and_from_before_keys() {
    let (stack, row) = erased_before_with_ann_chunk("erasure-rotation").await;
    let project = stack.project.id.clone();
    // Ann's email was erased under key version 1 (the stack's local key)...
    let erase_ann = ErasureRequest::by_operator("email", ANN_EMAIL, None, Regulation::Gdpr);
    erase(&stack.store, Region::Eu1, &project, &erase_ann.unwrap())
        .await
        .unwrap();
    // ...and her customer id before tombstones were keyed (a salted hash; the salt on the
    // project item, as such projects have it).
    let table = stack.names.name(Region::Eu1, Table::Projects);
    stack
        .client
        .update_item()
        .table_name(&table)
        .key("project_id", AttributeValue::S(project.clone()))
        .update_expression("SET erasure_salt = :s")
        .expression_attribute_values(":s", AttributeValue::S("legacy-salt".into()))
        .send()
        .await
        .unwrap();
    let legacy =
        shared::domain::erasure::tombstone_hash("legacy-salt", TombstoneKind::Identity, "c-1");
    let written = stack
        .store
        .write_tombstone(Region::Eu1, &project, &legacy, now_ms())
        .await
        .unwrap();
    assert!(written.applied());

    // The keys rotate: version 2 is current, version 1 stays.
    let local_key = serde_json::from_str::<Value>(shared::store::keyring::LOCAL_KEYS).unwrap();
    let rotated = format!(
        r#"{{"current":2,"k1":{},"k2":"{OTHER_KEY}"}}"#,
        local_key["k1"]
    );
    let rotated = with_keys(&stack, &rotated);
    // Ann's batch (sent before both erasures) is found by her version-1 email tombstone...
    let report = shared::stages::resolve::resolve_chunk(&rotated, Region::Eu1, &row)
        .await
        .unwrap();
    assert_eq!((report.outcomes.erased, report.changes.len()), (1, 0));
    // ...and by her legacy customer-id tombstone alone, once the keyed ones are gone.
    let keyed_table = stack.names.name(Region::Eu1, Table::Profiles);
    for key in stored_tombstones(&stack)
        .await
        .iter()
        .filter(|h| h.starts_with('k'))
    {
        let pk = shared::store::keys::profiles::tombstone_pk(&project, key);
        stack
            .client
            .delete_item()
            .table_name(&keyed_table)
            .key("pk", AttributeValue::S(pk))
            .send()
            .await
            .unwrap();
    }
    local::raw::mark_inbox_received(&stack.client, &stack.names.name(Region::Eu1, Table::Inbox))
        .await;
    let report = shared::stages::resolve::resolve_chunk(&rotated, Region::Eu1, &row)
        .await
        .unwrap();
    assert_eq!((report.outcomes.erased, report.changes.len()), (1, 0));
    // New tombstones are written with the current version.
    let erase_bob = ErasureRequest::by_operator("email", "bob@example.com", None, Regulation::Gdpr);
    erase(&rotated, Region::Eu1, &project, &erase_bob.unwrap())
        .await
        .unwrap();
    let stored = stored_tombstones(&stack).await;
    assert!(stored.iter().any(|h| h.starts_with("k2#")), "{stored:?}");
    assert!(!stored.iter().any(|h| h.starts_with("k1#")), "{stored:?}");
}

#[tokio::test]
async fn the_tombstone_keys_are_read_from_the_secret_once_when_first_needed() {
    use aws_sdk_secretsmanager::operation::get_secret_value::{
        GetSecretValueError, GetSecretValueOutput,
    };
    let secret = format!(r#"{{"current":1,"k1":"{OTHER_KEY}"}}"#);
    let read = aws_smithy_mocks::mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|req| req.secret_id() == Some("ctmp-eu1-tombstone-keys"))
        .then_output(move || {
            GetSecretValueOutput::builder()
                .secret_string(secret.clone())
                .build()
        });
    let client = aws_smithy_mocks::mock_client!(aws_sdk_secretsmanager, [&read]);
    let keyring = shared::store::keyring::Keyring::secret(client, "ctmp-eu1-tombstone-keys");
    assert_eq!(read.num_calls(), 0, "nothing is read before it is needed");
    for _ in 0..3 {
        assert_eq!(keyring.keys().await.unwrap().current(), 1);
    }
    assert_eq!(read.num_calls(), 1, "read once, then cached");

    // A secret that cannot be read fails the request as one to retry, and says nothing of it.
    let denied = aws_smithy_mocks::mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .then_error(|| GetSecretValueError::unhandled("AccessDeniedException"));
    let client = aws_smithy_mocks::mock_client!(aws_sdk_secretsmanager, [&denied]);
    let keyring = shared::store::keyring::Keyring::secret(client, "ctmp-eu1-tombstone-keys");
    let err = keyring.keys().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

/// #34 defect 10: a DSR whose passcode was revoked (or expired) is carried out, not refused with
/// a 403 that mParticle would never retry; the audit row records it.
#[tokio::test]
async fn an_erasure_on_a_revoked_passcode_is_carried_out() {
    let stack = Stack::new("erasure-lapsed", Region::Eu1).await;
    let mut lapsed = stack.project.clone();
    lapsed.passcode = "revoked-long-ago".into();
    let (status, answer) = stack
        .post(&dsr(
            &lapsed,
            "req-lapsed",
            "erasure",
            subject_email(ANN_EMAIL),
        ))
        .await;
    assert_eq!(
        (status, answer["type"].as_str()),
        (200, Some("dsr_processing_response")),
        "{answer}"
    );
    let audits = stack
        .store
        .erasure_audits(Region::Eu1, &stack.project.id)
        .await
        .unwrap();
    assert!(
        audits.iter().any(|a| a.request_id == "req-lapsed"),
        "the erasure was carried out: {audits:?}"
    );
}

/// A profile written before values were recorded has no holders item: no lookup and no erasure
/// by email finds it until `scripts/admin holders backfill` runs; after it, both do, and the
/// erasure leaves nothing naming the email.
#[tokio::test]
async fn the_holders_backfill_makes_an_old_profile_findable_and_erasable_by_email() {
    use shared::domain::profile_merge::{ProfileMerge, Versioned};
    use shared::ports::profiles::Profiles;
    let stack = Stack::new("holders-backfill", Region::Eu1).await;
    let project = stack.project.id.clone();
    let merge = ProfileMerge {
        email: Some(Versioned {
            value: "old@x.io".into(),
            version: "0000000000001#m#0".into(),
        }),
        ..ProfileMerge::default()
    };
    let before_records = merge.plan(None).unwrap();
    assert!(before_records.recorded.is_empty());
    let written = stack
        .store
        .write_profile(Region::Eu1, &project, "ct-old", &before_records, 1)
        .await
        .unwrap();
    assert!(written.applied());
    let by_email = "/v1/profiles?email=old@x.io";
    assert_eq!(read(&stack, by_email).await["profiles"], json!([]));

    let (profiles, holders) =
        shared::stages::holders_backfill::backfill_region(&stack.store, Region::Eu1)
            .await
            .unwrap();
    assert!(profiles.holders_added >= 1, "{profiles:?}");
    assert_eq!(holders.holders_removed, 0);
    let found = read(&stack, by_email).await;
    assert_eq!(found["profiles"][0]["clevertap_id"], "ct-old", "{found}");
    let again = shared::stages::holders_backfill::backfill_region(&stack.store, Region::Eu1)
        .await
        .unwrap();
    assert_eq!(again.0.holders_added, 0, "a second run changes nothing");

    let request = ErasureRequest::by_operator("email", "old@x.io", None, Regulation::Gdpr).unwrap();
    let ErasureOutcome::Erased(audit) = erase(&stack.store, Region::Eu1, &project, &request)
        .await
        .unwrap()
    else {
        panic!("a new request")
    };
    assert_eq!(audit.removed.profiles, 1);
    assert!(
        items_mentioning(&stack, &project, "old@x.io")
            .await
            .is_empty()
    );
}
