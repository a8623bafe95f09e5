//! What every answer says besides its body (issue #23, items 10 and 11): the read API's JSON is
//! never cached, and a storage error keeps its class at both edges.

use integration_tests::*;
use shared::domain::region::Region;
use shared::store::tables::Table;

#[tokio::test]
async fn every_json_answer_of_the_read_api_is_not_to_be_stored() {
    let data = ConsoleData::new("answers-no-store").await;
    let headers = data.headers();
    let email = "/v1/profiles?email=ann%40example.com";
    for (method, path, with_credentials) in [
        ("GET", "/v1/segments", true),
        ("GET", email, true),
        ("GET", "/v1/profiles/__nobody", true),
        ("POST", "/v1/preview", true),
        ("GET", "/v1/segments", false),
    ] {
        let sent: &[(&str, &str)] = if with_credentials { &headers } else { &[] };
        let answer = http_text(data.port, method, path, sent, "{}").await;
        assert_eq!(
            answer.headers.get("cache-control").map(String::as_str),
            Some("no-store"),
            "{method} {path} ({}): {:?}",
            answer.status,
            answer.headers
        );
        assert!(answer.headers["content-type"].starts_with("application/json"));
    }
}

#[tokio::test]
async fn an_unreadable_project_item_is_a_server_error_at_both_edges_never_a_400() {
    let stack = Stack::new("answers-corrupt", Region::Eu1).await;
    local::raw::damage_project(
        &stack.client,
        &stack.names.name(Region::Eu1, Table::Projects),
        &stack.project.id,
    )
    .await;
    // mParticle retries a 5xx and never a 400: the batch must come back once the item is mended.
    let body = membership_body(&stack.project, "m-corrupt", 1, 2, 7, "add");
    let (status, answer) = stack.post(&body).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        !answer["error"].as_str().unwrap().contains("storage limit"),
        "{answer}"
    );
    // The read API maps the same error the same way.
    let (status, answer) = stack.read_api("GET", "/v1/segments", "").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(stack.chunks().await.len(), 0, "nothing was stored");
}
