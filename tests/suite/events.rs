//! Every file in events/ through its function's handler, in the order a real flow would produce
//! them, against DynamoDB Local (the `sam local invoke` cases, without Docker).

use integration_tests::*;
use serde_json::Value;
use shared::domain::records::SegmentStatus;
use shared::domain::region::Region;
use shared::stages::endpoint::Endpoint;
use shared::stages::query::QueryApi;
use shared::store::tables::Table;

async fn http_status(endpoint: &Endpoint, name: &str) -> (u16, Value) {
    let req = lambda_http::request::from_str(&sample_event(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let resp = shared::stages::endpoint::handle_http(endpoint, req)
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        serde_json::from_slice(resp.body().as_ref()).unwrap(),
    )
}

#[tokio::test]
async fn every_sample_event_runs_through_its_handler() {
    let stack = SampleStack::new("events").await;
    let (names, store, endpoint) = (&stack.names, &stack.store, &stack.endpoint);
    let stream_event = |name: &str| stack.stream_event(name);

    let (status, body) = http_status(endpoint, "authorize-module-registration.json").await;
    assert_eq!(
        (status, body["type"].as_str()),
        (200, Some("module_registration_response"))
    );
    for name in [
        "authorize-subscription-add.json",
        "authorize-subscription-update.json",
    ] {
        let (status, body) = http_status(endpoint, name).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (200, Some("audience_subscription_response")),
            "{name}"
        );
    }
    for name in [
        "authorize-membership-batch.json",
        "authorize-heartbeat.json",
    ] {
        let (status, body) = http_status(endpoint, name).await;
        assert_eq!(
            (status, body["suspend_subscription"].as_bool()),
            (200, Some(false)),
            "{name}"
        );
    }
    assert_eq!(
        store.count_items(Region::Eu1, Table::Inbox).await.unwrap(),
        1
    );

    let (resolved, _) = shared::stages::resolve::handle_inbox_event(
        store,
        names,
        stream_event("resolve-inbox-insert.json"),
    )
    .await;
    assert!(resolved.batch_item_failures.is_empty());
    assert!(
        store
            .count_items(Region::Eu1, Table::Profiles)
            .await
            .unwrap()
            > 0
    );

    let (materialized, _) = shared::stages::materialize::handle_event(
        store,
        names,
        stream_event("materialize-inbox-resolved.json"),
    )
    .await;
    assert!(materialized.batch_item_failures.is_empty());
    let events = store.count_items(Region::Eu1, Table::Events).await.unwrap();
    assert!(events > 0, "Partner Sync events were raised");

    let (status, _) = http_status(endpoint, "authorize-subscription-remove.json").await;
    assert_eq!(status, 200);
    let (cleared, clearing) = shared::stages::materialize::handle_event(
        store,
        names,
        stream_event("materialize-segment-archiving.json"),
    )
    .await;
    assert!(cleared.batch_item_failures.is_empty());
    assert_eq!(
        (clearing.segments_cleared, clearing.members_cleared),
        (1, 2),
        "the two members added are cleared"
    );
    let segments = store
        .list_segments(Region::Eu1, "W9R-K6W-ZZ7Z")
        .await
        .unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(
        (segments[0].status, segments[0].counts.member_count),
        (SegmentStatus::Archived, 0)
    );

    let api = QueryApi::new(store.clone(), Region::Eu1, std::time::Duration::ZERO, false);
    let req = lambda_http::request::from_str(&sample_event("query-segments.json")).unwrap();
    let resp = shared::stages::query::edge::handle_http(&api, req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
    assert_eq!(body["segments"][0]["status"], "archived");
}
