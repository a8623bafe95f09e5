//! `scripts/run-local`: the whole product on one machine. Emulates what AWS provides around the
//! functions — API Gateway (one HTTP server turning requests into API Gateway v2 events), the
//! DynamoDB stream event source mappings (polling with the same filters and event shapes) and the
//! bulk way's fair queue with its workers — and runs the very handlers the Lambda functions run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use local::pipeline::LocalPipeline;
use local::server::{Handlers, serve};
use shared::config::{Config, init_tracing};
use shared::domain::auth::{Project, ProjectStatus, StoredPasscode, generate_secret};
use shared::domain::region::Region;
use shared::ports::projects::Projects;
use shared::stages::endpoint::Endpoint;
use shared::stages::query::QueryApi;
use shared::store::Store;
use shared::store::clients::{RegionalClients, local_client};
use shared::store::tables::create_all_tables;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

const DEMO_PROJECT: &str = "DEMO-EU1";
const DEFAULT_CALLER_TOKEN: &str = "local-dev-caller-token";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let endpoint = std::env::var("DYNAMODB_ENDPOINT")
        .map_err(|_| "DYNAMODB_ENDPOINT is not set (scripts/run-local sets it)")?;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let caller_token = std::env::var("MPARTICLE_CALLER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_CALLER_TOKEN.to_owned());
    let config = Config::from_lookup(|k| match k {
        "MPARTICLE_CALLER_TOKEN" => Some(caller_token.clone()),
        "DYNAMODB_ENDPOINT" => Some(endpoint.clone()),
        other => std::env::var(other).ok(),
    })?;

    let client = local_client(&endpoint);
    create_all_tables(&client, &config.tables).await?;
    let store = Store::for_local_stack(
        RegionalClients::single(client.clone()),
        config.tables.clone(),
    );
    let (passcode, token) = provision_demo(&store).await?;

    // Both ways, as deployed: large requests through the bulk fair queue (`LIVE_MAX_PROFILES`).
    let bulk_queue = shared::bulk::LocalBulkQueue::default();
    let handlers = Arc::new(Handlers {
        endpoint: Endpoint::new(&config, store.clone())
            .with_bulk_queue(shared::bulk::BulkQueue::Local(bulk_queue.clone())),
        query: QueryApi::new(store.clone(), Region::Eu1, config.project_cache_ttl, true),
        ready: Default::default(),
        max_body_bytes: config.max_body_bytes,
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(serve(listener, handlers.clone()));

    let mut pipeline = LocalPipeline::new(
        &client,
        &endpoint,
        store,
        config.tables.clone(),
        &Region::ALL,
    )
    .await?
    .with_bulk(bulk_queue, local::bulk::workers_from_env());
    let feed = match &config.eventbridge_endpoint {
        Some(eb) => Some(start_feed(&mut pipeline, &client, &endpoint, eb, &config).await?),
        None => None,
    };
    // The pipeline runs on this task (its futures are not Send), beside the signal handling.
    let pipeline_loop = async move {
        loop {
            match pipeline.step().await {
                Ok(0) => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline poll failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    handlers.ready.store(true, Ordering::SeqCst);
    print_banner(port, &caller_token, &passcode, &token);
    if let Some(feed) = &feed {
        print_feed_banner(feed);
    }

    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = pipeline_loop => {}
    }
    eprintln!("run-local: stopping");
    Ok(())
}

/// The engage feed on the EventBridge stand-in: the bus, the publisher on every region's events
/// stream, and the demo rule (Added on audience 4242) whose queue is watched and printed.
struct DemoFeed {
    endpoint: String,
    bus: String,
    rule: String,
    queue_url: String,
}

const DEMO_AUDIENCE: i64 = 4242;

async fn start_feed(
    pipeline: &mut LocalPipeline,
    client: &local::DynamoDbClient,
    ddb_endpoint: &str,
    eb_endpoint: &str,
    config: &Config,
) -> Result<DemoFeed, Box<dyn std::error::Error>> {
    let bus = config
        .event_bus_name
        .clone()
        .unwrap_or_else(|| format!("{}-engage", config.tables.prefix()));
    let feed = local::feed::LocalFeed::new(eb_endpoint);
    feed.create_bus(&bus).await?;
    let rule = format!("{bus}-demo-added-{DEMO_AUDIENCE}");
    let pattern = serde_json::json!({"source": [shared::domain::feed::SOURCE],
        "detail-type": ["Partner Sync"],
        "detail": {"action": ["Added"], "partner_segment_id": [DEMO_AUDIENCE]}});
    let subscription = feed.subscribe(&bus, &rule, &pattern.to_string()).await?;
    pipeline
        .publish_to(
            client,
            ddb_endpoint,
            &Region::ALL,
            shared::bus::Bus::new(feed.events.clone(), &bus),
        )
        .await?;
    // The demo rule's deliveries, one line each, as a live campaign would receive them.
    let watched = subscription.clone();
    tokio::spawn(async move {
        loop {
            match feed.take(&watched).await {
                Ok(events) => {
                    for e in events {
                        let d = &e["detail"];
                        eprintln!(
                            "feed [{}]: {} {} segment {} clevertap_id {} initial_sync {} (event {})",
                            watched.rule,
                            e["detail-type"].as_str().unwrap_or_default(),
                            d["action"].as_str().unwrap_or_default(),
                            d["partner_segment_id"],
                            d["clevertap_id"].as_str().unwrap_or_default(),
                            d["initial_sync"],
                            d["event_id"].as_str().unwrap_or_default(),
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "demo feed: reading the queue failed"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(DemoFeed {
        endpoint: eb_endpoint.to_owned(),
        bus,
        rule,
        queue_url: subscription.queue_url,
    })
}

fn print_feed_banner(feed: &DemoFeed) {
    println!(
        "The engage feed (docs/contract.md section 5) goes to the bus {bus} on the EventBridge\n\
         stand-in at {endpoint}. The demo rule {rule}\n\
         (Action = Added on segment {DEMO_AUDIENCE}) delivers to an SQS queue this process watches:\n\
         paste the batch above and each delivery prints here as a 'feed [...]' line.\n\
         To read the queue yourself instead (AWS CLI):\n\n\
         aws --endpoint-url {endpoint} --region us-east-1 sqs receive-message --queue-url {queue} --max-number-of-messages 10\n",
        bus = feed.bus,
        endpoint = feed.endpoint,
        rule = feed.rule,
        queue = feed.queue_url,
    );
}

/// The demo project in eu1. Its passcode is known only when created, so on a reused database a
/// fresh passcode is added to the existing project.
async fn provision_demo(store: &Store) -> Result<(String, String), Box<dyn std::error::Error>> {
    let passcode = generate_secret();
    if let Some(existing) = store.project(Region::Eu1, DEMO_PROJECT).await? {
        store
            .add_passcode(
                Region::Eu1,
                DEMO_PROJECT,
                &StoredPasscode::new(&passcode, None),
            )
            .await?;
        return Ok((passcode, existing.account_token));
    }
    let token = generate_secret();
    store
        .create_project(&Project {
            project_id: DEMO_PROJECT.to_owned(),
            region: Region::Eu1,
            account_token: token.clone(),
            passcodes: vec![StoredPasscode::new(&passcode, None)],
            status: ProjectStatus::Active,
            created_ms: shared::domain::protocol::now_ms(),
        })
        .await?;
    Ok((passcode, token))
}

fn print_banner(port: u16, caller_token: &str, passcode: &str, token: &str) {
    let base = format!("http://127.0.0.1:{port}");
    let account = serde_json::json!({"account_id": 1, "account_settings": {
        "accountId": DEMO_PROJECT, "passcode": passcode, "accountToken": token, "region": "eu1"}});
    // As of a second after the demo batch's time: the demo batch is older, so resending it brings
    // nobody back.
    let erasure = serde_json::json!({
        "type": "dsr_processing_request", "id": "demo-dsr-1", "account": account,
        "subject_request_id": "demo-erasure-1", "subject_request_type": "erasure",
        "regulation": "gdpr", "api_version": "3.0",
        "submitted_time": (shared::domain::protocol::now_ms() + 1_000) as f64 / 1000.0,
        "subject_identities": {"email": {"encoding": "raw", "value": "ann@example.com"}},
    });
    let batch = serde_json::json!({
        "type": "audience_membership_change_request",
        "id": "demo-batch-1",
        "timestamp_ms": shared::domain::protocol::now_ms(),
        "firehose_version": "3.2.0",
        "account": account,
        "user_profiles": [
            {"user_identities": [{"type": "customer", "encoding": "raw", "value": "cust-1"},
                                 {"type": "email", "encoding": "raw", "value": "ann@example.com"}],
             "mpid": "1001",
             "audiences": [{"audience_id": 4242, "audience_name": "Cart Abandoners", "action": "add"}]},
            {"partner_identities": [{"type": "CleverTap_User_ID", "encoding": "raw", "value": "__demo0001"}],
             "user_identities": [{"type": "mobile_number", "encoding": "raw", "value": "+14155550100"}],
             "mpid": "1002",
             "audiences": [{"audience_id": 4242, "audience_name": "Cart Abandoners", "action": "add"}]}
        ]
    });
    println!(
        "\nmParticle audience import running on {base} (all regions on one DynamoDB Local;\n\
         {lanes} lanes per inbox stream mapping, LANES to change)\n\n\
         demo project (eu1):  account id {DEMO_PROJECT}\n\
         \x20                    passcode   {passcode}\n\
         \x20                    token      {token}\n\
         mParticle caller token:          {caller_token}\n\n\
         Send a membership batch:\n\n\
         curl -s -X POST {base}/mparticle -H 'Authorization: Token {caller_token}' -d '{batch}'\n\n\
         Read the segment back (and /members, /v1/profiles/__demo0001/events, /v1/syncs):\n\n\
         curl -s {base}/v1/segments/4242 -H 'X-CleverTap-Account-Id: {DEMO_PROJECT}' -H 'X-CleverTap-Passcode: {passcode}'\n\n\
         Or look at it in the console: {base}/console (account id {DEMO_PROJECT}, the passcode above, region eu1)\n\n\
         Erase ann@example.com (GDPR), then see /v1/erasures:\n\n\
         curl -s -X POST {base}/mparticle -H 'Authorization: Token {caller_token}' -d '{erasure}'\n\n\
         Ctrl-C stops everything.\n",
        lanes = local::streams::lanes_from_env()
    );
}
