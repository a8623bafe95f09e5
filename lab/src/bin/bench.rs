//! `scripts/bench`: speed, capacity and footprint figures against DynamoDB Local.
//! Prints one table and writes the same figures as JSON (default `target/bench.json`).
//!
//! Env: DYNAMODB_ENDPOINT (required), BENCH_BIN_DIR (release binaries, default target/release),
//! BENCH_OUT. The workload is `lab::workload` (1,000 and 10,000 profiles, seed 42). By default it
//! runs the phases that finish within about 15 minutes here, saying which one it is in on stderr;
//! BENCH_FIRST_SYNC=1 adds the 100,000-member first sync and its one-bucket yardstick (the heat
//! table; 40 minutes or more on DynamoDB Local), BENCH_ONLY=parse|binaries|e2e|heat|fairness runs a part.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::stream::{self, StreamExt};
use lab::heat::{HeatReport, KeyHeat, key_pattern};
use lab::meter::{Meter, Reading, metered_client};
use serde_json::{Value, json};
use shared::config::Config;
use shared::domain::auth::generate_secret;
use shared::domain::batch::ChunkBuilder;
use shared::domain::changes::{ChangeAction, MembershipChange};
use shared::domain::protocol::{Request, parse_request, parse_request_into};
use shared::domain::region::Region;
use shared::stages::endpoint::Endpoint;
use shared::store::Store;
use shared::store::clients::RegionalClients;
use shared::store::tables::{Table, TableNames, create_tables};

const CALLER: &str = "bench-caller-token-000000";

/// The system allocator, counting live heap bytes and their high-water mark, so the bench can say
/// how much memory one step itself needs (independent of what the process held before).
struct CountingAlloc;

static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Heap bytes `step` needs at its peak above what was live when it started (single-threaded use).
fn peak_heap_of<R>(step: impl FnOnce() -> R) -> (R, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let base = LIVE_BYTES.load(Relaxed);
    PEAK_BYTES.store(base, Relaxed);
    let out = step();
    (out, PEAK_BYTES.load(Relaxed).saturating_sub(base))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

struct Bench {
    client: aws_sdk_dynamodb::Client,
    meter: Meter,
    store: Store,
    names: TableNames,
    project: Value,
    project_id: String,
    endpoint_url: String,
}

fn attr_json(v: &AttributeValue) -> Value {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b.as_ref())}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::L(l) => json!({"L": l.iter().map(attr_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => {
            json!({"M": m.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect::<serde_json::Map<_, _>>()})
        }
        _ => Value::Null,
    }
}

fn stream_event(
    items: &[HashMap<String, AttributeValue>],
    table: &str,
    event_name: &str,
) -> String {
    let records: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            json!({
                "eventID": format!("e{i}"), "eventName": event_name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                "awsRegion": "ddblocal",
                "dynamodb": {"Keys": {"pk": attr_json(&item["pk"]), "sk": attr_json(&item["sk"])},
                             "NewImage": item.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect::<serde_json::Map<_, _>>(),
                             "SequenceNumber": format!("{:021}", i + 1), "SizeBytes": 1, "StreamViewType": "NEW_IMAGE"},
                "eventSourceARN": format!("arn:aws:dynamodb:ddblocal:000000000000:table/{table}/stream/2026-01-01T00:00:00.000"),
            })
        })
        .collect();
    json!({"Records": records}).to_string()
}

impl Bench {
    fn with_account(&self, mut body: Value, id: &str) -> String {
        body["account"] = self.project.clone();
        body["id"] = Value::from(id);
        body.to_string()
    }

    /// The stored chunks of one message: chunk 0 tells how many there are; each is read by its
    /// key (chunks of one message are spread over the project's lanes).
    async fn rows(&self, message_id: &str) -> Vec<HashMap<String, AttributeValue>> {
        use shared::store::keys::inbox;
        let table = self.names.name(Region::Eu1, Table::Inbox);
        let get = |chunk: u32| {
            self.client
                .get_item()
                .table_name(&table)
                .key(
                    "pk",
                    AttributeValue::S(inbox::pk(&self.project_id, message_id, chunk)),
                )
                .key("sk", AttributeValue::S(inbox::sk(message_id, chunk)))
                .consistent_read(true)
                .send()
        };
        let Some(first) = get(0).await.unwrap().item else {
            return Vec::new();
        };
        let count: u32 = first["chunk_count"].as_n().unwrap().parse().unwrap();
        let mut rows = vec![first];
        for chunk in 1..count {
            rows.extend(get(chunk).await.unwrap().item);
        }
        rows
    }
}

/// CPU seconds (user + system) used so far by the processes whose command line contains
/// `needle` (Linux `/proc`; clock ticks of 1/100 s).
fn cpu_seconds_of(needle: &str) -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            total += stat_cpu_seconds(&dir.join("stat"));
        }
    }
    total
}

/// utime + stime of one `/proc/<pid>/stat` file, in seconds.
fn stat_cpu_seconds(path: &std::path::Path) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    (fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0)) as f64 / 100.0
}

/// CPU seconds of this process and of DynamoDB Local, to tell which one a run waited on.
fn cpu_split() -> (f64, f64) {
    (
        stat_cpu_seconds(std::path::Path::new("/proc/self/stat")),
        cpu_seconds_of("DynamoDBLocal"),
    )
}

