//! Shared helpers for integration tests: a DynamoDB Local client and fresh, isolated table names.

use local::DynamoDbClient as Client;
use shared::store::tables::{TableNames, create_all_tables};

/// The endpoint `scripts/test` exported; tests fail loudly without it rather than skip.
pub fn endpoint() -> String {
    std::env::var("DYNAMODB_ENDPOINT").expect(
        "DYNAMODB_ENDPOINT is not set: run the integration tests through scripts/test, \
         which starts DynamoDB Local",
    )
}

pub fn client() -> Client {
    shared::store::clients::local_client(&endpoint())
}

/// A table prefix no other test uses, so tests can run in parallel on one shared database.
pub fn unique_prefix(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}-{}", &id[..8], test.replace('_', "-"))
}

/// Creates some regions' tables under a fresh prefix (DynamoDB Local slows down as tables pile up,
/// so tests create only what they touch).
pub async fn fresh_tables_in(
    test: &str,
    regions: &[shared::domain::region::Region],
) -> (Client, TableNames) {
    let client = client();
    let names = TableNames::new(unique_prefix(test));
    for r in regions {
        shared::store::tables::create_tables(&client, &names, *r)
            .await
            .expect("create tables on DynamoDB Local");
    }
    (client, names)
}

/// Creates every region's tables under a fresh prefix and returns their names.
pub async fn fresh_tables(test: &str) -> (Client, TableNames) {
    let client = client();
    let names = TableNames::new(unique_prefix(test));
    create_all_tables(&client, &names)
        .await
        .expect("create tables on DynamoDB Local");
    (client, names)
}

use shared::config::Config;
use shared::domain::auth::generate_secret;
use shared::domain::region::Region;
use shared::store::Store;
use shared::store::clients::RegionalClients;

pub const CALLER_TOKEN: &str = "test-caller-token";

pub fn store(client: &Client, names: &TableNames) -> Store {
    Store::for_local_stack(RegionalClients::single(client.clone()), names.clone())
}

/// Configuration as the functions read it, over the test's tables.
pub fn config(names: &TableNames, cache_ttl_secs: u64) -> Config {
    let prefix = names.prefix().to_owned();
    let endpoint = endpoint();
    Config::from_lookup(move |k| match k {
        "MPARTICLE_CALLER_TOKEN" => Some(CALLER_TOKEN.to_owned()),
        "TABLE_PREFIX" => Some(prefix.clone()),
        "DYNAMODB_ENDPOINT" => Some(endpoint.clone()),
        "PROJECT_CACHE_TTL_SECS" => Some(cache_ttl_secs.to_string()),
        _ => None,
    })
    .unwrap()
}

/// A project's output credentials as a customer would type them into mParticle.
#[derive(Debug, Clone)]
pub struct TestProject {
    pub id: String,
    pub passcode: String,
    pub token: String,
    pub region: Region,
}

impl TestProject {
    pub fn account_settings(&self) -> serde_json::Value {
        serde_json::json!({
            "accountId": self.id,
            "passcode": self.passcode,
            "accountToken": self.token,
            "region": self.region.as_str().to_uppercase(),
        })
    }

    pub fn account(&self) -> serde_json::Value {
        serde_json::json!({ "account_id": 4242, "account_settings": self.account_settings() })
    }
}

pub async fn provision(store: &Store, region: Region) -> TestProject {
    let id = format!("TEST-{}", &generate_secret()[..10]);
    let (passcode, token) = local::provision_project(store, region, &id).await.unwrap();
    TestProject {
        id,
        passcode,
        token,
        region,
    }
}

/// A membership request with `n` profiles, each with a customer id, email and one audience change.
pub fn membership_body(
    project: &TestProject,
    message_id: &str,
    ts: i64,
    n: usize,
    audience_id: i64,
    action: &str,
) -> String {
    serde_json::json!({
        "type": "audience_membership_change_request",
        "id": message_id,
        "timestamp_ms": ts,
        "firehose_version": "3.2.0",
        "account": project.account(),
        "user_profiles": (0..n).map(|i| serde_json::json!({
            "user_identities": [
                {"type": "customer", "encoding": "raw", "value": format!("cust-{i}")},
                {"type": "email", "encoding": "raw", "value": format!("User{i}@Example.com")}
            ],
            "mpid": format!("{}", 1000 + i),
            "audiences": [{"audience_id": audience_id, "audience_name": "Test Audience",
                           "audience_subscription_settings": {"userIdType": "customer"},
                           "action": action}]
        })).collect::<Vec<_>>()
    })
    .to_string()
}

