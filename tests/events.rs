//! Every file in events/ through its function's handler, in the order a real flow would produce
//! them, against DynamoDB Local (the `sam local invoke` cases, without Docker).

use integration_tests::*;
use serde_json::Value;
use shared::Region;
use shared::auth::{Project, ProjectStatus, StoredPasscode};
use shared::endpoint::Endpoint;
use shared::query::QueryApi;
use shared::tables::Table;

fn event(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

async fn http_status(endpoint: &Endpoint, name: &str) -> (u16, Value) {
    let req =
        lambda_http::request::from_str(&event(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let resp = shared::endpoint::handle_http(endpoint, req).await.unwrap();
    (
        resp.status().as_u16(),
        serde_json::from_slice(resp.body().as_ref()).unwrap(),
    )
}

#[tokio::test]
async fn every_sample_event_runs_through_its_handler() {
    let (client, names) = fresh_tables_in("events", &[Region::Eu1]).await;
    let store = store(&client, &names);
    store
        .create_project(&Project {
            project_id: "W9R-K6W-ZZ7Z".into(),
            region: Region::Eu1,
            account_token: "example-account-token".into(),
            passcodes: vec![StoredPasscode::new("example-passcode-0001", None)],
            status: ProjectStatus::Active,
            created_ms: 0,
        })
        .await
        .unwrap();
    let prefix = names.prefix().to_owned();
    let ep = endpoint();
    let config = shared::config::Config::from_lookup(|k| match k {
        "MPARTICLE_CALLER_TOKEN" => Some("example-caller-token-0001".into()),
        "TABLE_PREFIX" => Some(prefix.clone()),
        "DYNAMODB_ENDPOINT" => Some(ep.clone()),
        _ => None,
    })
    .unwrap();
    let endpoint = Endpoint::new(&config, store.clone());
    // The stream events name `ctmp-eu1-…` tables: point them at this test's tables.
    let stream_event = |name: &str| -> aws_lambda_events::event::dynamodb::Event {
        let text = event(name).replace("table/ctmp-eu1-", &format!("table/{prefix}-eu1-"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let (status, body) = http_status(&endpoint, "authorize-module-registration.json").await;
    assert_eq!(
        (status, body["type"].as_str()),
        (200, Some("module_registration_response"))
    );
    for name in [
        "authorize-subscription-add.json",
        "authorize-subscription-update.json",
    ] {
        let (status, body) = http_status(&endpoint, name).await;
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
        let (status, body) = http_status(&endpoint, name).await;
        assert_eq!(
            (status, body["suspend_subscription"].as_bool()),
            (200, Some(false)),
            "{name}"
        );
    }
    assert_eq!(
        scan_all(&client, &names.name(Region::Eu1, Table::Inbox))
            .await
            .len(),
        1
    );

    let (resolved, _) = shared::resolve::handle_inbox_event(
        &store,
        &names,
        stream_event("resolve-inbox-insert.json"),
    )
    .await;
    assert!(resolved.batch_item_failures.is_empty());
    assert!(
        !scan_all(&client, &names.name(Region::Eu1, Table::Profiles))
            .await
            .is_empty()
    );

    let (materialized, _) = shared::materialize::handle_event(
        &store,
        &names,
        stream_event("materialize-inbox-resolved.json"),
    )
    .await;
    assert!(materialized.batch_item_failures.is_empty());
    let events = scan_all(&client, &names.name(Region::Eu1, Table::Events)).await;
    assert!(!events.is_empty(), "Partner Sync events were raised");

    let (status, _) = http_status(&endpoint, "authorize-subscription-remove.json").await;
    assert_eq!(status, 200);
    let (cleared, clearing) = shared::materialize::handle_event(
        &store,
        &names,
        stream_event("materialize-segment-archiving.json"),
    )
    .await;
    assert!(cleared.batch_item_failures.is_empty());
    assert_eq!(
        (clearing.segments_cleared, clearing.members_cleared),
        (1, 2),
        "the two members added are cleared"
    );
    let segments =
        segments_with_counts(&scan_all(&client, &names.name(Region::Eu1, Table::Segments)).await);
    let seg = segments
        .iter()
        .find(|s| text(s, "sk").is_some_and(|k| k.starts_with("S#")))
        .unwrap();
    assert_eq!(
        (
            text(seg, "status").as_deref(),
            text(seg, "member_count").as_deref()
        ),
        (Some("archived"), Some("0"))
    );

    let api = QueryApi::new(store.clone(), Region::Eu1, std::time::Duration::ZERO, false);
    let req = lambda_http::request::from_str(&event("query-segments.json")).unwrap();
    let resp = shared::query::handle_http(&api, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
    assert_eq!(body["segments"][0]["status"], "archived");
}