async fn raw_floor(client: &aws_sdk_dynamodb::Client, table: &str, n: usize) -> f64 {
    let start = Instant::now();
    let batches: Vec<Vec<WriteRequest>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(25)
        .map(|c| {
            c.iter()
                .map(|i| {
                    let item = HashMap::from([
                        ("pk".to_owned(), AttributeValue::S(format!("floor#{i}"))),
                        ("sk".to_owned(), AttributeValue::S(format!("__{:032x}", i))),
                        ("member".to_owned(), AttributeValue::Bool(true)),
                        (
                            "version".to_owned(),
                            AttributeValue::S(format!("{:013}#m#{:06}#0000", 1, i)),
                        ),
                    ]);
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                        .build()
                })
                .collect()
        })
        .collect();
    stream::iter(batches)
        .map(|b| {
            let client = client.clone();
            let table = table.to_owned();
            async move {
                let mut pending = b;
                while !pending.is_empty() {
                    let out = client
                        .batch_write_item()
                        .request_items(&table, pending)
                        .send()
                        .await
                        .unwrap();
                    pending = out
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&table))
                        .unwrap_or_default();
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    start.elapsed().as_secs_f64()
}

/// Spawns a function binary against the emulated Runtime API; returns (cold start ms, peak RSS KiB, ok).
async fn run_binary(
    path: &str,
    name: &str,
    event: Option<String>,
    env: &[(&str, String)],
) -> (f64, Option<u64>, bool) {
    let (addr, state) = lab::runtime_api::start(event.clone()).await.unwrap();
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(path);
    cmd.env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{path}: {e}"));
    let pid = child.id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready = None;
    loop {
        {
            let s = state.lock().unwrap();
            if ready.is_none() {
                ready = s
                    .ready_at
                    .map(|t| t.duration_since(started).as_secs_f64() * 1000.0);
            }
            if ready.is_some() && (event.is_none() || s.answered_at.is_some()) {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        });
    let ok = {
        let s = state.lock().unwrap();
        event.is_none() || (s.response.is_some() && s.error.is_none())
    };
    let _ = child.kill().await;
    (ready.unwrap_or(f64::NAN), rss, ok)
}

/// Says which phase the bench is in, and how long it has run, as it goes (stderr).
fn announce(started: &Instant, phase: &str) {
    eprintln!(
        "bench [{:>6.1} min] {phase}",
        started.elapsed().as_secs_f64() / 60.0
    );
}

#[tokio::main]
async fn main() {
    // RUST_LOG=warn shows what the stages log while the bench drives them (stderr).
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // BENCH_PRINT=<bench.json>: print the table of an earlier run, run nothing.
    if let Ok(path) = std::env::var("BENCH_PRINT") {
        let text = std::fs::read_to_string(&path).expect("the bench file");
        let report: Value = serde_json::from_str(&text).expect("bench JSON");
        print_table(report.as_object().expect("a JSON object"));
        return;
    }
    let bench_started = Instant::now();
    let endpoint_url = std::env::var("DYNAMODB_ENDPOINT").expect("DYNAMODB_ENDPOINT");
    let batch1k: Value = lab::workload::membership_batch(1_000, 42);
    let batch10k: Value = lab::workload::membership_batch(10_000, 42);
    let bin_dir = std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into());
    let out_path = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench.json".into());

    let meter = Meter::default();
    let client = metered_client(&endpoint_url, meter.clone());
    let names = TableNames::new(format!("bench{}", &generate_secret()[..6]));
    create_tables(&client, &names, Region::Eu1).await.unwrap();
    let store = Store::for_local_stack(RegionalClients::single(client.clone()), names.clone());
    let project_id: String = "BENCH-EU1".to_owned();
    let (passcode, token) = local::provision_project(&store, Region::Eu1, &project_id)
        .await
        .unwrap();
    let b = Bench {
        client: client.clone(),
        meter: meter.clone(),
        store: store.clone(),
        names: names.clone(),
        project: json!({"account_id": 1, "account_settings": {"accountId": project_id, "passcode": passcode, "accountToken": token, "region": "eu1"}}),
        project_id: project_id.clone(),
        endpoint_url: endpoint_url.clone(),
    };
    let prefix = names.prefix().to_owned();
    let config = local::local_config(&names, &endpoint_url, CALLER, &[]);
    let endpoint = Endpoint::new(&config, store.clone());
    let auth = format!("Token {CALLER}");
    let mut report = serde_json::Map::new();

    // BENCH_ONLY=fairness: live changes beside another project's import (lab::fairness).
    if std::env::var("BENCH_ONLY").as_deref() == Ok("fairness") {
        let plan = lab::fairness::Plan::from_env();
        // Unmetered: the key meter's extra reads would slow the import it measures.
        let unmetered =
            aws_sdk_dynamodb::Client::new(&shared::sdk::local_sdk_config(&endpoint_url));
        // One way per engine: DynamoDB Local keeps every stream record it ever held (dropping a
        // table does not free them) and slows with them, so `scripts/bench` runs the yardstick
        // (FAIRNESS_ONE_WAY=1: every request live, as before the bulk way) and the two ways each
        // on a fresh DynamoDB Local, one after the other.
        let figures = lab::fairness::run(&unmetered, &endpoint_url, plan).await;
        let key = if plan.two_ways { "two_ways" } else { "one_way" };
        let text = serde_json::to_string_pretty(&json!({ "fairness": { key: figures } })).unwrap();
        std::fs::write(&out_path, &text).expect("writes the bench file");
        println!("{text}");
        return;
    }

    announce(&bench_started, "1/6 parse and authorize CPU (no DynamoDB)");
    // 1. Parse and authorize CPU (no DynamoDB).
    let body1k = b.with_account(batch1k.clone(), "parse");
    let body10k = b.with_account(batch10k.clone(), "parse10k");
    let mut parse = Vec::new();
    let mut cpu = Vec::new();
    // The yardstick, interleaved with our parse so both see the same machine: serde_json merely
    // reading and validating the same bytes (IgnoredAny), the floor of any serde_json-based parse.
    let mut floor = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        serde_json::from_slice::<serde::de::IgnoredAny>(body1k.as_bytes()).unwrap();
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let req = parse_request(body1k.as_bytes()).unwrap();
        parse.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(req);
        // authorize's path: the profiles streamed into the chunk builder as they are parsed.
        let t = Instant::now();
        match parse_request_into(body1k.as_bytes(), ChunkBuilder::new()).unwrap() {
            Request::AudienceMembershipChange(m) => {
                m.user_profiles.unwrap().finish().unwrap();
            }
            _ => unreachable!("a membership request"),
        }
        cpu.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (parse_p50, parse_p99) = stats(parse);
    let (floor_p50, _) = stats(floor);
    let (cpu_p50, cpu_p99) = stats(cpu);
    let mut parse10k = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        parse_request(body10k.as_bytes()).unwrap();
        parse10k.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report.insert(
        "parse_1k_ms".into(),
        json!({"p50": parse_p50, "p99": parse_p99, "bytes": body1k.len(),
               "ignored_any_p50": floor_p50, "ratio_to_ignored_any": parse_p50 / floor_p50}),
    );
    report.insert(
        "parse_10k_ms".into(),
        json!({"p50": stats(parse10k).0, "bytes": body10k.len()}),
    );
    // What authorize's own work holds at its peak on the 10,000-profile request (the body aside):
    // profiles streamed into the chunk builder, against the same parse collecting every profile
    // first (the way authorize worked before) and then chunking.
    let (_, streamed_heap) = peak_heap_of(|| {
        match parse_request_into(body10k.as_bytes(), ChunkBuilder::new()).unwrap() {
            Request::AudienceMembershipChange(m) => m.user_profiles.unwrap().finish().unwrap(),
            _ => unreachable!("a membership request"),
        }
    });
    let (_, collected_heap) = peak_heap_of(|| match parse_request(body10k.as_bytes()).unwrap() {
        Request::AudienceMembershipChange(m) => {
            shared::domain::batch::build_chunks(&m.user_profiles.unwrap()).unwrap()
        }
        _ => unreachable!("a membership request"),
    });
    report.insert(
        "authorize_heap_10k_kib".into(),
        json!({"streamed": streamed_heap / 1024, "collected_then_chunked": collected_heap / 1024,
               "body_kib": body10k.len() / 1024}),
    );
    report.insert("authorize_cpu_1k_ms".into(), json!({"p50": cpu_p50, "p99": cpu_p99, "what": "parse + chunk + compress, excluding DynamoDB"}));

    if std::env::var("BENCH_ONLY").as_deref() == Ok("binaries") {
        let bins = binaries(&b, &batch10k, &auth, &bin_dir, &endpoint_url, &prefix).await;
        report.insert("binaries".into(), Value::Object(bins));
    }
    if matches!(
        std::env::var("BENCH_ONLY").as_deref(),
        Ok("parse" | "binaries")
    ) {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(report)).unwrap()
        );
        return;
    }

    // BENCH_ONLY=e2e: the end-to-end phase alone (its write units per add), a few minutes.
    let only_e2e = std::env::var("BENCH_ONLY").as_deref() == Ok("e2e");
    if !only_e2e {
        announce(&bench_started, "2/6 ingest: 60 requests of 1,000 profiles");
        // 2. Ingest: the whole handler including the durable write.
        let mut ingest = Vec::new();
        let before = meter.read();
        let n_ingest = 60;
        for i in 0..n_ingest {
            let body = b.with_account(batch1k.clone(), &format!("ingest-{i}"));
            let t = Instant::now();
            let r = endpoint.handle("POST", Some(&auth), body.as_bytes()).await;
            assert_eq!(r.status, 200, "{}", r.body);
            ingest.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let used = meter.read() - before;
        let (ingest_p50, ingest_p99) = stats(ingest);
        report.insert(
        "ingest_1k_ms".into(),
        json!({"p50": ingest_p50, "p99": ingest_p99, "wcu_per_request": used.wcu / n_ingest as f64, "requests_per_request": used.requests as f64 / n_ingest as f64}),
    );

        announce(&bench_started, "3/6 resolve: 1,000 profiles, half existing");
        // 3. Resolve: 1,000 profiles, half of them already existing.
        let profiles = batch1k["user_profiles"].as_array().unwrap().clone();
        let mut warm = batch1k.clone();
        warm["user_profiles"] = Value::Array(profiles[..500].to_vec());
        let warm_body = b.with_account(warm, "resolve-warm");
        endpoint
            .handle("POST", Some(&auth), warm_body.as_bytes())
            .await;
        for row in b.rows("resolve-warm").await {
            let row = shared::store::rows::inbox::row(row).unwrap();
            shared::stages::resolve::resolve_chunk(&store, Region::Eu1, &row)
                .await
                .unwrap();
        }
        let full_body = b.with_account(batch1k.clone(), "resolve-full");
        endpoint
            .handle("POST", Some(&auth), full_body.as_bytes())
            .await;
        let rows: Vec<shared::ports::inbox::InboxRow> = b
            .rows("resolve-full")
            .await
            .into_iter()
            .map(|r| shared::store::rows::inbox::row(r).unwrap())
            .collect();
        let before = meter.read();
        let t = Instant::now();
        let reports = futures::future::join_all(
            rows.iter()
                .map(|r| shared::stages::resolve::resolve_chunk(&store, Region::Eu1, r)),
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        let used = meter.read() - before;
        let resolved_changes: usize = reports.into_iter().map(|r| r.unwrap().changes.len()).sum();
        report.insert(
        "resolve_1k_half_existing".into(),
        json!({"profiles_per_s": 1000.0 / secs, "seconds": secs, "requests_per_profile": used.requests as f64 / 1000.0,
               "rcu_per_profile": used.rcu / 1000.0, "wcu_per_profile": used.wcu / 1000.0, "changes": resolved_changes}),
    );

        announce(
            &bench_started,
            "4/6 materialize: 10,000 adds, one segment then 100",
        );
        // 4. Materialize: 10,000 adds into one segment, and spread over 100 segments.
        for (label, segments) in [
            ("materialize_10k_one_segment", 1i64),
            ("materialize_10k_100_segments", 100),
        ] {
            let changes: Vec<MembershipChange> = (0..10_000u32)
                .map(|i| MembershipChange {
                    clevertap_id: format!("__{label}{i:08}"),
                    identity: None,
                    audience_id: 50_000 + (i as i64 % segments),
                    audience_name: Some("Bench".into()),
                    action: ChangeAction::Add,
                    ts_ms: 1_000,
                    message_id: format!("{label}-{}", i / 500),
                    profile_index: i % 500,
                    entry_index: 0,
                    received_ms: None,
                    way: Default::default(),
                })
                .collect();
            let before = meter.read();
            let t = Instant::now();
            stream::iter(changes.chunks(500))
                .map(|c| {
                    shared::stages::materialize::materialize_changes(
                        &store,
                        Region::Eu1,
                        &project_id,
                        c,
                    )
                })
                .buffer_unordered(4)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .for_each(|r| assert_eq!(r.unwrap().added, 500));
            let secs = t.elapsed().as_secs_f64();
            let used = meter.read() - before;
            report.insert(label.into(), json!({"changes_per_s": 10_000.0 / secs, "seconds": secs, "wcu_per_change": used.wcu / 10_000.0,
                                             "requests_per_change": used.requests as f64 / 10_000.0}));
        }
    }
    announce(
        &bench_started,
        "5/6 end to end: 10,000 adds, new then existing profiles, key-metered (about 3 minutes)",
    );
    // 5. End to end: 10,000 membership adds through authorize → resolve → materialize, new profiles
    //    then the same users again (existing profiles) into another segment; and the raw floor.
    //    Every call is charged to its partition keys (the key meter, `lab::key_meter`), and the
    //    same workload runs on a yardstick stack whose segments have one bucket each (today's
    //    layout before buckets), in the same run.
    let bulk_queue = shared::bulk::LocalBulkQueue::default();
    let mut rig = Rig {
        names: names.clone(),
        store: store.clone(),
        endpoint: Endpoint::new(&config, store.clone()),
        pipeline: local::pipeline::LocalPipeline::new(
            &client,
            &endpoint_url,
            store.clone(),
            names.clone(),
            &[Region::Eu1],
        )
        .await
        .unwrap()
        // The bulk way's workers, idle until the endpoint queues (the "existing_bulk" phase).
        .with_bulk(bulk_queue.clone(), 1),
        account: b.project.clone(),
    };
    rig.pipeline.run_until_idle(200).await.unwrap();
    let mut e2e = serde_json::Map::new();
    for (tag, aud) in [("new", 70_001i64), ("existing", 70_002)] {
        let phase = rig
            .phase(&meter, &auth, Sends::one_by_one(tag, "e2e", aud, 10))
            .await;
        e2e.insert(tag.into(), phase.json(10_000));
    }
    // The "existing" phase's requests again (the same users, existing profiles, into another
    // segment) the bulk way, as 1,000-profile requests go on AWS (over `LIVE_MAX_PROFILES`): the
    // difference to "existing" is what the queue, the bulk worker and import progress cost per
    // add.
    rig.endpoint = Endpoint::new(&config, store.clone())
        .with_bulk_queue(shared::bulk::BulkQueue::Local(bulk_queue.clone()));
    let phase = rig
        .phase(&meter, &auth, Sends::one_by_one("bulk", "e2e", 70_003, 10))
        .await;
    e2e.insert("existing_bulk".into(), phase.json(10_000));
    rig.endpoint = Endpoint::new(&config, store.clone());
    let floor = raw_floor(
        &client,
        &names.name(Region::Eu1, Table::Memberships),
        10_000,
    )
    .await;
    let new_secs = e2e["new"]["seconds"].as_f64().unwrap();
    e2e.insert("raw_batch_write_floor_seconds".into(), json!(floor));
    e2e.insert("ratio_new_to_floor".into(), json!(new_secs / floor));
    e2e.insert(
        "ratio_existing_to_floor".into(),
        json!(e2e["existing"]["seconds"].as_f64().unwrap() / floor),
    );
    report.insert("end_to_end_10k".into(), Value::Object(e2e));
    if only_e2e {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(report)).unwrap()
        );
        return;
    }

    // 5a. The engage feed (with the EventBridge stand-in: EVENTBRIDGE_ENDPOINT, which scripts/bench
    //     starts): the publisher is attached, the events of the phases above go out as a backlog,
    //     then the same 10,000 existing users join another segment with the publisher on; its time
    //     against the "existing" phase above (same run, no publisher) is what the feed adds.
    if let Ok(eb) = std::env::var("EVENTBRIDGE_ENDPOINT") {
        announce(
            &bench_started,
            "5a/6 the engage feed: backlog, then 10,000 adds with the publisher on",
        );
        let publish = engage_feed(&mut rig, &meter, &auth, &eb, &report).await;
        report.insert("publish".into(), publish);
    }

    // 5b. Scaling: 10,000 adds of new profiles end to end with 1, 2, 4 and 8 lanes, against the
    //     raw floor measured just above in the same run.
    if std::env::var("BENCH_ONLY").as_deref() != Ok("heat") {
        announce(
            &bench_started,
            "5b/6 lanes: 10,000 adds with 1, 2, 4 and 8 lanes",
        );
        let mut scaling = Vec::new();
        for lanes in [1usize, 2, 4, 8] {
            rig.pipeline.set_lanes(lanes);
            let aud = 71_000 + lanes as i64;
            let who = format!("lanes{lanes}");
            let (own0, ddb0) = cpu_split();
            let phase = rig
                .phase(&meter, &auth, Sends::one_by_one(&who, &who, aud, 10))
                .await;
            let secs = phase.seconds;
            let (own1, ddb1) = cpu_split();
            scaling.push(
                json!({"lanes": lanes, "seconds": secs, "changes_per_s": 10_000.0 / secs,
                                "ratio_to_floor": secs / floor, "conflicts": phase.used.conflicts,
                                "cancelled_transactions": phase.used.cancelled_transactions,
                                "wcu_per_add": phase.used.wcu / 10_000.0,
                                "dynamodb_local_cores": (ddb1 - ddb0) / secs,
                                "bench_cores": (own1 - own0) / secs}),
            );
        }
        report.insert("scaling_10k_new".into(), Value::Array(scaling));
    }

    // 5c. A first sync: 100,000 members of one audience as 100 concurrent 1,000-profile
    //     requests, through the pipeline with the default lanes; then the same on the one-bucket
    //     yardstick. The key meter's figures of the first sync are the heat table.
    let first_sync = match std::env::var("BENCH_FIRST_SYNC").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        // The heat table is the first sync's: a heat run has it unless told otherwise.
        _ => std::env::var("BENCH_ONLY").as_deref() == Ok("heat"),
    };
    if first_sync {
        announce(
            &bench_started,
            "5c/6 first sync: 100,000 members, then the one-bucket yardstick (opt-in, BENCH_FIRST_SYNC=1; 40 minutes or more)",
        );
        rig.pipeline.set_lanes(local::streams::lanes_from_env());
        let aud = 72_000;
        // BENCH_FIRST_SYNC_REQUESTS (100) shortens it for a quick look.
        let requests: usize = std::env::var("BENCH_FIRST_SYNC_REQUESTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let changes = requests as u64 * 1_000;
        let ours = rig
            .phase(
                &meter,
                &auth,
                Sends::at_once("first-sync", "first", aud, requests),
            )
            .await;
        // The yardstick: its own tables, whose segments get one bucket (today's keys before
        // buckets), made and driven right away (a local pipeline left idle a long time stopped
        // seeing its stream here), on the same workloads as ours but smaller:
        // BENCH_YARDSTICK_REQUESTS (2) requests of 1,000. On DynamoDB Local one bucket is slow
        // for a reason AWS does not have (concurrent transactions on one partition key conflict
        // there: ≈ 300 changes/min measured, which would make a 100,000-member yardstick take
        // hours); units are per change, so the heat is the same on a smaller sample, and times
        // are compared per change.
        let yard_requests: usize = std::env::var("BENCH_YARDSTICK_REQUESTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        let yard_changes = yard_requests as u64 * 1_000;
        let mut one_bucket = Rig::new(&client, &endpoint_url, 1).await;
        one_bucket.pipeline.run_until_idle(5).await.unwrap();
        let yardstick = one_bucket
            .phase(
                &meter,
                &auth,
                Sends::one_by_one("new", "e2e", 70_001, yard_requests),
            )
            .await;
        let e2e_new = report["end_to_end_10k"]["new"]["seconds"]
            .as_f64()
            .unwrap_or(f64::NAN);
        report["end_to_end_10k"]["one_bucket_new"] = yardstick.json(yard_changes);
        // Seconds per change, ours to one bucket's (below 1: ours is faster).
        report["end_to_end_10k"]["ratio_new_to_one_bucket_per_change"] =
            json!((e2e_new / 10_000.0) / (yardstick.seconds / yard_changes as f64));
        let theirs = one_bucket
            .phase(
                &meter,
                &auth,
                Sends::at_once("first-sync", "first", aud, yard_requests),
            )
            .await;
        let mut first = ours.json(changes);
        first["lanes"] = json!(local::streams::lanes_from_env());
        first["one_bucket"] = theirs.json(yard_changes);
        first["ratio_to_one_bucket_per_change"] =
            json!((ours.seconds / changes as f64) / (theirs.seconds / yard_changes as f64));
        report.insert("first_sync_100k".into(), first);
        report.insert(
            "heat".into(),
            heat_json(&ours.heat, &theirs.heat, "BENCH-EU1"),
        );
    }

    announce(
        &bench_started,
        "6/6 function binaries: size, cold start, peak RSS",
    );
    // 6. Function binaries: size, cold start, peak RSS on the 10,000-profile request
    //    (not in a heat-only run: BENCH_ONLY=heat).
    if std::env::var("BENCH_ONLY").as_deref() != Ok("heat") {
        let bins = binaries(&b, &batch10k, &auth, &bin_dir, &endpoint_url, &prefix).await;
        report.insert("binaries".into(), Value::Object(bins));
    }
    let _ = (&b.store, &b.meter, &b.endpoint_url);

    // The figures are kept first, whatever printing them does.
    std::fs::write(
        &out_path,
        serde_json::to_string_pretty(&Value::Object(report.clone())).unwrap(),
    )
    .unwrap();
    print_table(&report);
    eprintln!("\nwrote {out_path}");
    let _ = Arc::new(());
}

fn print_table(r: &serde_json::Map<String, Value>) {
    let f = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| v.to_string())
    };
    println!("\n{:<44} {:>14} {:>14}  target", "measure", "value", "p99");
    let row = |name: &str, v: &Value, p99: &Value, target: &str| {
        println!("{name:<44} {:>14} {:>14}  {target}", f(v), f(p99))
    };
    row(
        "parse 1k request (ms)",
        &r["parse_1k_ms"]["p50"],
        &r["parse_1k_ms"]["p99"],
        "<= 1.5 ms median",
    );
    row(
        "serde_json IgnoredAny on the same bytes (ms)",
        &r["parse_1k_ms"]["ignored_any_p50"],
        &Value::Null,
        "yardstick, same run",
    );
    row(
        "parse / IgnoredAny",
        &r["parse_1k_ms"]["ratio_to_ignored_any"],
        &Value::Null,
        "<= 2",
    );
    row(
        "parse 10k request (ms)",
        &r["parse_10k_ms"]["p50"],
        &Value::Null,
        "",
    );
    row(
        "authorize CPU excl. DynamoDB, 1k (ms)",
        &r["authorize_cpu_1k_ms"]["p50"],
        &r["authorize_cpu_1k_ms"]["p99"],
        "<= 3 ms median",
    );
    row(
        "authorize heap at peak, 10k request, body aside (KiB): streamed / collected",
        &r["authorize_heap_10k_kib"]["streamed"],
        &r["authorize_heap_10k_kib"]["collected_then_chunked"],
        "",
    );
    row(
        "ingest 1k incl. durable write (ms)",
        &r["ingest_1k_ms"]["p50"],
        &r["ingest_1k_ms"]["p99"],
        "< 100 ms p99",
    );
    row(
        "ingest WCU per 1k request",
        &r["ingest_1k_ms"]["wcu_per_request"],
        &Value::Null,
        "",
    );
    let res = &r["resolve_1k_half_existing"];
    let publish = &r["publish"];
    if publish.is_object() {
        row(
            "publish lag, recorded to PutEvents (ms)",
            &publish["lag_p50_ms"],
            &publish["lag_p99_ms"],
            "p99 <= 1,000 ms",
        );
        row(
            "  of which stream read: recorded to read (ms)",
            &publish["read_lag_p50_ms"],
            &publish["read_lag_p99_ms"],
            "",
        );
        row(
            "  transactions' commit, same changes (ms)",
            &publish["transaction_commit_p50_ms"],
            &publish["transaction_commit_p99_ms"],
            "",
        );
        row(
            "  one poll of the events stream (ms)",
            &publish["stream_poll_p50_ms"],
            &publish["stream_poll_p99_ms"],
            "",
        );
        row(
            "  changes written per second meanwhile",
            &publish["unmetered_events_per_s"],
            &Value::Null,
            "",
        );
        row(
            "publish lag, key-metered run (ms)",
            &publish["lag_p50_ms_key_metered"],
            &publish["lag_p99_ms_key_metered"],
            "",
        );
        row(
            "e2e 10k existing, publisher on / off (same run)",
            &publish["ratio_with_to_without_publisher"],
            &Value::Null,
            "<= 1.2",
        );
    }
    row(
        "resolve profiles/s (1k, half existing)",
        &res["profiles_per_s"],
        &Value::Null,
        "",
    );
    row(
        "resolve requests per profile",
        &res["requests_per_profile"],
        &Value::Null,
        "",
    );
    row(
        "resolve RCU per profile",
        &res["rcu_per_profile"],
        &Value::Null,
        "",
    );
    row(
        "resolve WCU per profile",
        &res["wcu_per_profile"],
        &Value::Null,
        "",
    );
    for k in [
        "materialize_10k_one_segment",
        "materialize_10k_100_segments",
    ] {
        row(
            &format!("{k} changes/s"),
            &r[k]["changes_per_s"],
            &Value::Null,
            "",
        );
        row(
            &format!("{k} WCU/change"),
            &r[k]["wcu_per_change"],
            &Value::Null,
            "",
        );
    }
    let e = &r["end_to_end_10k"];
    row(
        "e2e 10k adds, new profiles (s)",
        &e["new"]["seconds"],
        &Value::Null,
        "",
    );
    row(
        "e2e 10k adds, existing profiles (s)",
        &e["existing"]["seconds"],
        &Value::Null,
        "",
    );
    row(
        "raw BatchWriteItem floor, 10k items (s)",
        &e["raw_batch_write_floor_seconds"],
        &Value::Null,
        "",
    );
    row(
        "e2e / floor (new profiles)",
        &e["ratio_new_to_floor"],
        &Value::Null,
        "<= 4",
    );
    row(
        "e2e / floor (existing profiles)",
        &e["ratio_existing_to_floor"],
        &Value::Null,
        "<= 3",
    );
    row(
        "WCU per add, new profile (all stages)",
        &e["new"]["wcu_per_add"],
        &Value::Null,
        "<= 6.5",
    );
    row(
        "WCU per add, existing profile (all stages)",
        &e["existing"]["wcu_per_add"],
        &Value::Null,
        "<= 4.5",
    );
    row(
        "WCU per add incl. index entries, new profile",
        &e["new"]["wcu_per_add_with_indexes"],
        &Value::Null,
        "<= 8",
    );
    row(
        "WCU per add incl. index entries, existing profile",
        &e["existing"]["wcu_per_add_with_indexes"],
        &Value::Null,
        "<= 5.5",
    );
    row(
        "WCU per add incl. index entries, existing profile, bulk way",
        &e["existing_bulk"]["wcu_per_add_with_indexes"],
        &Value::Null,
        "<= 5.5",
    );
    row(
        "e2e new, one bucket per segment (changes/s)",
        &e["one_bucket_new"]["changes_per_s"],
        &Value::Null,
        "yardstick, same run",
    );
    row(
        "e2e new / one bucket, seconds per change",
        &e["ratio_new_to_one_bucket_per_change"],
        &Value::Null,
        "<= 1.1",
    );
    if let Some(rows) = r.get("scaling_10k_new").and_then(Value::as_array) {
        println!(
            "\n{:<6} {:>9} {:>10} {:>8} {:>10} {:>12} {:>15} {:>12}",
            "lanes",
            "seconds",
            "changes/s",
            "/ floor",
            "conflicts",
            "WCU per add",
            "DDB Local cores",
            "bench cores"
        );
        for s in rows {
            let num = |k: &str| s[k].as_f64().unwrap_or(0.0);
            println!(
                "{:<6} {:>9.2} {:>10.0} {:>8.2} {:>10} {:>12.2} {:>15.2} {:>12.2}",
                s["lanes"],
                num("seconds"),
                num("changes_per_s"),
                num("ratio_to_floor"),
                s["conflicts"],
                num("wcu_per_add"),
                num("dynamodb_local_cores"),
                num("bench_cores")
            );
        }
        println!();
    }
    // Absent unless the first sync ran (BENCH_FIRST_SYNC=1).
    if let Some(fs) = r.get("first_sync_100k") {
        row(
            "first sync 100k members, 100 requests (s)",
            &fs["seconds"],
            &Value::Null,
            "",
        );
        row(
            "first sync: all requests answered (s)",
            &fs["accepted_seconds"],
            &Value::Null,
            "",
        );
        row(
            "first sync changes/s",
            &fs["changes_per_s"],
            &Value::Null,
            "",
        );
        row(
            "first sync member_count",
            &fs["member_count"],
            &Value::Null,
            "100000",
        );
        row(
            "first sync transaction conflicts retried",
            &fs["conflicts"],
            &Value::Null,
            "",
        );
        row(
            "first sync WCU per add",
            &fs["wcu_per_add"],
            &Value::Null,
            "",
        );
        row(
            "first sync, one bucket per segment (changes/s)",
            &fs["one_bucket"]["changes_per_s"],
            &Value::Null,
            "yardstick, same run",
        );
        row(
            "first sync / one bucket, seconds per change",
            &fs["ratio_to_one_bucket_per_change"],
            &Value::Null,
            "<= 1.1",
        );
    }
    if let Some(h) = r.get("heat") {
        row(
            "hottest key load at 17,000 changes/s",
            &h["max_key_load"],
            &Value::Null,
            "<= 0.8",
        );
        row(
            "hottest key load, one bucket per segment",
            &h["one_bucket"]["max_key_load"],
            &Value::Null,
            "yardstick, same run",
        );
        let fs = &r["first_sync_100k"];
        for (title, targets, members) in [
            ("buckets", &h["targets"], &fs["changes"]),
            (
                "one bucket",
                &h["one_bucket"]["targets"],
                &fs["one_bucket"]["changes"],
            ),
        ] {
            println!(
                "\nheat, first sync of {members} members ({title}): per table and index, its hottest key"
            );
            println!(
                "{:<24} {:>7} {:<34} {:>9} {:>9} {:>7} {:>12}",
                "table/index", "keys", "hottest key", "W/change", "R/change", "load", "worst 10k"
            );
            for t in targets.as_array().into_iter().flatten() {
                let num = |k: &str| t[k].as_f64().unwrap_or(0.0);
                println!(
                    "{:<24} {:>7} {:<34} {:>9.4} {:>9.4} {:>7.3} {:>12.3}",
                    t["target"].as_str().unwrap_or_default(),
                    t["keys"],
                    t["key_pattern"].as_str().unwrap_or_default(),
                    num("wcu_per_change"),
                    num("rcu_per_change"),
                    num("load"),
                    num("worst_window_load")
                );
            }
        }
        println!();
    }
    if let Some(bins) = r.get("binaries").and_then(Value::as_object) {
        for (name, v) in bins {
            row(
                &format!("{name}: release size (MiB)"),
                &json!(v["size_bytes"].as_f64().unwrap_or(0.0) / 1048576.0),
                &Value::Null,
                "",
            );
            row(
                &format!("{name}: cold start to ready (ms)"),
                &v["cold_start_ms_p50"],
                &Value::Null,
                "<= 25 ms",
            );
            if !v["peak_rss_kib_10k"].is_null() {
                let target = if name == "authorize" {
                    "<= 32 MiB"
                } else {
                    "<= 64 MiB"
                };
                row(
                    &format!("{name}: peak RSS, 10k batch (MiB)"),
                    &json!(v["peak_rss_kib_10k"].as_f64().unwrap_or(0.0) / 1024.0),
                    &Value::Null,
                    target,
                );
                row(
                    &format!("{name}: 10k invocation answered"),
                    &v["handled_ok"],
                    &Value::Null,
                    "",
                );
            }
        }
    }
}

