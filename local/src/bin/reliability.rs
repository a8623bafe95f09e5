//! `scripts/reliability`: redelivery, concurrency, faults and bad input, as figures.
//! For each scenario: batches sent, accepted, retried, lost and duplicate events — lost and
//! duplicates must be 0 (exit code 1 otherwise). `--short` is the CI size.
//!
//! With the EventBridge stand-in (`EVENTBRIDGE_ENDPOINT`), every scenario's pipeline also runs
//! the publisher onto a bus of its own, and its feed is checked against the stored Partner Sync
//! events: one missing is lost; after dedup by event id, an event no stored event has is a
//! duplicate; raw repeats (the same event id delivered again: at-least-once) are reported.
//!
//! Env: DYNAMODB_ENDPOINT (required), EVENTBRIDGE_ENDPOINT (the feed is checked when set).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use local::faults::{FaultPlan, faulty_client};
use local::pipeline::LocalPipeline;
use local::proxy::{ProxyConfig, start_proxy};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use shared::config::Config;
use shared::domain::auth::generate_secret;
use shared::domain::records::InboxStatus;
use shared::domain::region::Region;
use shared::stages::endpoint::Endpoint;
use shared::store::Store;
use shared::store::clients::{RegionalClients, local_client};
use shared::store::tables::{Table, TableNames, create_tables};

const CALLER: &str = "reliability-caller-token";

/// One generated membership request and what it asks for.
#[derive(Clone)]
struct Batch {
    id: String,
    ts: i64,
    /// (customer id, audience id, add?) per profile entry, in order.
    entries: Vec<Vec<(String, i64, bool)>>,
}

impl Batch {
    fn body(&self, account: &Value) -> String {
        let profiles: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let customer = &e[0].0;
                json!({"user_identities": [{"type": "customer", "encoding": "raw", "value": customer}],
                       "audiences": e.iter().map(|(_, aud, add)| json!({"audience_id": aud, "audience_name": format!("A{aud}"),
                           "action": if *add {"add"} else {"delete"}})).collect::<Vec<_>>()})
            })
            .collect();
        json!({"type": "audience_membership_change_request", "id": self.id, "timestamp_ms": self.ts,
               "account": account, "user_profiles": profiles})
        .to_string()
    }
}

fn generate(
    rng: &mut StdRng,
    tag: &str,
    batches: usize,
    profiles: usize,
    users: usize,
    audiences: i64,
) -> Vec<Batch> {
    (0..batches)
        .map(|b| Batch {
            id: format!("{tag}-{b}"),
            ts: 1_000_000 + rng.random_range(0..100_000),
            entries: (0..profiles)
                .map(|_| {
                    let user = format!("{tag}-user-{}", rng.random_range(0..users));
                    let n = rng.random_range(1..=2);
                    let mut auds: Vec<i64> = (0..audiences).collect();
                    auds.shuffle(rng);
                    auds[..n]
                        .iter()
                        .map(|a| (user.clone(), 100 + a, rng.random_bool(0.65)))
                        .collect()
                })
                .collect(),
        })
        .collect()
}

struct Env {
    clients: RegionalClients,
    /// The store over `clients`, for reading back what the run left.
    store: Store,
    names: TableNames,
    account: Value,
    project_id: String,
    feed: Option<Feed>,
    /// The bulk way's queue: the redelivery and fault scenarios send both small (live) and
    /// large (bulk) requests.
    bulk: shared::bulk::LocalBulkQueue,
}

/// A scenario's engage feed on the EventBridge stand-in: its bus, a catch-all rule's queue, and
/// the client the publisher puts with (through `faults` when entries are to be refused).
struct Feed {
    local: local::feed::LocalFeed,
    bus: String,
    all: local::feed::Subscription,
    faults: local::faults::BusFaultPlan,
    endpoint: String,
}

