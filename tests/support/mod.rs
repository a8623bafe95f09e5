//! Shared helpers for integration tests: a DynamoDB Local client and fresh, isolated table names.

use aws_sdk_dynamodb::Client;
use shared::tables::{TableNames, create_all_tables};

/// The endpoint `scripts/test` exported; tests fail loudly without it rather than skip.
pub fn endpoint() -> String {
    std::env::var("DYNAMODB_ENDPOINT").expect(
        "DYNAMODB_ENDPOINT is not set: run the integration tests through scripts/test, \
         which starts DynamoDB Local",
    )
}

pub fn client() -> Client {
    shared::clients::local_client(&endpoint())
}

/// A table prefix no other test uses, so tests can run in parallel on one shared database.
pub fn unique_prefix(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}-{}", &id[..8], test.replace('_', "-"))
}

/// Creates some regions' tables under a fresh prefix (DynamoDB Local slows down as tables pile up,
/// so tests create only what they touch).
pub async fn fresh_tables_in(test: &str, regions: &[shared::Region]) -> (Client, TableNames) {
    let client = client();
    let names = TableNames::new(unique_prefix(test));
    for r in regions {
        shared::tables::create_tables(&client, &names, *r)
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

use shared::Region;
use shared::auth::generate_secret;
use shared::clients::RegionalClients;
use shared::config::Config;
use shared::store::Store;

pub const CALLER_TOKEN: &str = "test-caller-token";

pub fn store(client: &Client, names: &TableNames) -> Store {
    Store::new(RegionalClients::single(client.clone()), names.clone())
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

/// All items of one table (tests only: a full scan).
pub async fn scan_all(
    client: &Client,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    local::scan_all(client, table).await.expect("scan")
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

pub type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// The whole stack over fresh tables: the endpoint, a project in `region`, and a local pipeline.
pub struct Stack {
    pub client: Client,
    pub names: TableNames,
    pub store: Store,
    pub endpoint: shared::endpoint::Endpoint,
    pub project: TestProject,
}

impl Stack {
    pub async fn new(test: &str, region: Region) -> Self {
        let client = client();
        let names = TableNames::new(unique_prefix(test));
        shared::tables::create_tables(&client, &names, region)
            .await
            .expect("create tables");
        let store = store(&client, &names);
        let project = provision(&store, region).await;
        let endpoint = shared::endpoint::Endpoint::new(&config(&names, 60), store.clone());
        Self {
            client,
            names,
            store,
            endpoint,
            project,
        }
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

    /// POSTs and insists on a 200.
    pub async fn send(&self, body: &str) {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 200, "{answer}");
    }

    pub async fn pipeline(&self) -> local::pipeline::LocalPipeline {
        local::pipeline::LocalPipeline::new(
            &self.client,
            &endpoint(),
            self.store.clone(),
            self.names.clone(),
            &[self.project.region],
        )
        .await
        .expect("pipeline")
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

    pub async fn scan(&self, table: shared::tables::Table) -> Vec<Item> {
        scan_all(&self.client, &self.names.name(self.project.region, table)).await
    }

    /// The Identities of the profiles that are members of some segment now.
    pub async fn member_identities(&self) -> Vec<String> {
        self.scan(shared::tables::Table::Memberships)
            .await
            .into_iter()
            .filter(|m| *m["member"].as_bool().unwrap())
            .filter_map(|m| text(&m, "identity"))
            .collect()
    }

    /// Segment items as the read API shows them: counters summed over their shards.
    pub async fn segments(&self) -> Vec<Item> {
        segments_with_counts(&self.scan(shared::tables::Table::Segments).await)
    }

    /// Partner Sync events counted for a month, summed over the usage shards.
    pub async fn usage(&self, month: &str) -> i64 {
        self.store
            .usage_events(self.project.region, &self.project.id, month)
            .await
            .expect("usage")
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

/// The segment items among a scan of a segments table, with their counters summed over the
/// counter shards of the same scan.
pub fn segments_with_counts(items: &[Item]) -> Vec<Item> {
    let counts = shared::store::counters::sum_counter_shards(items);
    items
        .iter()
        .filter(|i| text(i, "sk").is_some_and(|sk| sk.starts_with("S#")))
        .map(|i| {
            let mut segment = i.clone();
            let aud: i64 = text(i, "partner_segment_id").unwrap().parse().unwrap();
            counts
                .get(&aud)
                .copied()
                .unwrap_or_default()
                .merge_into(&mut segment);
            segment
        })
        .collect()
}

/// A string or number attribute as text (tests only).
pub fn text(item: &Item, key: &str) -> Option<String> {
    item.get(key)
        .and_then(|v| v.as_s().or_else(|_| v.as_n()).ok())
        .cloned()
}

/// An audience entry for profile JSON.
pub fn entry(audience_id: i64, action: &str) -> serde_json::Value {
    serde_json::json!({"audience_id": audience_id, "audience_name": format!("Audience {audience_id}"),
        "audience_subscription_settings": {"userIdType": "customer"}, "action": action})
}

pub fn raw(kind: &str, value: &str) -> serde_json::Value {
    serde_json::json!({"type": kind, "encoding": "raw", "value": value})
}

/// A plain HTTP/1.1 client for the local server: one request per connection.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
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
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
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
            endpoint: shared::endpoint::Endpoint::new(&config, self.store.clone()),
            query: shared::query::QueryApi::new(
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
    pub endpoint: shared::endpoint::Endpoint,
}

impl SampleStack {
    pub async fn new(test: &str) -> Self {
        use shared::auth::{Project, ProjectStatus, StoredPasscode};
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
        let endpoint = shared::endpoint::Endpoint::new(&config, store.clone());
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