/// Each function binary against the emulated Runtime API: size, cold start to ready, and peak RSS
/// handling the 10,000-profile request (authorize stores it; resolve and materialize then get its
/// stream records).
async fn binaries(
    b: &Bench,
    batch10k: &Value,
    auth: &str,
    bin_dir: &str,
    endpoint_url: &str,
    prefix: &str,
) -> serde_json::Map<String, Value> {
    let env = vec![
        ("DYNAMODB_ENDPOINT", endpoint_url.to_owned()),
        ("TABLE_PREFIX", prefix.to_owned()),
        ("MPARTICLE_CALLER_TOKEN", CALLER.to_owned()),
        ("CT_REGION", "eu1".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "local".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
    ];
    let body = b.with_account(batch10k.clone(), "rss-10k");
    // mParticle sends JSON text, so API Gateway passes the body as text, not base64.
    let mut apigw: Value = serde_json::from_str(&local::server::api_gateway_event(
        "POST",
        "/mparticle",
        "",
        &HashMap::from([("authorization".to_owned(), auth.to_owned())]),
        b"",
    ))
    .unwrap();
    apigw["body"] = Value::String(body.clone());
    apigw["isBase64Encoded"] = Value::Bool(false);
    let apigw = apigw.to_string();
    let mut bins = serde_json::Map::new();
    for name in ["authorize", "resolve", "materialize", "query"] {
        let path = format!("{bin_dir}/{name}");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut colds = Vec::new();
        for _ in 0..5 {
            colds.push(run_binary(&path, name, None, &env).await.0);
        }
        let event = match name {
            "authorize" => Some(apigw.clone()),
            "resolve" => {
                let rows = b.rows("rss-10k").await;
                Some(stream_event(
                    &rows,
                    &b.names.name(Region::Eu1, Table::Inbox),
                    "INSERT",
                ))
            }
            "materialize" => {
                let rows = b.rows("rss-10k").await;
                Some(stream_event(
                    &rows,
                    &b.names.name(Region::Eu1, Table::Inbox),
                    "MODIFY",
                ))
            }
            _ => None,
        };
        let (_, rss, ok) = run_binary(&path, name, event.clone(), &env).await;
        bins.insert(
            name.into(),
            json!({"size_bytes": size, "cold_start_ms_p50": stats(colds).0,
                   "peak_rss_kib_10k": if event.is_some() { json!(rss) } else { Value::Null }, "handled_ok": ok}),
        );
    }
    bins
}

/// What a phase sends: `requests` 1,000-profile requests tagged `tag` (their message ids) adding
/// the people of `who` to audience `aud`, all at once or one after another.
#[derive(Clone, Copy)]
struct Sends<'a> {
    tag: &'a str,
    who: &'a str,
    aud: i64,
    requests: usize,
    concurrent: bool,
}

