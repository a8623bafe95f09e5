//! The live and bulk ways (`shared::domain::ways`) end to end on DynamoDB Local: large requests
//! are stored, queued and worked by the bulk workers, small ones go the inbox stream; both land
//! exactly once, whatever is redelivered.

use integration_tests::*;
use shared::domain::records::InboxStatus;
use shared::domain::region::Region;
use shared::domain::ways::Way;

/// Requests with more profiles than this go bulk in these tests.
const LIVE_MAX: usize = 5;

fn counts(held: &shared::store::snapshot::ProjectSnapshot, audience: i64) -> (i64, usize) {
    let members = (held.segments.iter())
        .find(|s| s.audience_id == audience)
        .map_or(0, |s| s.counts.member_count);
    let events = (held.events.iter())
        .filter(|e| e.audience_id == audience)
        .count();
    (members, events)
}

async fn ways_of(stack: &Stack) -> Vec<(String, Way, InboxStatus)> {
    let mut rows: Vec<(String, Way, InboxStatus)> = stack
        .store
        .stored_chunks(stack.project.region, &stack.project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.message_id, r.way, r.status))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[tokio::test]
async fn a_large_request_goes_the_bulk_way_a_small_one_live_and_both_land_once() {
    let stack = Stack::with_bulk("ways", Region::Eu1, LIVE_MAX).await;
    let queue = stack.bulk.clone().unwrap();
    let ts = 1_700_000_000_000;
    let sent = std::time::Instant::now();
    stack
        .send(&membership_body(
            &stack.project,
            "m-bulk",
            ts,
            20,
            501,
            "add",
        ))
        .await;
    stack
        .send(&membership_body(
            &stack.project,
            "m-live",
            ts,
            2,
            502,
            "add",
        ))
        .await;
    assert_eq!(queue.len(), 1, "the large request's one chunk is queued");
    assert_eq!(
        ways_of(&stack).await,
        [
            ("m-bulk".to_owned(), Way::Bulk, InboxStatus::Received),
            ("m-live".to_owned(), Way::Live, InboxStatus::Received),
        ]
    );

    stack.pipeline().await.run_until_idle(100).await.unwrap();
    let held = stack.held().await;
    assert_eq!(counts(&held, 501), (20, 20));
    assert_eq!(counts(&held, 502), (2, 2));
    // Each segment says how fresh its latest change was, counted from our receipt: at most the
    // time since the test sent it.
    let since_sent = sent.elapsed().as_millis() as i64;
    for audience in [501, 502] {
        let segment = held
            .segments
            .iter()
            .find(|s| s.audience_id == audience)
            .unwrap();
        let fresh = segment.counts.last_freshness_ms.expect("a freshness");
        assert!(
            (0..=since_sent).contains(&fresh),
            "{audience}: {fresh} ms of {since_sent}"
        );
    }
    assert!(
        ways_of(&stack)
            .await
            .iter()
            .all(|(_, _, status)| *status == InboxStatus::Materialized)
    );
}

#[tokio::test]
async fn a_bulk_request_whose_queueing_was_lost_is_queued_again_by_its_redelivery() {
    let stack = Stack::with_bulk("ways-redelivery", Region::Eu1, LIVE_MAX).await;
    let queue = stack.bulk.clone().unwrap();
    let body = membership_body(&stack.project, "m-1", 1_700_000_000_000, 12, 601, "add");
    stack.send(&body).await;
    // As if the first delivery stored its chunk and failed before queueing it (not answered 200).
    assert!(queue.pop().is_some());
    assert!(queue.is_empty());
    // mParticle retries: a duplicate, whose bulk chunk is not done, so it is queued again.
    stack.send(&body).await;
    assert_eq!(queue.len(), 1);
    // And once more, queued twice: worked once.
    stack.send(&body).await;
    assert_eq!(queue.len(), 2);
    stack.pipeline().await.run_until_idle(100).await.unwrap();
    assert_eq!(counts(&stack.held().await, 601), (12, 12));
    // A redelivery after it is done queues nothing.
    stack.send(&body).await;
    assert!(queue.is_empty());
}

#[tokio::test]
async fn without_a_bulk_queue_every_request_goes_live() {
    let stack = Stack::new("ways-none", Region::Eu1).await;
    stack
        .send(&membership_body(
            &stack.project,
            "m-big",
            1_700_000_000_000,
            150,
            701,
            "add",
        ))
        .await;
    assert_eq!(ways_of(&stack).await[0].1, Way::Live);
    stack.pipeline().await.run_until_idle(100).await.unwrap();
    assert_eq!(counts(&stack.held().await, 701), (150, 150));
}

/// `GET /v1/segments/{id}` of a stack, as the project reads it.
async fn segment_view(stack: &Stack, port: u16, audience: i64) -> serde_json::Value {
    let headers = [
        ("X-CleverTap-Account-Id", stack.project.id.as_str()),
        ("X-CleverTap-Passcode", stack.project.passcode.as_str()),
    ];
    let (status, view) = http(
        port,
        "GET",
        &format!("/v1/segments/{audience}"),
        &headers,
        "",
    )
    .await;
    assert_eq!(status, 200, "{view}");
    view
}

#[tokio::test]
async fn an_imports_progress_shows_in_the_read_api_from_queued_to_complete() {
    let stack = Stack::with_bulk("ways-progress", Region::Eu1, LIVE_MAX).await;
    let ts = 1_700_000_000_000;
    stack
        .send(&stack.subscription(801, "Imported", "add", ts - 1))
        .await;
    let port = stack.serve_http().await;
    assert!(
        segment_view(&stack, port, 801)
            .await
            .get("import")
            .is_none(),
        "nothing came the bulk way yet"
    );

    // An import and its redelivery, queued, not yet worked; a live request counts no progress.
    let body = membership_body(&stack.project, "m-import", ts, 30, 801, "add");
    stack.send(&body).await;
    stack.send(&body).await;
    stack
        .send(&membership_body(
            &stack.project,
            "m-live",
            ts,
            2,
            801,
            "add",
        ))
        .await;
    let queued = segment_view(&stack, port, 801).await;
    let import = &queued["import"];
    assert_eq!(import["received"], 30, "{queued}");
    assert_eq!(
        (import["applied"].as_u64(), import["remaining"].as_u64()),
        (Some(0), Some(30))
    );
    assert_eq!(
        (import["percent"].as_f64(), import["running"].as_bool()),
        (Some(0.0), Some(true))
    );
    assert_eq!(
        import["estimate_s"],
        serde_json::Value::Null,
        "nothing moves yet"
    );

    stack.pipeline().await.run_until_idle(100).await.unwrap();
    let done = segment_view(&stack, port, 801).await;
    let import = &done["import"];
    assert_eq!(
        (
            import["received"].as_u64(),
            import["resolved"].as_u64(),
            import["applied"].as_u64()
        ),
        (Some(30), Some(30), Some(30)),
        "{done}"
    );
    assert_eq!(
        (import["percent"].as_f64(), import["running"].as_bool()),
        (Some(100.0), Some(false))
    );
    assert!(import["rate_per_s"].as_f64().unwrap() > 0.0, "{done}");
    // The live request's two users are the import's first two (the same customer ids).
    assert_eq!(done["member_count"], 30);
}