async fn feed_of(names: &TableNames) -> Option<Feed> {
    let endpoint = std::env::var("EVENTBRIDGE_ENDPOINT").ok()?;
    let local = local::feed::LocalFeed::new(&endpoint);
    let bus = format!("{}-engage", names.prefix());
    local.create_bus(&bus).await.expect("bus");
    let all = local
        .subscribe(
            &bus,
            &format!("{}-all", names.prefix()),
            &format!(r#"{{"source":["{}"]}}"#, shared::domain::feed::SOURCE),
        )
        .await
        .expect("catch-all rule");
    Some(Feed {
        local,
        bus,
        all,
        faults: local::faults::BusFaultPlan::default(),
        endpoint,
    })
}

async fn env(endpoint: &str, tag: &str) -> Env {
    let client = local_client(endpoint);
    let names = TableNames::new(format!("rel{}-{tag}", &generate_secret()[..6]));
    create_tables(&client, &names, Region::Eu1).await.unwrap();
    let clients = RegionalClients::single(client);
    let store = Store::for_local_stack(clients.clone(), names.clone());
    let project_id: String = format!("REL-{tag}");
    let (passcode, token) = local::provision_project(&store, Region::Eu1, &project_id)
        .await
        .unwrap();
    let account = json!({"account_id": 7, "account_settings": {"accountId": project_id, "passcode": passcode, "accountToken": token, "region": "eu1"}});
    let feed = feed_of(&names).await;
    Env {
        clients,
        store,
        names,
        account,
        project_id,
        feed,
        bulk: Default::default(),
    }
}

impl Env {
    /// The local stream mappings over this environment's eu1 tables, writing through `store`.
    /// With a feed, the publisher too (its `PutEvents` through the feed's fault plan).
    async fn pipeline(&self, endpoint_url: &str, store: Store) -> LocalPipeline {
        let mut pipeline = LocalPipeline::new(
            self.clients.get(Region::Eu1),
            endpoint_url,
            store,
            self.names.clone(),
            &[Region::Eu1],
        )
        .await
        .unwrap();
        if let Some(feed) = &self.feed {
            let client = local::faults::faulty_bus_client(&feed.endpoint, feed.faults.clone());
            pipeline
                .publish_to(
                    self.clients.get(Region::Eu1),
                    endpoint_url,
                    &[Region::Eu1],
                    shared::bus::Bus::new(client, &feed.bus),
                )
                .await
                .unwrap();
        }
        pipeline.with_bulk(self.bulk.clone(), 2)
    }

    /// The endpoint over `store`, with both ways: requests of more than `LIVE_MAX_PROFILES`
    /// profiles go the bulk way.
    fn endpoint(&self, endpoint_url: &str, store: Store) -> Endpoint {
        Endpoint::new(&config(endpoint_url, &self.names), store)
            .with_bulk_queue(shared::bulk::BulkQueue::Local(self.bulk.clone()))
    }
}

fn config(endpoint: &str, names: &TableNames) -> Config {
    let (e, p) = (endpoint.to_owned(), names.prefix().to_owned());
    Config::from_lookup(move |k| match k {
        "MPARTICLE_CALLER_TOKEN" => Some(CALLER.into()),
        "TABLE_PREFIX" => Some(p.clone()),
        "DYNAMODB_ENDPOINT" => Some(e.clone()),
        "LIVE_MAX_PROFILES" => Some(LIVE_MAX_PROFILES.to_string()),
        _ => None,
    })
    .unwrap()
}

/// Requests with more profiles than this go the bulk way here.
const LIVE_MAX_PROFILES: usize = 5;

/// Every other batch cut to a few profiles: a live request (the others stay large, bulk).
fn both_ways(batches: Vec<Batch>) -> Vec<Batch> {
    (batches.into_iter().enumerate())
        .map(|(i, mut b)| {
            if i % 2 == 1 {
                b.entries.truncate(3);
            }
            b
        })
        .collect()
}

#[derive(Default, Debug)]
struct Figures {
    sent: u64,
    accepted: u64,
    retried: u64,
    lost: u64,
    duplicate_events: u64,
    /// The feed: distinct Partner Sync events delivered, and deliveries of an id seen before.
    published: Option<u64>,
    feed_repeats: u64,
    notes: Vec<String>,
    /// Chunks stored, by way: (live, bulk).
    ways: (usize, usize),
}

/// Checks the stored state against what the accepted batches ask for.
async fn verify(env: &Env, accepted: &[Batch], f: &mut Figures) {
    let held = env
        .store
        .project_snapshot(Region::Eu1, &env.project_id)
        .await
        .expect("snapshot");
    // Every accepted batch is materialized.
    let done: HashSet<&str> = held
        .inbox
        .iter()
        .filter(|r| r.status == InboxStatus::Materialized)
        .map(|r| r.message_id.as_str())
        .collect();
    let not_done = accepted
        .iter()
        .filter(|b| !done.contains(b.id.as_str()))
        .count() as u64;
    if not_done > 0 {
        f.notes
            .push(format!("{not_done} accepted batches not materialized"));
    }
    f.lost += not_done;
    // Which ways the chunks went.
    let rows = (env.store.stored_chunks(Region::Eu1, &env.project_id).await).expect("inbox");
    let bulk = (rows.iter())
        .filter(|r| r.way == shared::domain::ways::Way::Bulk)
        .count();
    f.ways = (rows.len() - bulk, bulk);
    // One profile per identity.
    let claims: HashMap<&str, &str> = held
        .claims
        .iter()
        .map(|c| (c.identity.as_str(), c.clevertap_id.as_str()))
        .collect();
    let profile_count = held.profiles.len();
    let identities: HashSet<&String> = accepted
        .iter()
        .flat_map(|b| b.entries.iter().map(|e| &e[0].0))
        .collect();
    if claims.len() != identities.len() || profile_count != identities.len() {
        f.notes.push(format!(
            "{} identities, {} claims, {} profiles",
            identities.len(),
            claims.len(),
            profile_count
        ));
        f.lost += identities.len().abs_diff(claims.len()) as u64;
    }
    // Newest change wins, per (identity, audience).
    let mut newest: HashMap<(String, i64), (String, bool)> = HashMap::new();
    for b in accepted {
        for (p, entries) in b.entries.iter().enumerate() {
            for (e, (user, aud, add)) in entries.iter().enumerate() {
                let version = format!("{:013}#{}#{:06}#{:04}", b.ts, b.id, p, e);
                let slot = newest
                    .entry((user.clone(), *aud))
                    .or_insert((version.clone(), *add));
                if version > slot.0 {
                    *slot = (version, *add);
                }
            }
        }
    }
    // (audience id, CleverTap ID) → member: whichever bucket the row is in.
    let members: HashMap<(i64, &str), bool> = held
        .memberships
        .iter()
        .map(|m| ((m.audience_id, m.clevertap_id.as_str()), m.member))
        .collect();
    let mut wrong = 0;
    for ((user, aud), (_, add)) in &newest {
        let ct = claims.get(user.as_str()).copied().unwrap_or_default();
        let got = members.get(&(*aud, ct)).copied().unwrap_or(false);
        if got != *add {
            wrong += 1;
        }
    }
    if wrong > 0 {
        f.notes
            .push(format!("{wrong} memberships differ from the newest change"));
        f.lost += wrong;
    }
    // Counters equal member rows; events alternate per (profile, segment) and never repeat a change.
    for seg in &held.segments {
        let rows = members
            .iter()
            .filter(|((row_aud, _), m)| **m && *row_aud == seg.audience_id)
            .count() as i64;
        if seg.counts.member_count != rows {
            f.notes.push(format!(
                "segment {}: member_count {} but {rows} members",
                seg.audience_id, seg.counts.member_count
            ));
            f.lost += 1;
        }
    }
    let mut seen = HashSet::new();
    // (profile, segment) → actions in time order (the snapshot's order within a profile).
    let mut by_pair: BTreeMap<(&str, i64), Vec<&str>> = BTreeMap::new();
    for e in &held.events {
        if !seen.insert((e.clevertap_id.as_str(), e.change_id.as_str())) {
            f.duplicate_events += 1;
        }
        by_pair
            .entry((e.clevertap_id.as_str(), e.audience_id))
            .or_default()
            .push(e.action.as_str());
    }
    for list in by_pair.values() {
        f.duplicate_events += list.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    }
    if let Some(feed) = &env.feed {
        let stored: HashSet<&str> = held.events.iter().map(|e| e.change_id.as_str()).collect();
        verify_feed(feed, &stored, f).await;
    }
}

/// The feed against the stored Partner Sync events (by event id = change id).
async fn verify_feed(feed: &Feed, stored: &HashSet<&str>, f: &mut Figures) {
    let delivered = feed.local.take(&feed.all).await.expect("the feed's queue");
    let ids: Vec<String> = delivered
        .iter()
        .filter(|e| e["detail-type"] == "Partner Sync")
        .filter_map(|e| e["detail"]["event_id"].as_str().map(str::to_owned))
        .collect();
    let unique: HashSet<&str> = ids.iter().map(String::as_str).collect();
    f.published = Some(unique.len() as u64);
    f.feed_repeats = (ids.len() - unique.len()) as u64;
    let missing = stored.difference(&unique).count() as u64;
    let phantom = unique.difference(stored).count() as u64;
    if missing > 0 {
        f.notes
            .push(format!("{missing} Partner Sync events never published"));
    }
    if phantom > 0 {
        f.notes
            .push(format!("{phantom} published events match no stored event"));
    }
    f.lost += missing;
    f.duplicate_events += phantom;
}

/// Sends like mParticle: retry on 5xx or a failed call, with backoff, until 200.
async fn send(endpoint: &Endpoint, body: &str, f_retried: &AtomicU64) -> bool {
    let auth = format!("Token {CALLER}");
    for attempt in 0..30 {
        let r = endpoint.handle("POST", Some(&auth), body.as_bytes()).await;
        match r.status {
            200 => return true,
            500..=599 => {
                f_retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10 * (attempt + 1))).await;
            }
            _ => return false,
        }
    }
    false
}