impl<'a> Sends<'a> {
    fn one_by_one(tag: &'a str, who: &'a str, aud: i64, requests: usize) -> Self {
        Self {
            tag,
            who,
            aud,
            requests,
            concurrent: false,
        }
    }

    fn at_once(tag: &'a str, who: &'a str, aud: i64, requests: usize) -> Self {
        Self {
            concurrent: true,
            ..Self::one_by_one(tag, who, aud, requests)
        }
    }
}

/// One stack over its own tables, as the bench drives it end to end.
struct Rig {
    names: TableNames,
    store: Store,
    endpoint: Endpoint,
    pipeline: local::pipeline::LocalPipeline,
    /// The `account` of its project, as mParticle sends it.
    account: Value,
}

/// Step 5a of the bench: the publisher's lag and what it adds to a 10k end-to-end run.
async fn engage_feed(
    rig: &mut Rig,
    meter: &Meter,
    auth: &str,
    eventbridge: &str,
    report: &serde_json::Map<String, Value>,
) -> Value {
    // A bus without rules: what is measured is the publisher, not the stand-in's delivery to
    // queues (moto evaluates rules and fills SQS in Python, far slower than EventBridge).
    let feed = local::feed::LocalFeed::new(eventbridge);
    let bus = format!("{}-engage", rig.names.prefix());
    feed.create_bus(&bus).await.unwrap();
    let client = rig.store.client(Region::Eu1).clone();
    let endpoint = std::env::var("DYNAMODB_ENDPOINT").expect("DYNAMODB_ENDPOINT");
    rig.pipeline
        .publish_to(
            &client,
            &endpoint,
            &[Region::Eu1],
            shared::bus::Bus::new(feed.events.clone(), &bus),
        )
        .await
        .unwrap();
    let t = Instant::now();
    rig.pipeline.run_until_idle(2_000).await.unwrap();
    let backlog_seconds = t.elapsed().as_secs_f64();
    let backlog = rig.pipeline.take_publish_lags().len();
    rig.pipeline.take_read_lags();
    let phase = rig
        .phase(
            meter,
            auth,
            Sends::one_by_one("published", "e2e", 70_003, 10),
        )
        .await;
    let (metered_p50, metered_p99) = stats(rig.pipeline.take_publish_lags());
    let (metered_read_p50, metered_read_p99) = stats(rig.pipeline.take_read_lags());
    // The lag again on 10,000 more changes without the key meter: its reads of every item a
    // transaction touches, made after the events' recorded time and before the commit (to price
    // the write), are not part of a deployed write.
    meter.take_commit_ms();
    rig.pipeline.take_poll_ms();
    let (_, unmetered_seconds) = rig
        .send_and_drain(
            auth,
            Sends::one_by_one("published-unmetered", "e2e", 70_004, 10),
        )
        .await;
    // How long materialize's transactions took to commit: an event is recorded just before.
    let (commit_p50, commit_p99) = stats(meter.take_commit_ms());
    let lags = rig.pipeline.take_publish_lags();
    let published = lags.len();
    let (p50, p99) = stats(lags);
    let (read_p50, read_p99) = stats(rig.pipeline.take_read_lags());
    let polls = rig.pipeline.take_poll_ms();
    let poll_count = polls.len();
    let (poll_p50, poll_p99) = stats(polls);
    let without = report["end_to_end_10k"]["existing"]["seconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    json!({"lag_p50_ms": p50, "lag_p99_ms": p99, "events_published": published,
           "lag_p50_ms_key_metered": metered_p50, "lag_p99_ms_key_metered": metered_p99,
           "read_lag_p50_ms": read_p50, "read_lag_p99_ms": read_p99,
           "unmetered_events_per_s": published as f64 / unmetered_seconds,
           "stream_poll_p50_ms": poll_p50, "stream_poll_p99_ms": poll_p99, "stream_polls": poll_count,
           "transaction_commit_p50_ms": commit_p50, "transaction_commit_p99_ms": commit_p99,
           "read_lag_p50_ms_key_metered": metered_read_p50,
           "read_lag_p99_ms_key_metered": metered_read_p99,
           "backlog_events_per_s": backlog as f64 / backlog_seconds,
           "e2e_10k_existing_with_publisher_seconds": phase.seconds,
           "e2e_10k_existing_without_publisher_seconds": without,
           "ratio_with_to_without_publisher": phase.seconds / without,
           "backlog_events": backlog, "backlog_seconds": backlog_seconds})
}

