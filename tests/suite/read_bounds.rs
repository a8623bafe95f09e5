//! The read API answers with a bounded number of DynamoDB calls whatever the project's size
//! (#34, defect 9): the calls of each route are counted through the fault layer, in a project
//! with a few segments and in one with many.

use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::protocol::now_ms;
use shared::domain::region::Region;

/// A project where Ann (email ann@x.io) is in audience 7, beside `others` segments other
/// audiences opened (their items put directly: the pipeline would take minutes to open so many).
async fn project_with(test: &str, others: i64) -> (Stack, String) {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    use shared::store::keys::segments as sk;
    let stack = Stack::new(test, Region::Eu1).await;
    let ann = json!([{"user_identities": [raw("customer", "c-ann"), raw("email", "ann@x.io")],
                      "audiences": [entry(7, "add")], "mpid": "1"}]);
    stack.send(&stack.batch("m1", now_ms() - 60_000, ann)).await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    let table = (stack.names).name(Region::Eu1, shared::store::tables::Table::Segments);
    let segments: Vec<WriteRequest> = (0..others)
        .map(|n| {
            let item = [
                ("pk", sk::pk(&stack.project.id)),
                ("sk", sk::segment_sk(100 + n)),
                ("name", format!("Audience {}", 100 + n)),
                ("status", "active".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
            .collect();
            let put = PutRequest::builder().set_item(Some(item)).build().unwrap();
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for batch in segments.chunks(25) {
        let out = (stack.client.batch_write_item())
            .request_items(&table, batch.to_vec())
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items.unwrap_or_default().is_empty());
    }
    let (_, found) = stack
        .read_api("GET", "/v1/profiles?identity=c-ann", "")
        .await;
    let ann = found["profiles"][0]["clevertap_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (stack, ann)
}

/// Status, answer and DynamoDB calls of one read.
async fn counted(stack: &Stack, path: &str) -> (u16, Value, u32) {
    let plan = local::faults::FaultPlan::default();
    let store = stack.through(&plan);
    let passcode = stack.project.passcode.clone();
    let (status, body) = stack
        .read_api_through(&store, &passcode, "GET", path, "")
        .await;
    let calls = plan.calls.load(std::sync::atomic::Ordering::SeqCst);
    (status, body, calls)
}

#[tokio::test]
async fn a_profiles_answer_costs_the_same_calls_in_a_project_of_many_segments() {
    let mut costs = Vec::new();
    for (test, others) in [("bounds-few", 2), ("bounds-many", 120)] {
        let (stack, ann) = project_with(test, others).await;
        let mut cost = Vec::new();
        for path in [
            format!("/v1/profiles/{ann}"),
            "/v1/profiles?email=ann@x.io".to_owned(),
            "/v1/profiles?identity=c-ann".to_owned(),
            format!("/v1/profiles/{ann}/events"),
        ] {
            let (status, body, calls) = counted(&stack, &path).await;
            assert_eq!(status, 200, "{path}: {body}");
            let profile = body.get("profiles").map_or(&body, |p| &p[0]);
            if let Some(segments) = profile.get("segments") {
                assert_eq!(segments.as_array().unwrap().len(), 1, "{path}: {body}");
                assert_eq!(segments[0]["partner_segment_id"], 7);
            }
            cost.push(calls);
        }
        costs.push(cost);
    }
    println!("read calls (profile, by email, by identity, events), 3 vs 121 segments: {costs:?}");
    assert_eq!(
        costs[0], costs[1],
        "the calls do not grow with the project's segments"
    );
}

#[tokio::test]
async fn segments_come_in_pages_of_bounded_calls_and_every_one_is_listed_once() {
    let (stack, _) = project_with("bounds-pages", 120).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/segments?limit=50".to_owned(),
            Some(c) => format!("/v1/segments?limit=50&cursor={c}"),
        };
        let (status, body, calls) = counted(&stack, &path).await;
        assert_eq!(status, 200, "{body}");
        let segments = body["segments"].as_array().unwrap();
        assert!(segments.len() <= 50);
        // The project read, one Query, one counter read per segment.
        assert!(
            calls as usize <= 2 + segments.len(),
            "{calls} calls for {}",
            segments.len()
        );
        seen.extend(
            segments
                .iter()
                .map(|s| s["partner_segment_id"].as_i64().unwrap()),
        );
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (121, 121), "each segment once");
    assert_eq!(pages, 3);
    let (status, body, _) = counted(&stack, "/v1/segments?cursor=6e6f").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid cursor"))
    );
}