async fn drain(pipeline: &mut LocalPipeline) {
    for _ in 0..50 {
        match pipeline.run_until_idle(5_000).await {
            Ok(_) => return,
            Err(e) => eprintln!("pipeline: {e}; continuing"),
        }
    }
}

async fn redelivery(endpoint_url: &str, short: bool) -> Figures {
    let env = env(endpoint_url, "redeliver").await;
    let mut rng = StdRng::seed_from_u64(7);
    let batches = both_ways(generate(
        &mut rng,
        "rd",
        if short { 12 } else { 60 },
        if short { 20 } else { 100 },
        60,
        4,
    ));
    let store = Store::for_local_stack(env.clients.clone(), env.names.clone());
    let endpoint = env.endpoint(endpoint_url, store.clone());
    let mut deliveries: Vec<&Batch> = batches.iter().chain(&batches).chain(&batches).collect();
    deliveries.shuffle(&mut rng);
    let retried = AtomicU64::new(0);
    let mut f = Figures::default();
    let mut pipeline = env.pipeline(endpoint_url, store).await;
    for (i, b) in deliveries.iter().enumerate() {
        f.sent += 1;
        if send(&endpoint, &b.body(&env.account), &retried).await {
            f.accepted += 1;
        }
        if i % 7 == 0 {
            pipeline.step().await.unwrap();
        }
    }
    drain(&mut pipeline).await;
    f.retried = retried.load(Ordering::SeqCst);
    verify(&env, &batches, &mut f).await;
    f
}