/// What one end-to-end phase took, and what it cost key by key.
struct Phase {
    seconds: f64,
    accepted_seconds: f64,
    used: Reading,
    heat: HeatReport,
    member_count: i64,
}

impl Phase {
    fn json(&self, changes: u64) -> Value {
        let changes_f = changes as f64;
        json!({"seconds": self.seconds, "accepted_seconds": self.accepted_seconds,
               "changes": changes, "changes_per_s": changes_f / self.seconds,
               "member_count": self.member_count,
               "wcu_per_add": self.used.wcu / changes_f, "rcu_per_add": self.used.rcu / changes_f,
               "requests_per_add": self.used.requests as f64 / changes_f,
               "wcu_per_add_with_indexes": self.heat.wcu / changes_f,
               "rcu_per_add_by_key_meter": self.heat.rcu / changes_f,
               "changes_seen_by_key_meter": self.heat.changes,
               "max_key_load": self.heat.hottest.as_ref().map(|h| h.load),
               "conflicts": self.used.conflicts,
               "cancelled_transactions": self.used.cancelled_transactions,
               "lanes": local::streams::lanes_from_env()})
    }
}

impl Rig {
    /// A yardstick stack: fresh tables whose new segments get `buckets` buckets.
    async fn new(client: &aws_sdk_dynamodb::Client, endpoint_url: &str, buckets: u32) -> Self {
        let names = TableNames::new(format!("bench{}", &generate_secret()[..6]));
        create_tables(client, &names, Region::Eu1).await.unwrap();
        let store = Store::for_local_stack(RegionalClients::single(client.clone()), names.clone())
            .with_new_segment_buckets(buckets);
        let project_id = "BENCH-EU1";
        let (passcode, token) = local::provision_project(&store, Region::Eu1, project_id)
            .await
            .unwrap();
        let prefix = names.prefix().to_owned();
        let config = Config::from_lookup(|k| match k {
            "MPARTICLE_CALLER_TOKEN" => Some(CALLER.into()),
            "TABLE_PREFIX" => Some(prefix.clone()),
            "DYNAMODB_ENDPOINT" => Some(endpoint_url.to_owned()),
            _ => None,
        })
        .unwrap();
        let pipeline = local::pipeline::LocalPipeline::new(
            client,
            endpoint_url,
            store.clone(),
            names.clone(),
            &[Region::Eu1],
        )
        .await
        .unwrap();
        Self {
            endpoint: Endpoint::new(&config, store.clone()),
            account: json!({"account_id": 1, "account_settings": {"accountId": project_id, "passcode": passcode, "accountToken": token, "region": "eu1"}}),
            names,
            store,
            pipeline,
        }
    }

