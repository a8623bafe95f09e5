//! The engage feed (contract §5) end to end: batches through the endpoint and the pipeline, the
//! publisher putting on a bus of the EventBridge stand-in (moto), and rules delivering to SQS.

use std::collections::{BTreeMap, BTreeSet};

use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::feed::{INITIAL_SYNC_WINDOW_MS, SCHEMA_VERSION, SOURCE};
use shared::domain::protocol::now_ms;

const HOUR: i64 = 60 * 60 * 1000;
const CART: i64 = 47444;

/// Someone with every kind of personal value the feed must never carry.
/// Person `n`: a customer id, an email (mixed case, as people type them), a phone and an
/// mParticle ID, all of which must stay out of every published event.
fn person(n: u32, action: &str, audience: i64) -> Value {
    json!({"user_identities": [raw("customer", &format!("cust-secret-{n}")),
                               raw("email", &format!("Person{n}@Example.com")),
                               raw("mobile_number", &format!("+1415555{n:04}"))],
           "mpid": format!("990099{n}"),
           "audiences": [entry(audience, action)]})
}

const PERSONAL: [&str; 6] = [
    "cust-secret",
    "example.com",
    "Example.com",
    "+1415555",
    "mpid",
    "990099",
];

fn assert_nothing_personal(events: &[Value]) {
    for e in events {
        let text = e.to_string();
        for needle in PERSONAL {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
    }
}

fn of_type<'a>(events: &'a [Value], detail_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["detail-type"] == detail_type)
        .collect()
}

