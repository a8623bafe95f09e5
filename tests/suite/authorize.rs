//! The mParticle endpoint against DynamoDB Local: docs/contract.md §2.6, status by status.

use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::batch::decode_chunk;
use shared::domain::records::{InboxStatus, Segment, SegmentStatus};
use shared::domain::region::Region;
use shared::ports::inbox::InboxRow;
use shared::ports::projects::{Projects, revoke_passcode};
use shared::stages::endpoint::{Endpoint, handle_http};
use shared::stages::http::HttpReply;
use shared::store::Store;
use shared::store::tables::Table;

struct Env {
    store: Store,
    endpoint: Endpoint,
    project: TestProject,
}

async fn env(test: &str) -> Env {
    env_in(test, &[Region::Eu1]).await
}

async fn env_in(test: &str, regions: &[Region]) -> Env {
    let (client, names) = fresh_tables_in(test, regions).await;
    let store = store(&client, &names);
    let project = provision(&store, Region::Eu1).await;
    let endpoint = Endpoint::new(&config(&names, 60), store.clone());
    Env {
        store,
        endpoint,
        project,
    }
}

impl Env {
    async fn post(&self, body: &str) -> (u16, Value) {
        let auth = format!("Token {CALLER_TOKEN}");
        self.post_with(Some(&auth), body).await
    }

    async fn post_with(&self, auth: Option<&str>, body: &str) -> (u16, Value) {
        let HttpReply { status, body, .. } =
            self.endpoint.handle("POST", auth, body.as_bytes()).await;
        (
            status,
            serde_json::from_str(&body).expect("every answer is JSON"),
        )
    }

    /// Every row of a region's inbox (any project).
    async fn inbox(&self, region: Region) -> usize {
        self.store.count_items(region, Table::Inbox).await.unwrap()
    }

    async fn segments(&self) -> Vec<Segment> {
        self.store
            .list_segments(Region::Eu1, &self.project.id)
            .await
            .expect("segments")
    }

    fn subscription(&self, action: &str, ts: i64, name: &str) -> String {
        json!({
            "type": "audience_subscription_request", "id": format!("sub-{ts}"), "timestamp_ms": ts,
            "firehose_version": "3.2.0", "account": self.project.account(),
            "audience_id": 1234, "audience_name": name, "action": action,
            "audience_subscription_settings": {"userIdType": "customer"}
        })
        .to_string()
    }
}