    /// A 1,000-profile request adding users `<who>-<req>-<i>` to audience `aud`: the same `who`
    /// is the same users.
    fn batch(&self, tag: &str, who: &str, aud: i64, req: usize) -> String {
        let profiles: Vec<Value> = (0..1000)
            .map(|i| json!({"user_identities": [{"type": "customer", "encoding": "raw", "value": format!("{who}-{req}-{i}")},
                                                 {"type": "email", "encoding": "raw", "value": format!("u{req}x{i}@example.com")}],
                            "mpid": format!("{}", req * 1000 + i + 1),
                            "audiences": [{"audience_id": aud, "audience_name": "E2E", "action": "add"}]}))
            .collect();
        json!({"type": "audience_membership_change_request", "timestamp_ms": 2_000 + aud,
               "user_profiles": profiles, "account": self.account, "id": format!("{tag}-{req}")})
        .to_string()
    }

    /// Sends the requests, runs the pipeline until idle, and reads the segment's count; the key
    /// meter charges every call of the phase.
    async fn phase(&mut self, meter: &Meter, auth: &str, sends: Sends<'_>) -> Phase {
        meter.start_keys(&self.names, Region::Eu1);
        let before = meter.read();
        let (accepted_seconds, seconds) = self.send_and_drain(auth, sends).await;
        let used = meter.read() - before;
        let heat = meter.stop_keys().expect("the key meter was on");
        let member_count = self
            .store
            .get_segment(Region::Eu1, "BENCH-EU1", sends.aud)
            .await
            .unwrap()
            .map_or(0, |s| s.counts.member_count);
        Phase {
            seconds,
            accepted_seconds,
            used,
            heat,
            member_count,
        }
    }

