//! The event bus port's contract: the stack's bus on the EventBridge stand-in (moto, through a
//! catch-all rule and a queue) and the twin bus.

use integration_tests::{eventbridge_endpoint, unique_prefix};
use shared::domain::feed::{FeedEntry, FeedKind, SOURCE};
use shared::ports::bus::{BusError, EntryOutcome, EventBus};
use shared::twin::TwinBus;

/// A bus and a way to see what it delivered (event details, in any order).
trait Observed: EventBus {
    async fn delivered(&self) -> Vec<String>;
}

impl Observed for TwinBus {
    async fn delivered(&self) -> Vec<String> {
        self.put_entries().into_iter().map(|e| e.detail).collect()
    }
}

struct OnStandIn {
    bus: shared::bus::Bus,
    feed: local::feed::LocalFeed,
    all: local::feed::Subscription,
}

impl EventBus for OnStandIn {
    async fn put(&self, entries: &[&FeedEntry]) -> Result<Vec<EntryOutcome>, BusError> {
        self.bus.put(entries).await
    }
}

impl Observed for OnStandIn {
    async fn delivered(&self) -> Vec<String> {
        let events = self.feed.take(&self.all).await.expect("queue");
        events
            .into_iter()
            .map(|e| e["detail"].to_string())
            .collect()
    }
}

async fn on_stand_in(case: &str) -> OnStandIn {
    let feed = local::feed::LocalFeed::new(&eventbridge_endpoint());
    let name = unique_prefix(case);
    feed.create_bus(&name).await.expect("bus");
    let all = feed
        .subscribe(
            &name,
            &format!("{name}-all"),
            &format!(r#"{{"source":["{SOURCE}"]}}"#),
        )
        .await
        .expect("catch-all rule");
    OnStandIn {
        bus: shared::bus::Bus::new(feed.events.clone(), &name),
        feed,
        all,
    }
}

macro_rules! bus_cases {
    ($($case:ident),+ $(,)?) => {
        mod on_eventbridge_stand_in {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::on_stand_in(stringify!($case)).await).await;
                }
            )+
        }
        mod on_twin {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&shared::twin::TwinBus::new()).await;
                }
            )+
        }
    };
}

bus_cases!(
    every_entry_of_a_call_is_put_with_one_outcome_each_in_order,
    a_call_of_more_than_ten_entries_is_refused_whole,
);

fn entries(n: usize) -> Vec<FeedEntry> {
    (0..n)
        .map(|i| FeedEntry {
            kind: FeedKind::ProfileErased,
            detail: format!(r#"{{"event_id":"contract-{i}","n":{i}}}"#),
            recorded_ms: 1_700_000_000_000 + i as i64,
            received_ms: None,
            way: Default::default(),
        })
        .collect()
}

fn normalized(mut details: Vec<String>) -> Vec<serde_json::Value> {
    details.sort();
    let mut values: Vec<serde_json::Value> = details
        .iter()
        .map(|d| serde_json::from_str(d).expect("a JSON detail"))
        .collect();
    values.sort_by_key(|v| v["n"].as_i64());
    values
}

async fn every_entry_of_a_call_is_put_with_one_outcome_each_in_order(bus: &impl Observed) {
    let sent = entries(10);
    let refs: Vec<&FeedEntry> = sent.iter().collect();
    let outcomes = bus.put(&refs).await.expect("the call");
    assert_eq!(outcomes, vec![EntryOutcome::Put; 10]);
    let expected: Vec<String> = sent.iter().map(|e| e.detail.clone()).collect();
    assert_eq!(normalized(bus.delivered().await), normalized(expected));
}

async fn a_call_of_more_than_ten_entries_is_refused_whole(bus: &impl Observed) {
    let sent = entries(11);
    let refs: Vec<&FeedEntry> = sent.iter().collect();
    let err = bus
        .put(&refs)
        .await
        .expect_err("PutEvents takes at most ten entries");
    assert!(matches!(err, BusError::Call(_)), "{err:?}");
    assert!(
        bus.delivered().await.is_empty(),
        "nothing of a refused call is put"
    );
}