/// (CleverTap ID, action) of each Partner Sync event, sorted.
fn changes(events: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = of_type(events, "Partner Sync")
        .iter()
        .map(|e| {
            (
                e["detail"]["clevertap_id"].as_str().unwrap().to_owned(),
                e["detail"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn adds_and_removes_are_published_once_and_redeliveries_and_stale_changes_never() {
    let mut f = FeedStack::new("feed-live").await;
    let base = now_ms() - 10 * HOUR;
    f.stack
        .send(&f.stack.subscription(CART, "Cart Abandoners", "add", base))
        .await;
    // Hours after the connect: live changes, not the initial population.
    let joined = f.stack.batch(
        "live-1",
        base + 7 * HOUR,
        json!([person(1, "add", CART), person(2, "add", CART),]),
    );
    f.stack.send(&joined).await;
    let first = f.published().await;
    assert_eq!(first.len(), 2, "{first:#?}");
    for e in &first {
        assert_eq!(e["source"], SOURCE);
        assert_eq!(e["detail-type"], "Partner Sync");
        let d = &e["detail"];
        assert_eq!(d["schema_version"], SCHEMA_VERSION);
        assert_eq!(d["project_id"], f.stack.project.id.as_str());
        assert_eq!(d["region"], "eu1");
        assert_eq!(d["action"], "Added");
        assert_eq!(d["partner_segment_id"], CART);
        assert_eq!(d["initial_sync"], false);
        assert_eq!(d["segment_activated_ms"], base);
        assert_eq!(d["mparticle_time_ms"], base + 7 * HOUR);
        assert!(d["recorded_ms"].as_i64().unwrap() >= now_ms() - 60_000);
        let p = &d["properties"];
        assert_eq!(p["Partner Segment Name"], "Audience 47444");
        assert_eq!(p["Action"], "Added");
        assert_eq!(p["Partner Segment ID"], CART);
        assert_eq!(p["CT Source"], "mParticle");
        assert_eq!(p["Partner Name"], "mParticle");
    }
    let ann = first
        .iter()
        .find(|e| {
            // The event ids name the message and the profile's place in it.
            e["detail"]["event_id"]
                .as_str()
                .unwrap()
                .contains(":000000:")
        })
        .expect("the first profile's event")["detail"]
        .clone();

    // The same batch again (mParticle retries): no second event.
    f.stack.send(&joined).await;
    assert_eq!(f.published().await, Vec::<Value>::new());

    // Ann leaves; then an older add of hers arrives late: stale, nothing published.
    f.stack
        .send(&f.stack.batch(
            "live-2",
            base + 8 * HOUR,
            json!([person(1, "delete", CART)]),
        ))
        .await;
    f.stack
        .send(&f.stack.batch(
            "late-1",
            base + 7 * HOUR + HOUR / 2,
            json!([person(1, "add", CART)]),
        ))
        .await;
    let later = f.published().await;
    assert_eq!(
        changes(&later),
        [(
            ann["clevertap_id"].as_str().unwrap().to_owned(),
            "Removed".to_owned()
        )]
    );
    let removed = &later[0]["detail"];
    assert_eq!(removed["initial_sync"], false);
    assert!(
        removed["version"].as_str().unwrap() > ann["version"].as_str().unwrap(),
        "a profile's later change has the greater version"
    );
    assert_ne!(removed["event_id"], ann["event_id"]);
    assert_nothing_personal(&first);
    assert_nothing_personal(&later);
}

#[tokio::test]
async fn the_initial_population_is_marked_and_a_reconnect_starts_a_new_one() {
    let mut f = FeedStack::new("feed-initial").await;
    let base = now_ms() - 20 * HOUR;
    let s = &f.stack;
    s.send(&s.subscription(CART, "Cart Abandoners", "add", base))
        .await;
    // mParticle sends the existing members as plain adds right after the connect…
    s.send(&s.batch("initial-1", base + 60_000, json!([person(1, "add", CART)])))
        .await;
    // …and a live join comes after the window.
    s.send(&s.batch(
        "live-1",
        base + INITIAL_SYNC_WINDOW_MS + 60_000,
        json!([person(2, "add", CART)]),
    ))
    .await;
    let events = f.published().await;
    let mut marks: Vec<(i64, bool)> = events
        .iter()
        .map(|e| {
            (
                e["detail"]["mparticle_time_ms"].as_i64().unwrap(),
                e["detail"]["initial_sync"].as_bool().unwrap(),
            )
        })
        .collect();
    marks.sort();
    assert_eq!(
        marks,
        [
            (base + 60_000, true),
            (base + INITIAL_SYNC_WINDOW_MS + 60_000, false)
        ]
    );

    // Disconnect: the segment is cleared, and one event says so.
    let disconnected = base + INITIAL_SYNC_WINDOW_MS + HOUR;
    let s = &f.stack;
    s.send(&s.subscription(CART, "Cart Abandoners", "remove", disconnected))
        .await;
    let cleared = f.published().await;
    assert_eq!(cleared.len(), 1, "{cleared:#?}");
    assert_eq!(cleared[0]["detail-type"], "Segment Cleared");
    let d = &cleared[0]["detail"];
    assert_eq!(d["partner_segment_id"], CART);
    assert_eq!(d["partner_segment_name"], "Cart Abandoners");
    assert_eq!(d["cleared_before_ms"], disconnected);
    assert_eq!(d["schema_version"], SCHEMA_VERSION);
    assert!(
        d["event_id"]
            .as_str()
            .unwrap()
            .starts_with("cleared:47444:")
    );

    // Reconnect: mParticle sends the population again, marked again.
    let reconnected = disconnected + HOUR;
    let s = &f.stack;
    s.send(&s.subscription(CART, "Cart Abandoners", "add", reconnected))
        .await;
    s.send(&s.batch(
        "initial-2",
        reconnected + 60_000,
        json!([person(1, "add", CART)]),
    ))
    .await;
    let again = f.published().await;
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0]["detail"]["initial_sync"], true);
    assert_eq!(again[0]["detail"]["segment_activated_ms"], reconnected);
    assert_nothing_personal(&events);
    assert_nothing_personal(&cleared);
    assert_nothing_personal(&again);
}

#[tokio::test]
async fn an_erasure_publishes_one_event_naming_only_the_clevertap_id() {
    let mut f = FeedStack::new("feed-erasure").await;
    let base = now_ms() - 10 * HOUR;
    let s = &f.stack;
    s.send(&s.batch(
        "live-1",
        base,
        json!([person(1, "add", CART), person(2, "add", CART),]),
    ))
    .await;
    let joined = f.published().await;
    let ann_ct = joined
        .iter()
        .find(|e| {
            e["detail"]["event_id"]
                .as_str()
                .unwrap()
                .contains(":000000:")
        })
        .unwrap()["detail"]["clevertap_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let before = now_ms();
    let (status, answer) = f
        .stack
        .post(&dsr(
            &f.stack.project,
            "req-feed-1",
            "erasure",
            json!({"email": {"encoding": "raw", "value": "person1@example.com"}}),
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    // The same request again (mParticle retries): answered, nothing published twice.
    let (status, _) = f
        .stack
        .post(&dsr(
            &f.stack.project,
            "req-feed-1",
            "erasure",
            json!({"email": {"encoding": "raw", "value": "person1@example.com"}}),
        ))
        .await;
    assert_eq!(status, 200);
    let erased = f.published().await;
    assert_eq!(erased.len(), 1, "{erased:#?}");
    assert_eq!(erased[0]["detail-type"], "Profile Erased");
    let d = &erased[0]["detail"];
    assert_eq!(d["clevertap_id"], ann_ct.as_str());
    assert_eq!(d["project_id"], f.stack.project.id.as_str());
    assert!(d["erased_before_ms"].as_i64().unwrap() >= before);
    assert_eq!(
        d.as_object().unwrap().keys().collect::<BTreeSet<_>>(),
        [
            "clevertap_id",
            "erased_before_ms",
            "event_id",
            "project_id",
            "recorded_ms",
            "region",
            "schema_version"
        ]
        .iter()
        .map(|k| k.to_string())
        .collect::<BTreeSet<_>>()
        .iter()
        .collect()
    );
    assert_nothing_personal(&joined);
    assert_nothing_personal(&erased);
}

#[tokio::test]
async fn entries_eventbridge_refuses_are_put_again_and_none_is_lost() {
    let plan = local::faults::BusFaultPlan::default();
    let client = local::faults::faulty_bus_client(&eventbridge_endpoint(), plan.clone());
    let mut f = FeedStack::with_bus_client("feed-faults", Some(client)).await;
    let base = now_ms() - 10 * HOUR;
    let people =
        |action: &str, n: u32| -> Value { (0..n).map(|i| person(i, action, CART)).collect() };
    // A few refusals: retried within the invocation.
    plan.refused_entries
        .store(3, std::sync::atomic::Ordering::SeqCst);
    f.stack
        .send(&f.stack.batch("b-1", base, people("add", 12)))
        .await;
    let first = f.published().await;
    assert_eq!(plan.injected.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(changes(&first).len(), 12);
    let ids: BTreeSet<&str> = first
        .iter()
        .map(|e| e["detail"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        12,
        "a refused entry was put once, when it was taken"
    );

    // So many that every try of an invocation is refused: the records go back to the stream
    // and a later invocation publishes them.
    plan.refused_entries
        .store(60, std::sync::atomic::Ordering::SeqCst);
    f.stack
        .send(&f.stack.batch("b-2", base + HOUR, people("delete", 12)))
        .await;
    let second = f.published().await;
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &second {
        *by_id
            .entry(e["detail"]["event_id"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        by_id.len(),
        12,
        "every removal published after the refusals ({} raw)",
        second.len()
    );
    assert!(second.iter().all(|e| e["detail"]["action"] == "Removed"));
    assert_eq!(plan.injected.load(std::sync::atomic::Ordering::SeqCst), 63);
}

#[tokio::test]
async fn a_rule_for_added_on_one_segment_gets_only_those_events() {
    let mut f = FeedStack::new("feed-rule").await;
    // The pattern contract §5 gives for "Action = Added on segment 47444", live joins only.
    let pattern = json!({"source": [SOURCE], "detail-type": ["Partner Sync"],
                         "detail": {"action": ["Added"], "partner_segment_id": [CART],
                                    "initial_sync": [false]}});
    let cart_adds = f
        .feed
        .subscribe(
            &f.bus,
            &format!("{}-cart", f.stack.names.prefix()),
            &pattern.to_string(),
        )
        .await
        .unwrap();
    let base = now_ms() - 10 * HOUR;
    let connected = base - INITIAL_SYNC_WINDOW_MS - HOUR;
    let s = &f.stack;
    s.send(&s.subscription(CART, "Cart Abandoners", "add", connected))
        .await;
    s.send(&s.subscription(47445, "Browsers", "add", connected))
        .await;
    // The audience's existing member, sent right after the connect: initial, not matched.
    s.send(&s.batch("b-0", connected + 60_000, json!([person(4, "add", CART)])))
        .await;
    s.send(&s.batch(
        "b-1",
        base,
        json!([
            person(1, "add", CART),
            person(2, "add", CART),
            person(3, "add", 47445),
        ]),
    ))
    .await;
    // Published before the removal is sent (sent together, the removal could be applied first
    // and the older add would then be stale).
    let mut everything = f.published().await;
    let s = &f.stack;
    s.send(&s.batch("b-2", base + HOUR, json!([person(2, "delete", CART)])))
        .await;
    everything.extend(f.published().await);
    assert_eq!(changes(&everything).len(), 5, "{everything:#?}");
    let matched = f.feed.take(&cart_adds).await.unwrap();
    assert_eq!(matched.len(), 2, "{matched:#?}");
    assert!(
        matched
            .iter()
            .all(|e| e["detail"]["action"] == "Added" && e["detail"]["partner_segment_id"] == CART)
    );
}

#[tokio::test]
async fn an_imports_events_and_live_ones_are_each_published_once_by_their_ways_mapping() {
    // Requests of more than 3 profiles go the bulk way.
    let mut f = FeedStack::with_bulk("feed-ways", 3).await;
    let base = now_ms() - 10 * HOUR;
    f.stack
        .send(&f.stack.subscription(CART, "Cart Abandoners", "add", base))
        .await;
    let import: Vec<Value> = (1..=6).map(|n| person(n, "add", CART)).collect();
    f.stack
        .send(&f.stack.batch("import-1", base + 7 * HOUR, json!(import)))
        .await;
    f.stack
        .send(&f.stack.batch(
            "live-1",
            base + 7 * HOUR,
            json!([person(7, "add", CART), person(8, "add", CART)]),
        ))
        .await;
    let events = f.published().await;
    let ids: BTreeSet<&str> = of_type(&events, "Partner Sync")
        .iter()
        .map(|e| e["detail"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (events.len(), ids.len()),
        (8, 8),
        "each event once, whichever mapping carried it: {events:#?}"
    );
    assert!(ids.iter().any(|id| id.starts_with("import-1:")));
    assert!(ids.iter().any(|id| id.starts_with("live-1:")));
    assert_nothing_personal(&events);
    // Which way each came is ours, not the subscriber's: the detail does not say.
    assert!(events.iter().all(|e| e["detail"].get("way").is_none()));
}
