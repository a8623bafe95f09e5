//! The invocation metrics: the sample events of `events/` through their handlers against DynamoDB
//! Local, each invocation's EMF line checked against the format's rules (AWS, "Specification:
//! Embedded metric format") and its values against what the known batch must give.

use std::collections::HashSet;
use std::time::Duration;

use integration_tests::*;
use serde_json::Value;
use shared::domain::region::Region;
use shared::stages::http::Outcome;
use shared::stages::metrics::Metrics;

const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one line against the EMF specification and answers its root object.
fn check_emf(line: &str) -> Value {
    assert!(!line.contains('\n'), "one line per record");
    assert!(line.len() < 256 * 1024, "well under the size limit");
    let root: Value = serde_json::from_str(line).expect("a JSON object, nothing before or after");
    let aws = root["_aws"].as_object().expect("an _aws object");
    let ts = aws["Timestamp"].as_i64().expect("Timestamp: integer ms");
    assert!(ts > 1_600_000_000_000, "Timestamp in ms since the epoch");
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics array");
    assert!(!directives.is_empty());
    for d in directives {
        let ns = d["Namespace"].as_str().expect("Namespace string");
        assert!(!ns.is_empty() && ns.len() <= 1024);
        let sets = d["Dimensions"]
            .as_array()
            .expect("Dimensions: array of arrays");
        assert!(!sets.is_empty(), "at least one dimension set");
        for set in sets {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30, "≤ 30 dimensions per set");
            for name in set {
                let name = name.as_str().expect("dimension names are strings");
                let value = root[name].as_str().unwrap_or_else(|| {
                    panic!("dimension {name} must be a string member of the root")
                });
                assert!(value.chars().count() <= 1024);
                assert!(
                    ["function", "region", "status", "outcome"].contains(&name),
                    "low-cardinality dimensions only, not {name}"
                );
            }
        }
        let metrics = d["Metrics"].as_array().expect("Metrics array");
        assert!(metrics.len() <= 100, "≤ 100 metrics per directive");
        let mut names = HashSet::new();
        for m in metrics {
            let name = m["Name"].as_str().expect("metric Name");
            assert!(names.insert(name), "{name} defined once");
            if let Some(unit) = m.get("Unit") {
                assert!(UNITS.contains(&unit.as_str().unwrap()), "unit {unit}");
            }
            match &root[name] {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(
                        !values.is_empty() && values.len() <= 100,
                        "{name}: 1–100 values"
                    );
                    assert!(values.iter().all(Value::is_number), "{name}: numbers");
                }
                other => {
                    panic!("metric {name} must be a number or numbers at the root, is {other}")
                }
            }
        }
    }
    root
}

fn metrics(function: &'static str) -> Metrics {
    Metrics::new(Some("ctmp-eu1".into()), function, Region::Eu1)
}