/// The whole stack over fresh tables: the endpoint, a project in `region`, and a local pipeline.
pub struct Stack {
    pub client: Client,
    pub names: TableNames,
    pub store: Store,
    pub endpoint: shared::stages::endpoint::Endpoint,
    pub project: TestProject,
    /// The bulk way's queue, when the stack has one ([`Stack::with_bulk`]).
    pub bulk: Option<shared::bulk::LocalBulkQueue>,
}

impl Stack {
    pub async fn new(test: &str, region: Region) -> Self {
        Self::with_buckets(
            test,
            region,
            shared::store::keys::memberships::DEFAULT_BUCKETS,
        )
        .await
    }

    /// A stack whose new segments get `buckets` buckets (1: every segment has one key).
    pub async fn with_buckets(test: &str, region: Region, buckets: u32) -> Self {
        let client = client();
        let names = TableNames::new(unique_prefix(test));
        shared::store::tables::create_tables(&client, &names, region)
            .await
            .expect("create tables");
        let store = store(&client, &names).with_new_segment_buckets(buckets);
        let project = provision(&store, region).await;
        let endpoint = shared::stages::endpoint::Endpoint::new(&config(&names, 60), store.clone());
        Self {
            client,
            names,
            store,
            endpoint,
            project,
            bulk: None,
        }
    }

    /// A stack with both ways: requests of more than `live_max_profiles` profiles go the bulk
    /// way (a local fair queue its pipelines work), the rest the live way.
    pub async fn with_bulk(test: &str, region: Region, live_max_profiles: usize) -> Self {
        let mut stack = Self::new(test, region).await;
        let extra = [("LIVE_MAX_PROFILES", live_max_profiles.to_string())];
        let config = local::local_config(&stack.names, &endpoint(), CALLER_TOKEN, &extra);
        let queue = shared::bulk::LocalBulkQueue::default();
        stack.endpoint = shared::stages::endpoint::Endpoint::new(&config, stack.store.clone())
            .with_bulk_queue(shared::bulk::BulkQueue::Local(queue.clone()));
        stack.bulk = Some(queue);
        stack
    }

    /// POSTs a Firehose body with the caller token; returns status and JSON answer.
    pub async fn post(&self, body: &str) -> (u16, serde_json::Value) {
        let auth = format!("Token {CALLER_TOKEN}");
        let reply = self
            .endpoint
            .handle("POST", Some(&auth), body.as_bytes())
            .await;
        (
            reply.status,
            serde_json::from_str(&reply.body).expect("JSON answer"),
        )
    }

    /// This stack's store through the fault layer of `plan` (faults injected, calls counted).
    pub fn through(&self, plan: &local::faults::FaultPlan) -> Store {
        Store::for_local_stack(
            RegionalClients::single(local::faults::faulty_client(&endpoint(), plan.clone())),
            self.names.clone(),
        )
    }