async fn concurrency(endpoint_url: &str, short: bool) -> Figures {
    let env = env(endpoint_url, "concurrent").await;
    let mut rng = StdRng::seed_from_u64(11);
    let per_sender = if short { 3 } else { 10 };
    let senders: Vec<Vec<Batch>> = (0..16)
        .map(|s| generate(&mut rng, &format!("c{s}"), per_sender, 30, 1, 3))
        .collect();
    // Overlapping identities: every sender draws from the same pool of users.
    let pool: Vec<String> = (0..40).map(|i| format!("shared-user-{i}")).collect();
    let senders: Vec<Vec<Batch>> = senders
        .into_iter()
        .map(|bs| {
            bs.into_iter()
                .map(|mut b| {
                    for e in &mut b.entries {
                        let u = pool[rng.random_range(0..pool.len())].clone();
                        for x in e.iter_mut() {
                            x.0 = u.clone();
                        }
                    }
                    b
                })
                .collect()
        })
        .collect();
    let store = Store::for_local_stack(env.clients.clone(), env.names.clone());
    let endpoint = Arc::new(Endpoint::new(
        &config(endpoint_url, &env.names),
        store.clone(),
    ));
    let retried = Arc::new(AtomicU64::new(0));
    let mut f = Figures::default();
    let results = futures::future::join_all(senders.iter().map(|bs| {
        let endpoint = endpoint.clone();
        let retried = retried.clone();
        let account = env.account.clone();
        async move {
            let mut ok = 0;
            for b in bs {
                if send(&endpoint, &b.body(&account), &retried).await {
                    ok += 1;
                }
            }
            ok
        }
    }))
    .await;
    f.sent = senders.iter().map(|s| s.len() as u64).sum();
    f.accepted = results.iter().sum();
    // 16 resolutions and materializations at once, as 16 shards' worth of Lambdas would run.
    let rows = env
        .store
        .stored_chunks(Region::Eu1, &env.project_id)
        .await
        .expect("inbox");
    // Each invocation is retried on failure, as Lambda redelivers a failed stream record
    // (DynamoDB Local gives up on lock waits under this load; real DynamoDB does not).
    let resolved = futures::future::join_all(rows.iter().map(|r| {
        let store = store.clone();
        let retried = retried.clone();
        async move {
            for _ in 0..20 {
                match shared::stages::resolve::resolve_chunk(&store, Region::Eu1, r).await {
                    Ok(rep) => return rep.changes,
                    Err(e) => {
                        tracing::warn!(error = %e, "resolve retried");
                        retried.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            panic!("chunk {} not resolved after 20 attempts", r.message_id);
        }
    }))
    .await;
    let changes: Vec<(String, Vec<shared::domain::changes::MembershipChange>)> = rows
        .iter()
        .zip(resolved)
        .map(|(r, c)| (r.message_id.clone(), c))
        .collect();
    futures::future::join_all(changes.iter().zip(&rows).map(|((_, c), row)| {
        let store = store.clone();
        let retried = retried.clone();
        async move {
            let mut counts = None;
            for _ in 0..20 {
                match shared::stages::materialize::materialize_changes(
                    &store,
                    Region::Eu1,
                    &row.project_id,
                    c,
                )
                .await
                {
                    Ok(k) => {
                        counts = Some(k);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "materialize retried");
                        retried.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            let counts = counts.expect("materialized within 20 attempts");
            let _moved_on_already = shared::ports::inbox::Inbox::mark_materialized(
                &store,
                Region::Eu1,
                row.key(),
                &counts,
                &row.progress_on_materialize(shared::domain::protocol::now_ms()),
            )
            .await
            .unwrap();
        }
    }))
    .await;
    f.retried = retried.load(Ordering::SeqCst);
    // The chunks were materialized by hand above: the publisher runs on its own.
    if let Some(feed) = &env.feed {
        let mut publisher = LocalPipeline::publishing_only(
            env.clients.get(Region::Eu1),
            endpoint_url,
            env.store.clone(),
            env.names.clone(),
            &[Region::Eu1],
            shared::bus::Bus::new(feed.local.events.clone(), &feed.bus),
        )
        .await
        .unwrap();
        drain(&mut publisher).await;
    }
    let all: Vec<Batch> = senders.into_iter().flatten().collect();
    verify(&env, &all, &mut f).await;
    f
}

async fn faults(endpoint_url: &str, short: bool) -> (Figures, String) {
    let env = env(endpoint_url, "faults").await;
    let mut rng = StdRng::seed_from_u64(23);
    let batches = both_ways(generate(
        &mut rng,
        "ft",
        if short { 10 } else { 50 },
        if short { 20 } else { 80 },
        50,
        3,
    ));
    let upstream: std::net::SocketAddr =
        endpoint_url.trim_start_matches("http://").parse().unwrap();
    let proxy_config = ProxyConfig {
        drop_connection: 0.05,
        reset_after_request: 0.05,
        delay_ms: (0, 3),
    };
    let (proxy, proxy_stats, _handle) = start_proxy(upstream, proxy_config, 99).await.unwrap();
    let plan = FaultPlan::default();
    plan.throttles
        .store(if short { 15 } else { 60 }, Ordering::SeqCst);
    plan.unprocessed_keys
        .store(if short { 10 } else { 40 }, Ordering::SeqCst);
    plan.unprocessed_items.store(5, Ordering::SeqCst);
    if let Some(feed) = &env.feed {
        feed.faults
            .refused_entries
            .store(if short { 25 } else { 100 }, Ordering::SeqCst);
    }
    let faulty = faulty_client(&format!("http://{proxy}"), plan.clone());
    let store = Store::for_local_stack(RegionalClients::single(faulty), env.names.clone());
    let endpoint = env.endpoint(endpoint_url, store.clone());
    let retried = AtomicU64::new(0);
    let mut f = Figures::default();
    let mut accepted = Vec::new();
    let mut pipeline = env.pipeline(endpoint_url, store).await;
    for (i, b) in batches.iter().enumerate() {
        f.sent += 1;
        if send(&endpoint, &b.body(&env.account), &retried).await {
            f.accepted += 1;
            accepted.push(b.clone());
        }
        if i % 5 == 0 {
            let _ = pipeline.step().await;
        }
    }
    drain(&mut pipeline).await;
    f.retried = retried.load(Ordering::SeqCst);
    verify(&env, &accepted, &mut f).await;
    let (connections, dropped, resets, delayed) = proxy_stats.snapshot();
    let refused = env
        .feed
        .as_ref()
        .map_or(0, |feed| feed.faults.injected.load(Ordering::SeqCst));
    let detail = format!(
        "proxy: {connections} connections, {dropped} dropped, {resets} reset, {delayed} delayed; injected throttles/unprocessed: {}; PutEvents entries refused: {refused}",
        plan.injected.load(Ordering::SeqCst)
    );
    (f, detail)
}

async fn bad_input(endpoint_url: &str) -> Figures {
    let env = env(endpoint_url, "bad").await;
    let store = Store::for_local_stack(env.clients.clone(), env.names.clone());
    let endpoint = Endpoint::new(&config(endpoint_url, &env.names), store);
    let auth = format!("Token {CALLER}");
    let good = Batch {
        id: "bad-0".into(),
        ts: 1,
        entries: vec![vec![("u".into(), 1, true)]; 50],
    }
    .body(&env.account);
    let mut bodies: Vec<Vec<u8>> = (1..good.len())
        .step_by(97)
        .map(|cut| good.as_bytes()[..cut].to_vec())
        .collect();
    bodies.push("[".repeat(100_000).into_bytes());
    bodies.push(format!("{{\"type\":\"audience_membership_change_request\",\"id\":\"x\",\"timestamp_ms\":1,\"account\":{},\"user_profiles\":[{}]}}", env.account, vec!["{\"audiences\":7}"; 1000].join(",")).into_bytes());
    bodies.push(vec![0xff, 0xfe, b'{', 0x80]);
    bodies.push(b"{\"type\":\"audience_membership_change_request\",\"user_profiles\":{}}".to_vec());
    bodies.push(vec![b' '; 6 * 1024 * 1024]);
    // Beyond the bounds at the door: a 2,000-character message id, a time far in the future.
    let membership = |id: &str, ts: i64| {
        format!(
            "{{\"type\":\"audience_membership_change_request\",\"id\":\"{id}\",\"timestamp_ms\":{ts},\"account\":{}}}",
            env.account
        )
    };
    bodies.push(membership(&"i".repeat(2_000), 1).into_bytes());
    bodies.push(membership("future", 9_999_999_999_999).into_bytes());
    let mut f = Figures::default();
    // 5 MiB of empty audience entries without the caller token: 401, read for its type only.
    let mut flood = String::from(
        "{\"type\":\"audience_membership_change_request\",\"user_profiles\":[{\"audiences\":[",
    );
    while flood.len() < (5 << 20) - 4096 {
        flood.push_str("{},");
    }
    flood.push_str("{}]}]}");
    f.sent += 1;
    let r = endpoint.handle("POST", None, flood.as_bytes()).await;
    if r.status != 401 {
        f.notes
            .push(format!("status {} for an unauthenticated flood", r.status));
        f.accepted += 1;
    }
    for body in &bodies {
        f.sent += 1;
        let r = endpoint.handle("POST", Some(&auth), body).await;
        if (400..500).contains(&r.status) {
            continue;
        }
        f.notes
            .push(format!("status {} for a malformed body", r.status));
        f.accepted += 1;
    }
    for x in [Table::Inbox, Table::Segments, Table::Profiles] {
        let n = env.store.count_items(Region::Eu1, x).await.expect("count");
        if n > 0 {
            f.notes.push(format!("{n} items written to {x}"));
            f.lost += n as u64;
        }
    }
    oversized_partner_id(endpoint_url, &mut f).await;
    f
}

/// A valid request whose first profile carries a 1,500-character `CleverTap_User_ID`: accepted,
/// that profile skipped and counted, its neighbour a member, nothing stuck (own tables: this one
/// writes).
async fn oversized_partner_id(endpoint_url: &str, f: &mut Figures) {
    let env = env(endpoint_url, "bad-partner").await;
    let store = Store::for_local_stack(env.clients.clone(), env.names.clone());
    let endpoint = Endpoint::new(&config(endpoint_url, &env.names), store.clone());
    let body = json!({"type": "audience_membership_change_request", "id": "huge-partner", "timestamp_ms": 1,
        "account": env.account, "user_profiles": [
            {"partner_identities": [{"type": "CleverTap_User_ID", "encoding": "raw", "value": "p".repeat(1_500)}],
             "audiences": [{"audience_id": 5, "audience_name": "A", "action": "add"}]},
            {"user_identities": [{"type": "customer", "encoding": "raw", "value": "neighbour"}],
             "audiences": [{"audience_id": 5, "audience_name": "A", "action": "add"}]}]})
    .to_string();
    f.sent += 1;
    let r = endpoint
        .handle("POST", Some(&format!("Token {CALLER}")), body.as_bytes())
        .await;
    if r.status != 200 {
        f.notes
            .push(format!("status {} for an oversized partner id", r.status));
        return;
    }
    let mut pipeline = env.pipeline(endpoint_url, store).await;
    drain(&mut pipeline).await;
    let held = env
        .store
        .project_snapshot(Region::Eu1, &env.project_id)
        .await
        .expect("snapshot");
    let done = held
        .inbox
        .iter()
        .all(|r| r.status == InboxStatus::Materialized);
    let members = held.memberships.iter().filter(|m| m.member).count();
    if !done || members != 1 {
        f.notes.push(format!(
            "oversized partner id: chunk materialized {done}, {members} members (want 1)"
        ));
        f.lost += 1;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // RUST_LOG=warn shows why the product answered what it did (logs go to stderr).
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let short = std::env::args().any(|a| a == "--short");
    let endpoint = std::env::var("DYNAMODB_ENDPOINT").expect("DYNAMODB_ENDPOINT");
    let started = Instant::now();
    // The short mode (CI's) runs the scenarios at once, each on tables, a bus and a proxy of its
    // own, every one with its faults and checks; the full size runs them one after another.
    let (redelivered, concurrent, (faulted, detail), bad) = if short {
        tokio::join!(
            redelivery(&endpoint, short),
            concurrency(&endpoint, short),
            faults(&endpoint, short),
            bad_input(&endpoint),
        )
    } else {
        let redelivered = redelivery(&endpoint, short).await;
        let concurrent = concurrency(&endpoint, short).await;
        let faulted = faults(&endpoint, short).await;
        (redelivered, concurrent, faulted, bad_input(&endpoint).await)
    };
    let rows: Vec<(String, Figures, String)> = vec![
        ("redelivery x3, shuffled".into(), redelivered, String::new()),
        ("concurrency, 16 senders".into(), concurrent, String::new()),
        (
            "faults: proxy + throttling + unprocessed".into(),
            faulted,
            detail,
        ),
        (
            "bad input (4xx, or skipped and counted)".into(),
            bad,
            String::new(),
        ),
    ];

    println!(
        "\n{:<42} {:>6} {:>9} {:>8} {:>5} {:>11} {:>10} {:>8}",
        "scenario", "sent", "accepted", "retried", "lost", "duplicates", "published", "repeats"
    );
    let mut failed = false;
    for (name, f, detail) in &rows {
        let published = f.published.map_or("-".to_owned(), |n| n.to_string());
        println!(
            "{name:<42} {:>6} {:>9} {:>8} {:>5} {:>11} {published:>10} {:>8}",
            f.sent, f.accepted, f.retried, f.lost, f.duplicate_events, f.feed_repeats
        );
        for n in &f.notes {
            println!("    ! {n}");
        }
        if f.ways.1 > 0 {
            println!("    chunks: {} live, {} bulk", f.ways.0, f.ways.1);
        }
        if !detail.is_empty() {
            println!("    {detail}");
        }
        failed |= f.lost > 0 || f.duplicate_events > 0 || !f.notes.is_empty();
    }
    println!(
        "\nlost and duplicates include the engage feed's when EVENTBRIDGE_ENDPOINT is set ({}); \
         repeats are deliveries of an event id already delivered (at-least-once, dropped by id)",
        if std::env::var("EVENTBRIDGE_ENDPOINT").is_ok() {
            "it is"
        } else {
            "it is not: the feed was not checked"
        }
    );
    println!(
        "\n{} in {:.1} s ({}), {} lanes per inbox stream mapping (LANES)",
        if failed {
            "FAILED"
        } else {
            "all scenarios: 0 lost, 0 duplicates"
        },
        started.elapsed().as_secs_f64(),
        if short {
            "short: scenarios at once"
        } else {
            "one after another"
        },
        local::streams::lanes_from_env()
    );
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
