//! The fairness bench (issue 35, `BENCH_ONLY=fairness scripts/bench`): one stack, its pipeline
//! running continuously as `scripts/run-local` runs it, and several projects of one region:
//!
//! 1. an importer alone: its rate (the yardstick for 3);
//! 2. paced single live changes of another project on the idle stack: how long each takes to be
//!    visible (its membership row a member) and to be delivered from the engage bus (a rule for
//!    that project's events to a queue of the EventBridge stand-in), measured from the 200;
//! 3. the same live changes while the importer imports again: their visibility and delivery, and
//!    the importer's rate beside them;
//! 4. two importers of different sizes at once: each one's share of what was applied while both
//!    ran.
//!
//! Every figure of one run is measured on the same machine minutes apart, so the ratios (loaded to
//! idle, share of throughput) are what to read; the absolute times move 2× between runs. The
//! yardstick (`FAIRNESS_ONE_WAY=1`: every request live, as before the bulk way) runs on an engine
//! of its own (`scripts/bench` starts one per way): DynamoDB Local keeps every stream record it
//! ever held and slows with them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::domain::auth::generate_secret;
use shared::domain::records::{SegmentKey, SegmentLayout};
use shared::domain::region::Region;
use shared::stages::endpoint::Endpoint;
use shared::store::Store;
use shared::store::clients::RegionalClients;
use shared::store::tables::{TableNames, create_tables};

const CALLER: &str = "fairness-caller-token-0000";
const REGION: Region = Region::Eu1;
/// Profiles per import request (mParticle's largest batches).
const IMPORT_BATCH: usize = 1_000;
/// Import requests in flight at once per importer.
const IMPORT_CONCURRENCY: usize = 4;

/// What to run: sizes and pacing.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub import_members: usize,
    pub live_changes: usize,
    pub live_every: Duration,
    /// The smaller importer of step 4.
    pub small_import_members: usize,
    /// Both ways (large requests bulk), or every request live as before the bulk way
    /// (`FAIRNESS_ONE_WAY=1`): the yardstick.
    pub two_ways: bool,
}

impl Plan {
    pub fn from_env() -> Self {
        let var = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Self {
            import_members: var("FAIRNESS_IMPORT", 20_000),
            live_changes: var("FAIRNESS_LIVE", 50),
            live_every: Duration::from_millis(var("FAIRNESS_LIVE_EVERY_MS", 250) as u64),
            small_import_members: var("FAIRNESS_SMALL_IMPORT", 5_000),
            two_ways: var("FAIRNESS_ONE_WAY", 0) == 0,
        }
    }
}

/// A project as mParticle's `account` names it.
struct Tenant {
    id: String,
    account: Value,
}

struct Stack {
    store: Store,
    endpoint: Endpoint,
    auth: String,
    client: aws_sdk_dynamodb::Client,
    names: TableNames,
    /// The engage feed and a subscription to the live project's events, when the EventBridge
    /// stand-in runs (`EVENTBRIDGE_ENDPOINT`).
    feed: Option<(local::feed::LocalFeed, local::feed::Subscription)>,
}

/// The project whose single live changes are timed.
const LIVE_TENANT: &str = "FAIR-LIVE";

impl Stack {
    async fn tenant(&self, id: &str) -> Tenant {
        let (passcode, token) = local::provision_project(&self.store, REGION, id)
            .await
            .unwrap();
        Tenant {
            id: id.to_owned(),
            account: json!({"account_id": 1, "account_settings": {"accountId": id, "passcode": passcode, "accountToken": token, "region": "eu1"}}),
        }
    }