    /// POSTs and insists on a 200.
    pub async fn send(&self, body: &str) {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 200, "{answer}");
    }

    /// The local pipeline (with the bulk workers, if the stack has a bulk queue).
    pub async fn pipeline(&self) -> local::pipeline::LocalPipeline {
        let pipeline = local::pipeline::LocalPipeline::new(
            &self.client,
            &endpoint(),
            self.store.clone(),
            self.names.clone(),
            &[self.project.region],
        )
        .await
        .expect("pipeline");
        match &self.bulk {
            Some(queue) => pipeline.with_bulk(queue.clone(), 2),
            None => pipeline,
        }
    }

    /// The local pipeline with `lanes` concurrent batches per inbox mapping.
    pub async fn pipeline_with_lanes(&self, lanes: usize) -> local::pipeline::LocalPipeline {
        local::pipeline::LocalPipeline::with_lanes(
            &self.client,
            &endpoint(),
            self.store.clone(),
            self.names.clone(),
            &[self.project.region],
            lanes,
        )
        .await
        .expect("pipeline")
    }

    /// A read API request handled in process, authenticated with the project's id and `passcode`;
    /// `path` may carry a query string (values not encoded). Answers status and JSON.
    pub async fn read_api_as(
        &self,
        passcode: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        self.read_api_through(&self.store, passcode, method, path, body)
            .await
    }

    /// A read API request answered through `store` (a fault layer's, say).
    pub async fn read_api_through(
        &self,
        store: &shared::store::Store,
        passcode: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        use std::collections::HashMap;
        let api = shared::stages::query::QueryApi::new(
            store.clone(),
            self.project.region,
            std::time::Duration::ZERO,
            false,
        );
        let headers = HashMap::from([
            ("x-clevertap-account-id".to_owned(), self.project.id.clone()),
            ("x-clevertap-passcode".to_owned(), passcode.to_owned()),
        ]);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let query: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let reply = api
            .handle(&shared::stages::query::ReadRequest {
                method,
                path,
                query: &query,
                headers: &headers,
                body: body.as_bytes(),
            })
            .await;
        (reply.status, serde_json::from_str(&reply.body).unwrap())
    }

    /// [`Stack::read_api_as`] with the project's passcode.
    pub async fn read_api(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        self.read_api_as(&self.project.passcode, method, path, body)
            .await
    }

    /// Every item of every table of the project's region, as text, in a stable order
    /// (`local::raw::dump`): equal dumps mean nothing was written.
    pub async fn snapshot(&self) -> Vec<String> {
        local::raw::dump(&self.client, &self.names, self.project.region).await
    }

    /// The Identities of the profiles that are members of some segment now.
    pub async fn member_identities(&self) -> Vec<String> {
        self.held()
            .await
            .memberships
            .into_iter()
            .filter(|m| m.member)
            .filter_map(|m| m.identity)
            .collect()
    }

    /// A segment's members through the read API, every page (`limit` a page) followed to the
    /// end: each CleverTap ID as often as the pages list it.
    pub async fn members(&self, audience_id: i64, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let (status, page) = self
                .read_api(
                    "GET",
                    &format!("/v1/segments/{audience_id}/members?limit={limit}&cursor={cursor}"),
                    "",
                )
                .await;
            assert_eq!(status, 200, "{page}");
            let members = page["members"].as_array().expect("members");
            assert!(members.len() <= limit, "a page holds at most its limit");
            out.extend(
                members
                    .iter()
                    .map(|m| m["clevertap_id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return out,
            }
        }
        panic!("the members list never ended");
    }

    /// Find People for a segment, every page (`limit` a page) followed to the end: each
    /// CleverTap ID as often as the pages list it.
    pub async fn people(
        &self,
        audience_id: i64,
        action: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let (region, project_id) = (self.project.region, self.project.id.as_str());
        let layout = self
            .store
            .segment_layout(&shared::store::segment_item::SegmentKey {
                region,
                project_id,
                audience_id,
            })
            .await
            .expect("segment layout")
            .expect("segment exists");
        let sync_action = action.map(|a| match a {
            "Added" => shared::domain::segment_state::SyncAction::Added,
            "Removed" => shared::domain::segment_state::SyncAction::Removed,
            other => panic!("no action {other}"),
        });
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let after = cursor.as_deref().map(|c| {
                shared::store::reads::BucketPosition::parse_people(layout, c).expect("our cursor")
            });
            let (page, next) = self
                .store
                .find_people(
                    region,
                    project_id,
                    layout,
                    sync_action,
                    limit,
                    after.as_ref(),
                )
                .await
                .expect("find people");
            assert!(page.len() <= limit, "a page holds at most its limit");
            out.extend(page);
            match next {
                Some(n) => cursor = Some(n),
                None => return out,
            }
        }
        panic!("Find People never ended");
    }

    /// The project's segments with their counters, as the store reads them.
    pub async fn segments(&self) -> Vec<shared::domain::records::Segment> {
        self.store
            .list_segments(self.project.region, &self.project.id)
            .await
            .expect("segments")
    }

    /// The project's stored chunks, as the pipeline's stages read them.
    pub async fn chunks(&self) -> Vec<shared::ports::inbox::InboxRow> {
        self.store
            .stored_chunks(self.project.region, &self.project.id)
            .await
            .expect("stored chunks")
    }

    /// Everything the project holds in its region, typed.
    pub async fn held(&self) -> shared::store::snapshot::ProjectSnapshot {
        self.store
            .project_snapshot(self.project.region, &self.project.id)
            .await
            .expect("project snapshot")
    }

    /// Partner Sync events counted for a month, summed over the usage shards.
    pub async fn usage(&self, month: &str) -> i64 {
        self.store
            .usage_events(self.project.region, &self.project.id, month)
            .await
            .expect("usage")
    }

    /// A subscription request (`action` add or remove) for an audience.
    pub fn subscription(&self, audience_id: i64, name: &str, action: &str, ts: i64) -> String {
        serde_json::json!({
            "type": "audience_subscription_request", "id": format!("s{audience_id}{action}{ts}"),
            "timestamp_ms": ts, "account": self.project.account(), "audience_id": audience_id,
            "audience_name": name, "action": action,
        })
        .to_string()
    }

    /// A membership request from explicit profile JSON.
    pub fn batch(&self, message_id: &str, ts: i64, profiles: serde_json::Value) -> String {
        serde_json::json!({
            "type": "audience_membership_change_request", "id": message_id, "timestamp_ms": ts,
            "firehose_version": "3.2.0", "account": self.project.account(), "user_profiles": profiles,
        })
        .to_string()
    }
}