    /// Sends the requests, then runs the pipeline until idle; answers (seconds until all were
    /// accepted, seconds until idle).
    async fn send_and_drain(&mut self, auth: &str, sends: Sends<'_>) -> (f64, f64) {
        let Sends {
            tag,
            who,
            aud,
            requests,
            concurrent,
        } = sends;
        // Enough pipeline steps for any phase: a stuck one fails the bench instead of hanging.
        let max_steps = (requests * 200).max(2_000);
        let bodies: Vec<String> = (0..requests)
            .map(|req| self.batch(tag, who, aud, req))
            .collect();
        let t = Instant::now();
        let answers = if concurrent {
            futures::future::join_all(
                bodies
                    .iter()
                    .map(|body| self.endpoint.handle("POST", Some(auth), body.as_bytes())),
            )
            .await
        } else {
            let mut answers = Vec::new();
            for body in &bodies {
                answers.push(
                    self.endpoint
                        .handle("POST", Some(auth), body.as_bytes())
                        .await,
                );
            }
            answers
        };
        let refused: Vec<(u16, &str)> = answers
            .iter()
            .filter(|r| r.status != 200)
            .map(|r| (r.status, r.body.as_str()))
            .collect();
        assert!(refused.is_empty(), "{tag}: requests refused: {refused:?}");
        let accepted_seconds = t.elapsed().as_secs_f64();
        self.pipeline.run_until_idle(max_steps).await.unwrap();
        (accepted_seconds, t.elapsed().as_secs_f64())
    }
}