#[tokio::test]
async fn each_invocation_gives_one_valid_emf_line_with_the_batch_figures() {
    let stack = SampleStack::new("metrics").await;
    let (names, store, endpoint) = (&stack.names, &stack.store, &stack.endpoint);
    let stream_event = |name: &str| stack.stream_event(name);
    let request = |name: &str| {
        let req = lambda_http::request::from_str(&sample_event(name)).unwrap();
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        (auth, req.body().as_ref().to_vec())
    };

    // authorize: the sample batch of three profiles, stored in one chunk; then a redelivery.
    let (auth, body) = request("authorize-membership-batch.json");
    for (expected, outcome) in [
        (
            "stored",
            Outcome::Stored {
                profiles: 3,
                chunks: 1,
            },
        ),
        (
            "duplicate",
            Outcome::Duplicate {
                profiles: 3,
                chunks: 1,
            },
        ),
    ] {
        let reply = endpoint.handle("POST", auth.as_deref(), &body).await;
        assert_eq!(reply.outcome, outcome);
        let v = check_emf(
            &metrics("authorize")
                .request(&reply, Duration::from_millis(7))
                .to_line(),
        );
        assert_eq!(
            (
                v["function"].as_str(),
                v["region"].as_str(),
                v["status"].as_str(),
                v["outcome"].as_str()
            ),
            (Some("authorize"), Some("eu1"), Some("200"), Some(expected))
        );
        assert_eq!(
            (
                v["Requests"].as_f64(),
                v["Profiles"].as_f64(),
                v["Chunks"].as_f64()
            ),
            (Some(1.0), Some(3.0), Some(1.0))
        );
        assert_eq!(v["Latency"].as_f64(), Some(7.0));
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([
                ["function", "region"],
                ["function", "region", "status"],
                ["function", "region", "status", "outcome"]
            ])
        );
    }
    let reply = endpoint.handle("POST", None, &body).await;
    let v = check_emf(
        &metrics("authorize")
            .request(&reply, Duration::ZERO)
            .to_line(),
    );
    assert_eq!(
        (v["status"].as_str(), v["outcome"].as_str()),
        (Some("401"), Some("unauthorized"))
    );
    assert!(
        v.get("Profiles").is_none(),
        "no profiles counted for a refused request"
    );
    let line = metrics("authorize")
        .request(&reply, Duration::ZERO)
        .to_line();
    assert!(
        !line.contains("W9R-K6W-ZZ7Z") && !line.contains("cust-1001"),
        "no ids in metrics"
    );

    // resolve: one chunk, the ladder's rungs for the sample's three profiles.
    let (resolved, batch) = shared::stages::resolve::handle_inbox_event(
        store,
        names,
        stream_event("resolve-inbox-insert.json"),
    )
    .await;
    assert!(resolved.batch_item_failures.is_empty());
    let v = check_emf(
        &metrics("resolve")
            .resolve(&batch, Duration::from_millis(40))
            .to_line(),
    );
    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(
        (n("Chunks"), n("ChunksFailed"), n("ChunksRetried")),
        (1.0, 0.0, 0.0)
    );
    // A partner id (the CleverTap ID), two customer ids (the connection's userIdType).
    assert_eq!(
        (
            n("ProfilesByPartnerId"),
            n("ProfilesByIdentity"),
            n("ProfilesByMpid")
        ),
        (1.0, 2.0, 0.0)
    );
    assert_eq!(
        n("SkippedAnonymous") + n("SkippedHashedUnusable") + n("SkippedNoIdentity"),
        0.0
    );
    assert_eq!(n("ChangesHandedOff"), 3.0);
    assert_eq!(n("TransactionConflicts"), 0.0, "nothing ran alongside");
    assert_eq!(n("Duration"), 40.0);

    // materialize: two adds and the delete of someone who was never a member.
    let (materialized, batch) = shared::stages::materialize::handle_event(
        store,
        names,
        stream_event("materialize-inbox-resolved.json"),
    )
    .await;
    assert!(materialized.batch_item_failures.is_empty());
    let v = check_emf(
        &metrics("materialize")
            .materialize(&batch, Duration::from_millis(25))
            .to_line(),
    );
    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(n("Chunks"), 1.0);
    assert_eq!((n("MembersAdded"), n("MembersRemoved")), (2.0, 0.0));
    assert_eq!(
        (n("ChangesApplied"), n("PartnerSyncEvents")),
        (2.0, 2.0),
        "one event per applied change"
    );
    assert_eq!(
        n("ChangesApplied")
            + n("ChangesNoop")
            + n("ChangesDuplicate")
            + n("ChangesStale")
            + n("ChangesArchived"),
        3.0
    );
    // The sample row was received at 1767225601234 (2026-01-01): its latency is from then to now.
    assert!(n("ChunkLatency") > 0.0);
    // The same record again (a stream redelivery): nothing applied, no event.
    let (_, again) = shared::stages::materialize::handle_event(
        store,
        names,
        stream_event("materialize-inbox-resolved.json"),
    )
    .await;
    let v = check_emf(
        &metrics("materialize")
            .materialize(&again, Duration::ZERO)
            .to_line(),
    );
    assert_eq!(
        (
            v["ChangesApplied"].as_f64(),
            v["PartnerSyncEvents"].as_f64()
        ),
        (Some(0.0), Some(0.0))
    );
    assert_eq!(
        (
            v["Chunks"].as_f64(),
            v["ChunksReplayed"].as_f64(),
            v["ChangesDuplicate"].as_f64()
        ),
        (Some(0.0), Some(1.0), Some(3.0)),
        "a replayed chunk is counted once, apart"
    );
    assert!(v.get("ChunkLatency").is_none(), "no latency for a replay");

    // The inbox record again for resolve: the row is resolved already.
    let (_, replay) = shared::stages::resolve::handle_inbox_event(
        store,
        names,
        stream_event("resolve-inbox-insert.json"),
    )
    .await;
    assert_eq!(
        (replay.chunks, replay.chunks_replayed, replay.changes),
        (0, 1, 0)
    );

    // Without a namespace (tests, run-local) nothing is printed, but the record still builds.
    let quiet = Metrics::new(None, "resolve", Region::Eu1);
    check_emf(&quiet.resolve(&Default::default(), Duration::ZERO).to_line());
}