/// A `dsr_processing_request` (`kind`: erasure, access, …) for the subject `identities`, sent now.
pub fn dsr(
    project: &TestProject,
    request_id: &str,
    kind: &str,
    identities: serde_json::Value,
) -> String {
    let now = shared::domain::protocol::now_ms();
    serde_json::json!({
        "type": "dsr_processing_request", "id": format!("msg-{request_id}"), "timestamp_ms": now,
        "firehose_version": "2.0", "account": project.account(), "subject_request_id": request_id,
        "subject_request_type": kind, "submitted_time": now as f64 / 1000.0,
        "subject_identities": identities, "api_version": "3.0", "regulation": "gdpr",
    })
    .to_string()
}

/// An audience entry for profile JSON.
pub fn entry(audience_id: i64, action: &str) -> serde_json::Value {
    serde_json::json!({"audience_id": audience_id, "audience_name": format!("Audience {audience_id}"),
        "audience_subscription_settings": {"userIdType": "customer"}, "action": action})
}

pub fn raw(kind: &str, value: &str) -> serde_json::Value {
    serde_json::json!({"type": kind, "encoding": "raw", "value": value})
}

/// A plain HTTP/1.1 client for the local server: one request per connection; the JSON answer.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let answer = http_text(port, method, path, headers, body).await;
    (
        answer.status,
        serde_json::from_str(&answer.body).unwrap_or(serde_json::Value::Null),
    )
}

/// An HTTP answer as text.
pub struct HttpAnswer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