    async fn send(&self, body: &str) {
        let r = self
            .endpoint
            .handle("POST", Some(&self.auth), body.as_bytes())
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Whether `identity` of `tenant` is a member of `audience` now (claim, then its row).
    async fn is_member(&self, tenant: &str, audience: i64, identity: &str) -> bool {
        let Ok(Some(ct)) = (self.store)
            .clevertap_id_of_identity(REGION, tenant, identity)
            .await
        else {
            return false;
        };
        let key = SegmentKey {
            region: REGION,
            project_id: tenant,
            audience_id: audience,
        };
        let Ok(Some(segment)) = self.store.segment(&key).await else {
            return false;
        };
        let layout = SegmentLayout::of_segment(&segment);
        let Ok(rows) = (self.store)
            .pair_states(REGION, tenant, &[(layout, ct.as_str())])
            .await
        else {
            return false;
        };
        rows.get(&(audience, ct)).is_some_and(|r| r.state.member)
    }

    /// One small PutItem to the segments table (streamed, like every table a change is written
    /// to; no mapping takes the item): the engine's write latency at this moment.
    async fn probe_write(&self, id: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let table = self
            .names
            .name(REGION, shared::store::tables::Table::Segments);
        let _ = (self.client.put_item())
            .table_name(table)
            .item("pk", AttributeValue::S(format!("PROBE#{id}")))
            .item("sk", AttributeValue::S("probe".into()))
            .send()
            .await;
    }

    /// One small two-item transaction to the segments table: the engine's transaction latency at
    /// this moment (DynamoDB Local runs transactions one at a time).
    async fn probe_transaction(&self, id: &str) {
        use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
        let table = self
            .names
            .name(REGION, shared::store::tables::Table::Segments);
        let put = |n: u32| {
            let put = Put::builder()
                .table_name(&table)
                .item("pk", AttributeValue::S(format!("PROBE-TX#{id}#{n}")))
                .item("sk", AttributeValue::S("probe".into()))
                .build()
                .expect("table and item are set");
            TransactWriteItem::builder().put(put).build()
        };
        let _ = (self.client.transact_write_items())
            .set_transact_items(Some(vec![put(0), put(1)]))
            .send()
            .await;
    }

    async fn member_count(&self, tenant: &str, audience: i64) -> i64 {
        (self.store.get_segment(REGION, tenant, audience).await)
            .ok()
            .flatten()
            .map_or(0, |s| s.counts.member_count)
    }
}

fn import_body(tenant: &Tenant, tag: &str, audience: i64, req: usize) -> String {
    let profiles: Vec<Value> = (0..IMPORT_BATCH)
        .map(|i| json!({"user_identities": [{"type": "customer", "encoding": "raw", "value": format!("{tag}-{req}-{i}")}],
                        "mpid": format!("{}", req * IMPORT_BATCH + i + 1),
                        "audiences": [{"audience_id": audience, "audience_name": "Import", "action": "add"}]}))
        .collect();
    json!({"type": "audience_membership_change_request", "timestamp_ms": 2_000,
           "user_profiles": profiles, "account": tenant.account, "id": format!("{tag}-{req}")})
    .to_string()
}

fn live_body(tenant: &Tenant, identity: &str, audience: i64) -> String {
    json!({"type": "audience_membership_change_request", "timestamp_ms": 3_000,
           "user_profiles": [{"user_identities": [{"type": "customer", "encoding": "raw", "value": identity}],
                              "mpid": "7", "audiences": [{"audience_id": audience, "audience_name": "Live", "action": "add"}]}],
           "account": tenant.account, "id": format!("live-{identity}")})
    .to_string()
}

/// An import: its requests, `IMPORT_CONCURRENCY` at a time; answers when all were accepted.
async fn import(stack: &Stack, tenant: &Tenant, tag: &str, audience: i64, members: usize) -> f64 {
    use futures::stream::{self, StreamExt};
    let t = Instant::now();
    let requests = members.div_ceil(IMPORT_BATCH);
    stream::iter(0..requests)
        .map(|req| async move { stack.send(&import_body(tenant, tag, audience, req)).await })
        .buffer_unordered(IMPORT_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    t.elapsed().as_secs_f64()
}

/// Waits until the audience has `members` members; answers the seconds from `since`, and the
/// count polled every half second (for shares).
async fn applied(
    stack: &Stack,
    tenant: &str,
    audience: i64,
    members: usize,
    since: Instant,
) -> f64 {
    loop {
        let now = stack.member_count(tenant, audience).await;
        if std::env::var("FAIRNESS_DEBUG").is_ok() {
            eprintln!("{tenant} {audience}: {now} of {members}");
        }
        if now >= members as i64 {
            return since.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What paced live changes came to (ms each, from the 200).
struct LiveFigures {
    visible: Vec<f64>,
    /// To their Partner Sync event's delivery from the bus (none without the stand-in).
    delivered: Vec<f64>,
    /// What one write to a streamed table took meanwhile (the engine's own latency).
    engine: Vec<f64>,
    /// What one two-item transaction took meanwhile.
    engine_transaction: Vec<f64>,
}

/// Delivered events of the live project, by message id, with when the bench took them off the
/// queue, until `done`: polled every 20 ms (the stand-in delivers at `PutEvents`).
async fn watch_feed(
    stack: &Stack,
    done: &AtomicBool,
) -> std::collections::HashMap<String, Instant> {
    let mut arrived = std::collections::HashMap::new();
    let Some((feed, subscription)) = &stack.feed else {
        return arrived;
    };
    loop {
        let finished = done.load(Ordering::Acquire);
        for e in feed.take(subscription).await.unwrap_or_default() {
            let id = e["detail"]["event_id"].as_str().unwrap_or_default();
            let message = id.split(':').next().unwrap_or_default().to_owned();
            arrived.entry(message).or_insert_with(Instant::now);
        }
        if finished {
            return arrived;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Paced live changes: one every `every`, each a new person joining `audience`; answers each
/// one's milliseconds from its 200 to its membership being visible and to its event's delivery,
/// and what one write to a streamed table took meanwhile, every 100 ms (DynamoDB Local's own
/// latency at that moment: the share of the wait that is the engine's, which real DynamoDB does
/// not share between tenants).
async fn live_changes(
    stack: &Stack,
    tenant: &Tenant,
    tag: &str,
    audience: i64,
    plan: Plan,
) -> LiveFigures {
    let one = |i: usize| async move {
        tokio::time::sleep(plan.live_every * i as u32).await;
        let identity = format!("{tag}-{i}");
        stack.send(&live_body(tenant, &identity, audience)).await;
        let accepted = Instant::now();
        let mut poll = Duration::from_millis(20);
        while !stack.is_member(&tenant.id, audience, &identity).await {
            tokio::time::sleep(poll).await;
            // Fine at first (an idle stack answers in well under a second), coarser later.
            poll = (poll * 5 / 4).min(Duration::from_millis(500));
        }
        (
            format!("live-{identity}"),
            accepted,
            accepted.elapsed().as_secs_f64() * 1000.0,
        )
    };
    let done = AtomicBool::new(false);
    let probe = async {
        let mut writes = Vec::new();
        let mut n = 0;
        let mut transactions = Vec::new();
        while !done.load(Ordering::Acquire) {
            n += 1;
            let t = Instant::now();
            stack.probe_write(&format!("{tag}-{n}")).await;
            writes.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            stack.probe_transaction(&format!("{tag}-{n}")).await;
            transactions.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (writes, transactions)
    };
    let changes = async {
        let latencies = futures::future::join_all((0..plan.live_changes).map(one)).await;
        done.store(true, Ordering::Release);
        latencies
    };
    let (changes, (engine, engine_transaction), mut arrived) =
        tokio::join!(changes, probe, watch_feed(stack, &done));
    if stack.feed.is_some() {
        // Events still on their way once every change was visible: read until each is in (half
        // a minute at most; a missing one shows as a smaller `n`).
        let deadline = Instant::now() + Duration::from_secs(30);
        let still = AtomicBool::new(true);
        while changes.iter().any(|(m, _, _)| !arrived.contains_key(m)) && Instant::now() < deadline
        {
            arrived.extend(watch_feed(stack, &still).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    LiveFigures {
        visible: changes.iter().map(|(_, _, ms)| *ms).collect(),
        delivered: changes
            .iter()
            .filter_map(|(m, accepted, _)| {
                arrived
                    .get(m)
                    .map(|at| at.saturating_duration_since(*accepted).as_secs_f64() * 1000.0)
            })
            .collect(),
        engine,
        engine_transaction,
    }
}

fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    json!({"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "n": v.len()})
}

/// Runs the bench against DynamoDB Local at `endpoint_url`; answers its figures.
pub async fn run(client: &aws_sdk_dynamodb::Client, endpoint_url: &str, plan: Plan) -> Value {
    let names = TableNames::new(format!("fair{}", &generate_secret()[..6]));
    create_tables(client, &names, REGION).await.unwrap();
    let store = Store::for_local_stack(RegionalClients::single(client.clone()), names.clone());
    let config = local::local_config(&names, endpoint_url, CALLER, &[]);
    let queue = shared::bulk::LocalBulkQueue::default();
    let mut endpoint = Endpoint::new(&config, store.clone());
    if plan.two_ways {
        endpoint = endpoint.with_bulk_queue(shared::bulk::BulkQueue::Local(queue.clone()));
    }
    let mut pipeline = local::pipeline::LocalPipeline::new(
        client,
        endpoint_url,
        store.clone(),
        names.clone(),
        &[REGION],
    )
    .await
    .unwrap();
    if plan.two_ways {
        pipeline = pipeline.with_bulk(queue, local::bulk::workers_from_env());
    }
    // The engage feed, on the EventBridge stand-in when it runs: the pipeline publishes every
    // event, a rule delivers the live project's to a queue the bench reads.
    if std::env::var("FAIRNESS_BUS").as_deref() == Ok("instant") {
        let bus = shared::bus::Bus::new(instant_bus_client(), "instant");
        pipeline
            .publish_to(client, endpoint_url, &[REGION], bus)
            .await
            .unwrap();
    }
    let feed = match std::env::var("EVENTBRIDGE_ENDPOINT") {
        Ok(eventbridge) if std::env::var("FAIRNESS_BUS").is_err() => {
            let feed = local::feed::LocalFeed::new(&eventbridge);
            let bus = format!("{}-engage", names.prefix());
            feed.create_bus(&bus).await.unwrap();
            let pattern = json!({"source": [shared::domain::feed::SOURCE],
                                 "detail": {"project_id": [LIVE_TENANT]}});
            let subscription = feed
                .subscribe(
                    &bus,
                    &format!("{}-live", names.prefix()),
                    &pattern.to_string(),
                )
                .await
                .unwrap();
            pipeline
                .publish_to(
                    client,
                    endpoint_url,
                    &[REGION],
                    shared::bus::Bus::new(feed.events.clone(), &bus),
                )
                .await
                .unwrap();
            Some((feed, subscription))
        }
        _ => None,
    };
    let stack = Stack {
        endpoint,
        store,
        auth: format!("Token {CALLER}"),
        client: client.clone(),
        names: names.clone(),
        feed,
    };
    // The pipeline runs on its own, as on `scripts/run-local`, beside the scenario (on this
    // task: its futures are not `Send`).
    let stop = AtomicBool::new(false);
    let running = async {
        while !stop.load(Ordering::Acquire) {
            if pipeline.step().await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    let scenario = async {
        let figures = scenario(&stack, plan).await;
        stop.store(true, Ordering::Release);
        figures
    };
    let ((), figures) = tokio::join!(running, scenario);
    figures
}

/// Steps 1–4 on a running stack.
async fn scenario(stack: &Stack, plan: Plan) -> Value {
    let importer = stack.tenant("FAIR-IMPORT").await;
    let small = stack.tenant("FAIR-SMALL").await;
    let live = stack.tenant(LIVE_TENANT).await;
    let n = plan.import_members;

    eprintln!("fairness 1/4: {n} members imported alone");
    let t = Instant::now();
    import(stack, &importer, "alone", 81_001, n).await;
    let alone_s = applied(stack, &importer.id, 81_001, n, t).await;

    eprintln!(
        "fairness 2/4: {} live changes on the idle stack",
        plan.live_changes
    );
    let idle = live_changes(stack, &live, "idle", 82_001, plan).await;

    eprintln!("fairness 3/4: the same live changes during an import of {n}");
    let t = Instant::now();
    let (_, loaded, beside_s) = tokio::join!(
        import(stack, &importer, "beside", 81_002, n),
        async {
            // Once the import's backlog is building.
            tokio::time::sleep(Duration::from_secs(2)).await;
            live_changes(stack, &live, "loaded", 82_002, plan).await
        },
        applied(stack, &importer.id, 81_002, n, t),
    );

    let m = plan.small_import_members;
    eprintln!("fairness 4/4: two importers at once, {n} and {m}");
    let shares = two_importers(stack, (&importer, n), (&small, m)).await;

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    json!({
        "two_ways": plan.two_ways,
        "import_members": n,
        "import_alone_changes_per_s": n as f64 / alone_s,
        "import_beside_live_changes_per_s": n as f64 / beside_s,
        "live_idle": percentiles(idle.visible.clone()),
        "live_during_import": percentiles(loaded.visible.clone()),
        "live_median_ratio_loaded_to_idle": median(&loaded.visible) / median(&idle.visible),
        "live_delivered_idle": percentiles(idle.delivered.clone()),
        "live_delivered_during_import": percentiles(loaded.delivered.clone()),
        "live_delivered_median_ratio_loaded_to_idle":
            median(&loaded.delivered) / median(&idle.delivered),
        "engine_write_idle": percentiles(idle.engine.clone()),
        "engine_write_during_import": percentiles(loaded.engine.clone()),
        "engine_median_ratio_loaded_to_idle": median(&loaded.engine) / median(&idle.engine),
        "engine_transaction_idle": percentiles(idle.engine_transaction.clone()),
        "engine_transaction_during_import": percentiles(loaded.engine_transaction.clone()),
        "engine_transaction_median_ratio_loaded_to_idle":
            median(&loaded.engine_transaction) / median(&idle.engine_transaction),
        "two_importers": shares,
    })
}

/// Step 4: both imports at once; each one's share of the members applied while both ran.
async fn two_importers(
    stack: &Stack,
    (big, n): (&Tenant, usize),
    (small, m): (&Tenant, usize),
) -> Value {
    let (big_aud, small_aud) = (81_003, 83_001);
    let watching = async {
        let t = Instant::now();
        let mut last = (0, 0);
        let mut both = (0, 0);
        let mut first_done = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = (
                stack.member_count(&big.id, big_aud).await,
                stack.member_count(&small.id, small_aud).await,
            );
            let done = (now.0 >= n as i64, now.1 >= m as i64);
            if first_done.is_none() {
                both.0 += now.0 - last.0;
                both.1 += now.1 - last.1;
                if done.0 || done.1 {
                    first_done = Some(t.elapsed().as_secs_f64());
                }
            }
            last = now;
            if done.0 && done.1 {
                return (both, first_done.unwrap_or(0.0), t.elapsed().as_secs_f64());
            }
        }
    };
    let (_, _, (both, first_s, all_s)) = tokio::join!(
        import(stack, big, "big", big_aud, n),
        import(stack, small, "small", small_aud, m),
        watching,
    );
    let total = (both.0 + both.1).max(1) as f64;
    json!({
        "sizes": [n, m],
        "applied_while_both_ran": [both.0, both.1],
        "share_while_both_ran": [both.0 as f64 / total, both.1 as f64 / total],
        "seconds_until_the_first_finished": first_s,
        "seconds_until_both_finished": all_s,
    })
}

/// An EventBridge client that takes every `PutEvents` at once without a stand-in behind it
/// (`FAIRNESS_BUS=instant`): the publisher's own cost (its stream reads and calls) without moto's,
/// to tell the two apart. Nothing is delivered, so delivery is not timed in such a run.
fn instant_bus_client() -> aws_sdk_eventbridge::Client {
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    #[derive(Debug, Clone)]
    struct Instant;
    impl HttpConnector for Instant {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let entries = request
                .body()
                .bytes()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|b| b["Entries"].as_array().map(Vec::len))
                .unwrap_or(0);
            let body = json!({"FailedEntryCount": 0,
                              "Entries": (0..entries).map(|i| json!({"EventId": format!("e-{i}")})).collect::<Vec<_>>()});
            let mut response = HttpResponse::new(
                200.try_into().expect("status"),
                SdkBody::from(body.to_string()),
            );
            response
                .headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            HttpConnectorFuture::ready(Ok(response))
        }
    }
    impl HttpClient for Instant {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }
    aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&shared::sdk::local_sdk_config(
            "http://127.0.0.1:9",
        ))
        .http_client(SharedHttpClient::new(Instant))
        .build(),
    )
}