#[tokio::test]
async fn registration_needs_no_token_and_declares_the_settings() {
    let e = env("reg").await;
    let (status, body) = e
        .post_with(
            None,
            r#"{"type":"module_registration_request","id":"r1","timestamp_ms":1}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "module_registration_response");
    assert_eq!(body["id"], "r1");
    assert_eq!(body["firehose_version"], "3.2.0");
    assert_eq!(
        body["audience_processing_registration"]["account_settings"][0]["id"],
        "accountId"
    );
}

#[tokio::test]
async fn caller_token_is_required_for_everything_else() {
    let e = env("token").await;
    let batch = membership_body(&e.project, "m-auth", 10, 2, 1, "add");
    for auth in [None, Some("Token wrong"), Some("Bearer test-caller-token")] {
        let (status, body) = e.post_with(auth, &batch).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(body["error"].as_str().unwrap().contains("caller token"));
    }
    // Unauthenticated garbage is 401 too: nothing about the body is disclosed.
    assert_eq!(e.post_with(None, "{not json").await.0, 401);
    // A 4 MiB body of empty audience entries without the token is 401, read only for its type
    // (the full parse of such a body took authorize from 16 to 234 MiB); so is an oversized
    // "registration".
    let mut flood = String::from(
        r#"{"type":"audience_membership_change_request","user_profiles":[{"audiences":["#,
    );
    while flood.len() < 4 << 20 {
        flood.push_str("{},");
    }
    flood.push_str("{}]}]}");
    assert_eq!(e.post_with(None, &flood).await.0, 401);
    let big_registration = format!(
        r#"{{"type":"module_registration_request","id":"r","pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    assert_eq!(e.post_with(None, &big_registration).await.0, 401);
    assert_eq!(
        e.post_with(None, r#"{"id":"r","type":"module_registration_request"}"#)
            .await
            .0,
        200,
        "the type may come anywhere in the object"
    );
    assert!(e.inbox(Region::Eu1).await == 0, "nothing written");
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_path_and_write_nothing() {
    let e = env("bad").await;
    let (status, body) = e.post("{\"type\": ").await;
    assert_eq!(status, 400);
    assert_eq!(body["path"], "type", "truncated inside the value of `type`");
    let (status, body) = e.post("[1,2").await;
    assert_eq!((status, body["path"].as_str()), (400, Some("$")));
    let (status, body) = e
        .post(r#"{"type":"event_processing_request","id":"x"}"#)
        .await;
    assert_eq!((status, body["path"].as_str()), (400, Some("type")));
    let (status, body) = e
        .post(r#"{"type":"audience_subscription_request","id":"x","audience_id":5,"action":"add"}"#)
        .await;
    assert_eq!((status, body["path"].as_str()), (400, Some("account")));
    let (status, body) = e
        .post(&json!({"type":"audience_subscription_request","id":"x","account":e.project.account(),"action":"add"}).to_string())
        .await;
    assert_eq!((status, body["path"].as_str()), (400, Some("audience_id")));
    let mut bad =
        serde_json::from_str::<Value>(&membership_body(&e.project, "m-bad", 1, 3, 1, "add"))
            .unwrap();
    bad["user_profiles"][2]["audiences"][0]["audience_id"] = json!([1]);
    let (status, body) = e.post(&bad.to_string()).await;
    assert_eq!(
        (status, body["path"].as_str()),
        (400, Some("user_profiles[2].audiences[0].audience_id"))
    );
    assert!(e.inbox(Region::Eu1).await == 0);
    assert!(e.segments().await.is_empty());
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let e = env("big").await;
    let body = format!(
        "{{\"type\":\"audience_membership_change_request\",\"pad\":\"{}\"}}",
        "x".repeat(5 * 1024 * 1024)
    );
    let (status, body) = e.post(&body).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("exceeds"));
    assert!(e.inbox(Region::Eu1).await == 0);
}

#[tokio::test]
async fn subscriptions_create_rename_and_archive_segments() {
    let e = env("subs").await;
    let (status, body) = e.post(&e.subscription("add", 100, "Cart Abandoners")).await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "audience_subscription_response");
    let segment_id = body["audience_subscription_settings"]["segmentId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(segment_id.starts_with("seg_"));

    // Connecting again is idempotent: same hidden id.
    let (_, again) = e.post(&e.subscription("add", 101, "Cart Abandoners")).await;
    assert_eq!(
        again["audience_subscription_settings"]["segmentId"],
        segment_id.as_str()
    );

    let seg = &e.segments().await[0];
    assert_eq!(seg.segment_type, "Partner - mParticle");
    assert_eq!(seg.status, SegmentStatus::Active);
    assert_eq!(seg.audience_id, 1234);

    // Rename keeps the id, the status and the counters.
    let (status, _) = e
        .post(&e.subscription("update", 200, "Cart Drop-off"))
        .await;
    assert_eq!(status, 200);
    // An older rename that arrives late changes nothing.
    e.post(&e.subscription("update", 150, "Stale Name")).await;
    let seg = &e.segments().await[0];
    assert_eq!(seg.name, "Cart Drop-off");
    assert_eq!(seg.segment_id, segment_id);
    assert_eq!(seg.counts.member_count, 0);

    // Remove archives: membership clearing is handed to materialization.
    let (status, body) = e
        .post(&e.subscription("remove", 300, "Cart Drop-off"))
        .await;
    assert_eq!(status, 200);
    assert!(body.get("audience_subscription_settings").is_none());
    assert_eq!(e.segments().await[0].status, SegmentStatus::Archiving);

    // Re-connecting re-activates the same segment.
    let (_, body) = e.post(&e.subscription("add", 400, "Cart Drop-off")).await;
    assert_eq!(
        body["audience_subscription_settings"]["segmentId"],
        segment_id.as_str()
    );
    assert_eq!(e.segments().await[0].status, SegmentStatus::Active);
}

#[tokio::test]
async fn bad_output_credentials_403_subscriptions_and_suspend_batches() {
    // Every region: a wrong region must find no project there, and nothing may be written anywhere.
    let e = env_in("creds", &Region::ALL).await;
    let p = &e.project;
    let mut cases: Vec<(&str, TestProject)> = Vec::new();
    let mut wrong = p.clone();
    wrong.passcode = "nope".into();
    cases.push(("wrong passcode", wrong));
    let mut wrong = p.clone();
    wrong.token = "nope".into();
    cases.push(("wrong token", wrong));
    let mut wrong = p.clone();
    wrong.id = "NO-SUCH-PROJECT".into();
    cases.push(("unknown project", wrong));
    let mut wrong = p.clone();
    wrong.region = Region::Us1;
    cases.push(("wrong region", wrong));

    for (what, creds) in &cases {
        let sub = json!({"type":"audience_subscription_request","id":"s","timestamp_ms":1,
            "account":creds.account(),"audience_id":9,"audience_name":"A","action":"add"});
        let (status, body) = e.post(&sub.to_string()).await;
        assert_eq!(status, 403, "{what}");
        // One answer for every failed check: no way to tell a wrong passcode from an unknown
        // project, and nothing the caller sent is echoed.
        assert_eq!(body["error"], "output credentials rejected", "{what}");

        let (status, body) = e
            .post(&membership_body(creds, "m-creds", 1, 2, 9, "add"))
            .await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(body["suspend_subscription"], true, "{what}");
        assert_eq!(body["type"], "audience_membership_change_response");

        let heartbeat = json!({"type":"audience_membership_change_request","id":"hb","timestamp_ms":1,
            "account":creds.account()});
        let (_, body) = e.post(&heartbeat.to_string()).await;
        assert_eq!(body["suspend_subscription"], true, "{what}");
    }
    // Missing or unknown region settings can never work either.
    let mut settings = p.account_settings();
    settings["region"] = json!("eu");
    let body = json!({"type":"audience_membership_change_request","id":"m","timestamp_ms":1,
        "account":{"account_id":1,"account_settings":settings}});
    assert_eq!(
        e.post(&body.to_string()).await.1["suspend_subscription"],
        true
    );

    assert!(e.segments().await.is_empty());
    for r in Region::ALL {
        assert!(e.inbox(r).await == 0, "nothing written in {r}");
    }
}

#[tokio::test]
async fn expired_and_revoked_passcodes_stop_working() {
    let (client, names) = fresh_tables_in("expiry", &[Region::In1]).await;
    let store = store(&client, &names);
    let p = provision(&store, Region::In1).await;
    // No cache, so revocation takes effect at once.
    let endpoint = Endpoint::new(&config(&names, 0), store.clone());
    let auth = format!("Token {CALLER_TOKEN}");
    let heartbeat = |p: &TestProject| {
        json!({"type":"audience_membership_change_request","id":"hb","timestamp_ms":1,"account":p.account()}).to_string()
    };
    let suspended = |r: HttpReply| {
        serde_json::from_str::<Value>(&r.body).unwrap()["suspend_subscription"] == true
    };

    assert!(!suspended(
        endpoint
            .handle("POST", Some(&auth), heartbeat(&p).as_bytes())
            .await
    ));

    let expired = shared::domain::auth::StoredPasscode::new("old-one", Some(1_000));
    store
        .add_passcode(Region::In1, &p.id, &expired)
        .await
        .unwrap();
    let mut old = p.clone();
    old.passcode = "old-one".into();
    assert!(suspended(
        endpoint
            .handle("POST", Some(&auth), heartbeat(&old).as_bytes())
            .await
    ));

    let project = store.project(Region::In1, &p.id).await.unwrap().unwrap();
    let live_id = project.passcodes[0].id.clone();
    assert!(
        revoke_passcode(&store, Region::In1, &p.id, &live_id)
            .await
            .unwrap()
    );
    assert!(suspended(
        endpoint
            .handle("POST", Some(&auth), heartbeat(&p).as_bytes())
            .await
    ));
}

#[tokio::test]
async fn heartbeats_answer_without_writing() {
    let e = env("heartbeat").await;
    let body = json!({"type":"audience_membership_change_request","id":"hb-1","timestamp_ms":1,
        "firehose_version":"2.1.1","account":e.project.account()});
    let (status, body) = e.post(&body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(body["suspend_subscription"], false);
    assert_eq!(body["id"], "hb-1");
    assert!(e.inbox(Region::Eu1).await == 0);
}

#[tokio::test]
async fn batches_are_stored_once_in_the_home_region() {
    let (client, names) = fresh_tables("home").await;
    let store = store(&client, &names);
    let project = provision(&store, Region::Sg1).await;
    let endpoint = Endpoint::new(&config(&names, 60), store.clone());
    let auth = format!("Token {CALLER_TOKEN}");

    // 1,200 profiles: three chunks written in one transaction.
    let body = membership_body(&project, "m-home-1", 1_700_000_000_000, 1_200, 77, "add");
    let reply = endpoint.handle("POST", Some(&auth), body.as_bytes()).await;
    assert_eq!(reply.status, 200);
    let reply: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(reply["suspend_subscription"], false);

    let rows = store.stored_chunks(Region::Sg1, &project.id).await.unwrap();
    assert_eq!(rows.len(), 3);
    let mut profiles = 0;
    for row in &rows {
        assert_eq!(row.status, InboxStatus::Received);
        assert_eq!(row.message_id, "m-home-1");
        assert_eq!(row.message_ts, 1_700_000_000_000);
        assert_eq!(row.chunk_count, 3);
        assert!(row.expires_at.is_some());
        let decoded = decode_chunk(row.payload.as_ref()).unwrap();
        assert_eq!(decoded.len(), row.profile_count as usize);
        profiles += decoded.len();
    }
    assert_eq!(profiles, 1_200);
    for r in Region::ALL.into_iter().filter(|r| *r != Region::Sg1) {
        assert_eq!(store.count_items(r, Table::Inbox).await.unwrap(), 0, "{r}");
    }

    // A redelivery answers 200 and stores nothing new (same rows, same received time).
    let again = endpoint.handle("POST", Some(&auth), body.as_bytes()).await;
    assert_eq!(again.status, 200);
    let rows_again = store.stored_chunks(Region::Sg1, &project.id).await.unwrap();
    assert_eq!(rows_again.len(), 3);
    let received = |rows: &[InboxRow]| {
        let mut v: Vec<(u32, i64)> = rows.iter().map(|r| (r.chunk, r.received_ms)).collect();
        v.sort();
        v
    };
    assert_eq!(received(&rows), received(&rows_again));

    // A single-chunk batch, delivered twice concurrently, is stored once.
    let small = membership_body(&project, "m-home-2", 5, 3, 77, "delete");
    let (a, b) = tokio::join!(
        endpoint.handle("POST", Some(&auth), small.as_bytes()),
        endpoint.handle("POST", Some(&auth), small.as_bytes())
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(
        store.count_items(Region::Sg1, Table::Inbox).await.unwrap(),
        4
    );
}

#[tokio::test]
async fn storage_failures_are_503_so_mparticle_retries() {
    let (client, names) = fresh_tables_in("down", &[Region::Eu1]).await;
    let store_ok = store(&client, &names);
    let project = provision(&store_ok, Region::Eu1).await;
    // Warm the cache with a working store, then point the writes at a dead endpoint.
    let dead_client = shared::store::clients::local_client("http://127.0.0.1:9");
    let dead = Store::for_local_stack(
        shared::store::clients::RegionalClients::single(dead_client),
        names.clone(),
    );
    let endpoint = Endpoint::new(&config(&names, 60), dead);
    let auth = format!("Token {CALLER_TOKEN}");
    let reply = endpoint
        .handle(
            "POST",
            Some(&auth),
            membership_body(&project, "m-down", 1, 2, 1, "add").as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 503);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("retry"));
    assert!(
        !reply.body.contains("127.0.0.1"),
        "no internals in the answer"
    );
    assert_eq!(
        store_ok
            .count_items(Region::Eu1, Table::Inbox)
            .await
            .unwrap(),
        0
    );
}

fn api_gateway_v2(body: &str, auth: &str) -> String {
    json!({
        "version": "2.0", "routeKey": "POST /mparticle", "rawPath": "/mparticle", "rawQueryString": "",
        "headers": {"authorization": auth, "content-type": "application/json"},
        "requestContext": {"accountId": "123", "apiId": "api", "domainName": "x.example", "domainPrefix": "x",
            "http": {"method": "POST", "path": "/mparticle", "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4", "userAgent": "mParticle"},
            "requestId": "r", "routeKey": "POST /mparticle", "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
    .to_string()
}

fn api_gateway_v1(body: &str, auth: &str) -> String {
    use base64_body::encode;
    json!({
        "resource": "/mparticle", "path": "/mparticle", "httpMethod": "POST",
        "headers": {"Authorization": auth}, "multiValueHeaders": {"Authorization": [auth]},
        "queryStringParameters": null, "multiValueQueryStringParameters": null, "pathParameters": null,
        "stageVariables": null,
        "requestContext": {"accountId": "123", "resourceId": "r", "stage": "prod", "requestId": "x",
            "identity": {"sourceIp": "1.2.3.4"}, "resourcePath": "/mparticle", "httpMethod": "POST", "apiId": "api", "path": "/prod/mparticle"},
        "body": encode(body), "isBase64Encoded": true
    })
    .to_string()
}

/// Minimal base64 so the REST event exercises `isBase64Encoded` without another dependency.
mod base64_body {
    pub fn encode(input: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = input.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn api_gateway_v1_and_v2_events_are_served() {
    let e = env("apigw").await;
    let auth = format!("Token {CALLER_TOKEN}");
    let batch = membership_body(&e.project, "m-apigw", 1, 1, 1, "add");
    for (kind, event) in [
        ("v2", api_gateway_v2(&batch, &auth)),
        ("v1", api_gateway_v1(&batch, &auth)),
    ] {
        let req =
            lambda_http::request::from_str(&event).unwrap_or_else(|err| panic!("{kind}: {err}"));
        let resp = handle_http(&e.endpoint, req).await.unwrap();
        assert_eq!(resp.status(), 200, "{kind}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["suspend_subscription"], false, "{kind}");
    }
    assert_eq!(
        e.inbox(Region::Eu1).await,
        1,
        "stored once across both deliveries"
    );
    let unauth = lambda_http::request::from_str(&api_gateway_v2(&batch, "Token nope")).unwrap();
    assert_eq!(
        handle_http(&e.endpoint, unauth).await.unwrap().status(),
        401
    );
    let _ = &e.store;
}

#[tokio::test]
async fn concurrent_passcode_revokes_and_adds_never_undo_each_other() {
    let (client, names) = fresh_tables_in("passcodes", &[Region::Eu1]).await;
    let store = store(&client, &names);
    let p = provision(&store, Region::Eu1).await;
    let added: Vec<_> = (0..6)
        .map(|i| {
            shared::domain::auth::StoredPasscode::new(
                &format!("{}{i}", shared::domain::auth::generate_secret()),
                None,
            )
        })
        .collect();
    for a in &added[..3] {
        store.add_passcode(Region::Eu1, &p.id, a).await.unwrap();
    }
    // Revoke the first three while the other three are added, all at once.
    let revokes = added[..3]
        .iter()
        .map(|a| revoke_passcode(&store, Region::Eu1, &p.id, &a.id));
    let adds = added[3..]
        .iter()
        .map(|a| store.add_passcode(Region::Eu1, &p.id, a));
    let (revoked, adds) = tokio::join!(
        futures::future::join_all(revokes),
        futures::future::join_all(adds)
    );
    assert!(revoked.into_iter().all(|r| r.unwrap()));
    assert!(adds.into_iter().all(|r| r.is_ok()));
    let ids: Vec<String> = store
        .project(Region::Eu1, &p.id)
        .await
        .unwrap()
        .unwrap()
        .passcodes
        .into_iter()
        .map(|c| c.id)
        .collect();
    for a in &added[..3] {
        assert!(!ids.contains(&a.id), "a revoked passcode stays revoked");
    }
    for a in &added[3..] {
        assert!(ids.contains(&a.id), "a concurrent add is kept");
    }
    assert_eq!(
        ids.len(),
        4,
        "the project's first passcode and the three added"
    );
    // Revoking what is gone says so.
    assert!(
        !revoke_passcode(&store, Region::Eu1, &p.id, &added[0].id)
            .await
            .unwrap()
    );
}