/// One request to the local server; the answer as text.
pub async fn http_text(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let headers: std::collections::HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

impl Stack {
    /// Serves the stack over HTTP on 127.0.0.1 (the local API Gateway stand-in); returns the port.
    pub async fn serve_http(&self) -> u16 {
        let config = config(&self.names, 0);
        let handlers = std::sync::Arc::new(local::server::Handlers {
            endpoint: shared::stages::endpoint::Endpoint::new(&config, self.store.clone()),
            query: shared::stages::query::QueryApi::new(
                self.store.clone(),
                self.project.region,
                std::time::Duration::ZERO,
                false,
            ),
            ready: true.into(),
            max_body_bytes: config.max_body_bytes,
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(local::server::serve(listener, handlers));
        port
    }
}

/// The text of a sample event in `events/`.
pub fn sample_event(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Fresh eu1 tables holding the example project the sample events of `events/` belong to
/// (`W9R-K6W-ZZ7Z`, passcode `example-passcode-0001`), and an endpoint with their caller token.
pub struct SampleStack {
    pub client: Client,
    pub names: TableNames,
    pub store: Store,
    pub endpoint: shared::stages::endpoint::Endpoint,
}

impl SampleStack {
    pub async fn new(test: &str) -> Self {
        use shared::domain::auth::{Project, ProjectStatus, StoredPasscode};
        use shared::ports::projects::Projects;
        let (client, names) = fresh_tables_in(test, &[Region::Eu1]).await;
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
        let (prefix, ep) = (names.prefix().to_owned(), endpoint());
        let config = Config::from_lookup(|k| match k {
            "MPARTICLE_CALLER_TOKEN" => Some("example-caller-token-0001".into()),
            "TABLE_PREFIX" => Some(prefix.clone()),
            "DYNAMODB_ENDPOINT" => Some(ep.clone()),
            _ => None,
        })
        .unwrap();
        let endpoint = shared::stages::endpoint::Endpoint::new(&config, store.clone());
        Self {
            client,
            names,
            store,
            endpoint,
        }
    }

    /// A sample stream event, its `ctmp-eu1-…` table ARNs pointed at this stack's tables.
    pub fn stream_event(&self, name: &str) -> aws_lambda_events::event::dynamodb::Event {
        let text = sample_event(name).replace(
            "table/ctmp-eu1-",
            &format!("table/{}-eu1-", self.names.prefix()),
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// What the console tests look at: two segments and two membership requests, materialized.
///
/// Yesterday's request adds `c-1` (email, phone) to both segments and a partner-id profile and
/// `c-3` to [`CONSOLE_SEGMENT`], and skips an anonymous user; today's removes `c-3`. So the
/// segment has 2 members, 3 added, 1 removed.
pub struct ConsoleData {
    pub stack: Stack,
    pub port: u16,
    pub yesterday_ms: i64,
    pub today_ms: i64,
}

/// Console data's requests of more profiles than this go the bulk way.
pub const CONSOLE_LIVE_MAX: usize = 5;

/// The segment the console tests open; its name needs escaping.
pub const CONSOLE_SEGMENT: i64 = 4242;
pub const CONSOLE_SEGMENT_NAME: &str = "Cart <Abandoners> & co";

impl ConsoleData {
    pub async fn new(test: &str) -> Self {
        // Both ways: the requests here are small (live); an import (`queue_import`) goes bulk.
        let stack = Stack::with_bulk(test, Region::Eu1, CONSOLE_LIVE_MAX).await;
        let today_ms = shared::domain::protocol::now_ms();
        let yesterday_ms = today_ms - 86_400_000;
        stack
            .send(&stack.subscription(CONSOLE_SEGMENT, CONSOLE_SEGMENT_NAME, "add", 1))
            .await;
        stack.send(&stack.subscription(77, "VIP", "add", 2)).await;
        let entry = |aud: i64, action: &str| {
            let name = if aud == CONSOLE_SEGMENT {
                CONSOLE_SEGMENT_NAME
            } else {
                "VIP"
            };
            serde_json::json!({"audience_id": aud, "audience_name": name, "action": action,
                               "audience_subscription_settings": {"userIdType": "customer"}})
        };
        let add = |aud: i64| entry(aud, "add");
        stack
            .send(&stack.batch(
                "console-m1",
                yesterday_ms,
                serde_json::json!([
                    {"user_identities": [raw("customer", "c-1"), raw("email", "ann@example.com"),
                                         raw("mobile_number", "+14155550100")],
                     "mpid": "11", "audiences": [add(CONSOLE_SEGMENT), add(77)]},
                    {"partner_identities": [raw("CleverTap_User_ID", "__ct0002")], "mpid": "12",
                     "audiences": [add(CONSOLE_SEGMENT)]},
                    {"user_identities": [raw("customer", "c-3")], "mpid": "13",
                     "audiences": [add(CONSOLE_SEGMENT)]},
                    {"mpid": "14", "audiences": [add(CONSOLE_SEGMENT)]},
                ]),
            ))
            .await;
        // Materialized before the removal arrives: otherwise the newer removal may win first and
        // the add be stale (correct, but not the history these tests look at).
        let mut pipeline = stack.pipeline().await;
        pipeline.run_until_idle(50).await.expect("pipeline");
        stack
            .send(&stack.batch(
                "console-m2",
                today_ms,
                serde_json::json!([{"user_identities": [raw("customer", "c-3")], "mpid": "13",
                                    "audiences": [entry(CONSOLE_SEGMENT, "delete")]}]),
            ))
            .await;
        pipeline.run_until_idle(50).await.expect("pipeline");
        let port = stack.serve_http().await;
        Self {
            stack,
            port,
            yesterday_ms,
            today_ms,
        }
    }

    /// Sends an import of `profiles` new customers joining `audience` (a request larger than
    /// live ones, so it goes the bulk way) and leaves it queued: it waits for a bulk worker
    /// until the stack's pipeline runs.
    pub async fn queue_import(&self, message_id: &str, audience: i64, profiles: usize) {
        assert!(profiles > CONSOLE_LIVE_MAX, "an import goes the bulk way");
        let body = serde_json::json!({
            "type": "audience_membership_change_request", "id": message_id,
            "timestamp_ms": self.today_ms, "account": self.stack.project.account(),
            "user_profiles": (0..profiles).map(|i| serde_json::json!({
                "user_identities": [raw("customer", &format!("imported-{i}"))],
                "mpid": format!("{}", 5000 + i),
                "audiences": [{"audience_id": audience, "action": "add",
                               "audience_subscription_settings": {"userIdType": "customer"}}]
            })).collect::<Vec<_>>()
        });
        self.stack.send(&body.to_string()).await;
    }

    /// The read API's credentials headers.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("X-CleverTap-Account-Id", self.stack.project.id.as_str()),
            ("X-CleverTap-Passcode", self.stack.project.passcode.as_str()),
        ]
    }

    /// A read API view.
    pub async fn read(&self, path: &str) -> serde_json::Value {
        let (status, view) = http(self.port, "GET", path, &self.headers(), "").await;
        assert_eq!(status, 200, "{path}: {view}");
        view
    }
}

/// The EventBridge stand-in `scripts/test` started (moto); tests fail loudly without it.
pub fn eventbridge_endpoint() -> String {
    std::env::var("EVENTBRIDGE_ENDPOINT").expect(
        "EVENTBRIDGE_ENDPOINT is not set: run the integration tests through scripts/test, \
         which starts the EventBridge stand-in (scripts/eventbridge-local)",
    )
}

/// A stack whose pipeline publishes to a bus of its own on the EventBridge stand-in, with a
/// catch-all rule delivering the feed to a queue.
pub struct FeedStack {
    pub stack: Stack,
    pub feed: local::feed::LocalFeed,
    pub bus: String,
    pub all: local::feed::Subscription,
    pub pipeline: local::pipeline::LocalPipeline,
}

impl FeedStack {
    pub async fn new(test: &str) -> Self {
        Self::with_bus_client(test, None).await
    }

    /// `client`: the publisher's EventBridge client (e.g. through `local::faults`).
    pub async fn with_bus_client(test: &str, client: Option<aws_sdk_eventbridge::Client>) -> Self {
        Self::over(Stack::new(test, Region::Eu1).await, client).await
    }

    /// A feed stack with both ways: requests of more than `live_max_profiles` go bulk.
    pub async fn with_bulk(test: &str, live_max_profiles: usize) -> Self {
        let stack = Stack::with_bulk(test, Region::Eu1, live_max_profiles).await;
        Self::over(stack, None).await
    }

    async fn over(stack: Stack, client: Option<aws_sdk_eventbridge::Client>) -> Self {
        let feed = local::feed::LocalFeed::new(&eventbridge_endpoint());
        let bus = format!("{}-engage", stack.names.prefix());
        feed.create_bus(&bus).await.expect("bus");
        let all = feed
            .subscribe(
                &bus,
                &format!("{}-all", stack.names.prefix()),
                &format!(r#"{{"source":["{}"]}}"#, shared::domain::feed::SOURCE),
            )
            .await
            .expect("catch-all rule");
        let mut pipeline = stack.pipeline().await;
        let client = client.unwrap_or_else(|| feed.events.clone());
        pipeline
            .publish_to(
                &stack.client,
                &endpoint(),
                &[stack.project.region],
                shared::bus::Bus::new(client, &bus),
            )
            .await
            .expect("publisher");
        Self {
            stack,
            feed,
            bus,
            all,
            pipeline,
        }
    }

    /// Runs the pipeline (publisher included) until idle; answers what the catch-all rule
    /// delivered since the last call, as EventBridge envelopes.
    pub async fn published(&mut self) -> Vec<serde_json::Value> {
        self.pipeline.run_until_idle(100).await.expect("pipeline");
        self.feed.take(&self.all).await.expect("queue")
    }
}