/// The heat table: per table and index, its hottest key during the first sync, and the hottest
/// of all, beside the one-bucket yardstick's.
fn heat_json(ours: &HeatReport, one_bucket: &HeatReport, project_id: &str) -> Value {
    let key_json = |h: &KeyHeat| {
        json!({"target": h.key.target, "key_pattern": key_pattern(&h.key.key, project_id),
               "wcu_per_change": h.wcu_per_change, "rcu_per_change": h.rcu_per_change,
               "load": h.load, "worst_window_load": h.worst_window_load})
    };
    let targets = |r: &HeatReport| -> Vec<Value> {
        r.targets
            .iter()
            .map(|t| {
                let mut v = key_json(&t.hottest);
                v["keys"] = json!(t.keys);
                v["wcu"] = json!(t.wcu);
                v["rcu"] = json!(t.rcu);
                v
            })
            .collect()
    };
    let hottest = ours.hottest.as_ref();
    json!({
        "changes_per_second": lab::heat::CHANGES_PER_SECOND,
        "changes": ours.changes,
        "max_key_load": hottest.map(|h| h.load),
        "worst_window_load": ours.targets.iter().map(|t| t.hottest.worst_window_load).fold(0.0, f64::max),
        "hottest": hottest.map(key_json),
        "wcu_per_add_with_indexes": ours.wcu / ours.changes.max(1) as f64,
        "targets": targets(ours),
        "one_bucket": {
            "max_key_load": one_bucket.hottest.as_ref().map(|h| h.load),
            "hottest": one_bucket.hottest.as_ref().map(key_json),
            "wcu_per_add_with_indexes": one_bucket.wcu / one_bucket.changes.max(1) as f64,
            "targets": targets(one_bucket),
        },
    })
}
