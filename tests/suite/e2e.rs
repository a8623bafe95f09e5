//! End to end over HTTP: the local API Gateway stand-in, the real handlers, the stream pipeline and
//! DynamoDB Local — mParticle's messages in, the read API out.

use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::region::Region;

struct Running {
    port: u16,
    stack: Stack,
    pipeline: local::pipeline::LocalPipeline,
}

async fn start(test: &str) -> Running {
    let stack = Stack::new(test, Region::Eu1).await;
    let port = stack.serve_http().await;
    let pipeline = stack.pipeline().await;
    Running {
        port,
        stack,
        pipeline,
    }
}

impl Running {
    async fn mparticle(&self, body: Value) -> (u16, Value) {
        let auth = format!("Token {CALLER_TOKEN}");
        http(
            self.port,
            "POST",
            "/mparticle",
            &[("Authorization", &auth)],
            &body.to_string(),
        )
        .await
    }

    async fn read_as(&self, project: &TestProject, path: &str) -> (u16, Value) {
        http(
            self.port,
            "GET",
            path,
            &[
                ("X-CleverTap-Account-Id", &project.id),
                ("X-CleverTap-Passcode", &project.passcode),
            ],
            "",
        )
        .await
    }

    async fn read(&self, path: &str) -> Value {
        let (status, body) = self.read_as(&self.stack.project, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn batch(&self, id: &str, ts: i64, profiles: Value) -> Value {
        serde_json::from_str(&self.stack.batch(id, ts, profiles)).unwrap()
    }
}

fn entry_for(aud: i64, action: &str) -> Value {
    json!({"audience_id": aud, "audience_name": "Cart Abandoners", "action": action,
           "audience_subscription_settings": {"userIdType": "customer", "segmentId": "x"}})
}

#[tokio::test]
async fn mparticle_in_read_api_out() {
    let mut run = start("e2e").await;
    let ready = http(run.port, "GET", "/healthz", &[], "").await;
    assert_eq!(ready.0, 200);

    // Registration, then a subscription.
    let (status, reg) = http(
        run.port,
        "POST",
        "/mparticle",
        &[],
        r#"{"type":"module_registration_request","id":"r","timestamp_ms":1}"#,
    )
    .await;
    assert_eq!(
        (status, reg["type"].as_str()),
        (200, Some("module_registration_response"))
    );
    let (status, sub) = run
        .mparticle(
            json!({"type": "audience_subscription_request", "id": "s1", "timestamp_ms": 10,
                          "account": run.stack.project.account(), "audience_id": 4242,
                          "audience_name": "Cart Abandoners", "action": "add"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(sub["audience_subscription_settings"]["segmentId"].is_string());

    // A batch with every rung and skip reason.
    let batch = run.batch("b1", 1_000, json!([
        {"partner_identities": [raw("CleverTap_User_ID", "-hPartner1")], "user_identities": [raw("email", "P@Example.com")],
         "mpid": "1", "audiences": [entry_for(4242, "add")]},
        {"user_identities": [raw("customer", "cust-2"), raw("mobile_number", "+14155550102")], "mpid": "2",
         "audiences": [entry_for(4242, "add")]},
        {"user_identities": [raw("email", "three@example.com")], "mpid": "3", "audiences": [entry_for(4242, "add")]},
        {"mpid": "4", "audiences": [entry_for(4242, "add")]},
        {"user_identities": [{"type": "email", "encoding": "sha256", "value": "abc"}], "mpid": "5", "audiences": [entry_for(4242, "add")]},
        {"device_identities": [raw("android_id", "x")], "audiences": [entry_for(4242, "add")]},
        {"user_identities": [raw("customer", "cust-7"), raw("email", "bad"), raw("mobile_number", "555")],
         "audiences": [entry_for(4242, "add")]},
    ]));
    assert_eq!(
        run.mparticle(batch.clone()).await.1["suspend_subscription"],
        false
    );
    run.pipeline.run_until_idle(40).await.unwrap();
    // A redelivery of the same message.
    assert_eq!(run.mparticle(batch).await.0, 200);
    // A delete, and a stale change older than everything.
    run.mparticle(run.batch("b2", 2_000, json!([
        {"user_identities": [raw("customer", "cust-7")], "audiences": [entry_for(4242, "delete")]}
    ]))).await;
    run.mparticle(run.batch("b0", 500, json!([
        {"user_identities": [raw("customer", "cust-2")], "audiences": [entry_for(4242, "delete")]}
    ]))).await;
    run.pipeline.run_until_idle(40).await.unwrap();

    // Segments and counts.
    let segments = run.read("/v1/segments").await;
    let seg = &segments["segments"][0];
    assert_eq!(seg["type"], "Partner - mParticle");
    assert_eq!(seg["name"], "Cart Abandoners");
    assert_eq!(seg["status"], "active");
    assert_eq!(
        seg["member_count"], 3,
        "partner, customer and mpid users; cust-7 deleted"
    );
    let detail = run.read("/v1/segments/4242").await;
    assert_eq!(
        (
            detail["added_total"].as_i64(),
            detail["removed_total"].as_i64()
        ),
        (Some(4), Some(1)),
        "{}",
        run.read("/v1/syncs").await
    );
    assert!(detail["last_sync_ms"].is_i64());

    // Members, paged.
    let page1 = run.read("/v1/segments/4242/members?limit=2").await;
    assert_eq!(page1["members"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let page2 = run
        .read(&format!(
            "/v1/segments/4242/members?limit=2&cursor={cursor}"
        ))
        .await;
    let mut members: Vec<String> = page1["members"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["members"].as_array().unwrap())
        .map(|m| m["clevertap_id"].as_str().unwrap().to_owned())
        .collect();
    members.sort();
    members.dedup();
    assert_eq!(members.len(), 3);
    assert!(members.contains(&"-hPartner1".to_owned()));

    // The preview through the local API Gateway stand-in (POST /v1/preview): an existing
    // member, already in the segment.
    let (status, preview) = http(
        run.port,
        "POST",
        "/v1/preview",
        &[
            ("X-CleverTap-Account-Id", &run.stack.project.id),
            ("X-CleverTap-Passcode", &run.stack.project.passcode),
        ],
        &json!({"user_profiles": [{"partner_identities": [raw("CleverTap_User_ID", "-hPartner1")],
                                   "audiences": [entry(4242, "add")]}]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        preview["users"][0]["entries"][0]["result"],
        "already_member"
    );

    // A profile, by CleverTap ID and by identity, email and phone.
    let p = run.read("/v1/profiles/-hPartner1").await;
    assert_eq!(p["email"], "p@example.com");
    assert_eq!(p["segments"][0]["partner_segment_id"], 4242);
    let by_identity = run.read("/v1/profiles?identity=cust-2").await;
    let ct2 = by_identity["profiles"][0]["clevertap_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(by_identity["profiles"][0]["phone"], "+14155550102");
    assert_eq!(
        run.read("/v1/profiles?phone=%2B14155550102").await["profiles"][0]["clevertap_id"],
        ct2.as_str()
    );
    assert_eq!(
        run.read("/v1/profiles?email=THREE%40example.com").await["profiles"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let seven = run.read("/v1/profiles?identity=cust-7").await;
    assert_eq!(
        seven["profiles"][0]["segments"],
        json!([]),
        "deleted from the segment"
    );
    assert_eq!(
        (
            seven["profiles"][0]["email"].clone(),
            seven["profiles"][0]["phone"].clone()
        ),
        (Value::Null, Value::Null)
    );

    // Events, newest first.
    let ct7 = seven["profiles"][0]["clevertap_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = run.read(&format!("/v1/profiles/{ct7}/events")).await;
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["properties"]["Action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["Removed", "Added"]);
    let props = &events["events"][0]["properties"];
    assert_eq!(props["Partner Segment ID"], 4242);
    assert_eq!(props["Partner Segment Name"], "Cart Abandoners");
    assert_eq!(
        (props["CT Source"].as_str(), props["Partner Name"].as_str()),
        (Some("mParticle"), Some("mParticle"))
    );
    assert_eq!(events["events"][0]["event"], "Partner Sync");

    // Find People.
    let added = run
        .read("/v1/people?event=Partner%20Sync&segment=4242&action=Added")
        .await;
    assert_eq!(added["profiles"].as_array().unwrap().len(), 4);
    let removed = run
        .read("/v1/people?event=Partner%20Sync&segment=4242&action=Removed")
        .await;
    assert_eq!(removed["profiles"].as_array().unwrap().len(), 1);
    assert_eq!(removed["profiles"][0]["clevertap_id"], ct7.as_str());
    let paged = run
        .read("/v1/people?event=Partner%20Sync&segment=4242&limit=3")
        .await;
    assert_eq!(paged["profiles"].as_array().unwrap().len(), 3);
    let rest = run
        .read(&format!(
            "/v1/people?event=Partner%20Sync&segment=4242&limit=3&cursor={}",
            paged["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest["profiles"].as_array().unwrap().len(), 1);

    // The sync log: three requests (the redelivery stored nothing new), newest first.
    let syncs = run.read("/v1/syncs").await;
    let list = syncs["syncs"].as_array().unwrap();
    let ids: Vec<&str> = list
        .iter()
        .map(|s| s["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b0", "b2", "b1"]);
    let b1 = &list[2];
    assert_eq!(b1["status"], "materialized");
    assert_eq!(b1["profiles"], 7);
    for (k, v) in [
        ("partner_id", 1),
        ("identity", 2),
        ("mpid", 1),
        ("anonymous", 1),
        ("hashed_unusable", 1),
        ("no_identity", 1),
        ("invalid_email", 1),
        ("invalid_phone", 1),
    ] {
        assert_eq!(b1["outcomes"][k], v, "{k}");
    }
    assert_eq!(b1["changes"]["added"], 4);
    assert_eq!(
        list[0]["changes"]["stale"], 1,
        "the old delete was ignored: {}",
        list[0]
    );
    let paged = run.read("/v1/syncs?limit=2").await;
    assert_eq!(paged["syncs"].as_array().unwrap().len(), 2);
    let tail = run
        .read(&format!(
            "/v1/syncs?limit=2&cursor={}",
            paged["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(tail["syncs"][0]["request_id"], "b1");

    // Usage: every Partner Sync event once, in the month of its time (1970-01 here).
    let usage = run.read("/v1/usage?month=1970-01").await;
    assert_eq!(usage["partner_sync_events"], 5);
    assert_eq!(
        run.read("/v1/usage?month=2026-01").await["partner_sync_events"],
        0
    );
}

#[tokio::test]
async fn the_read_api_never_crosses_projects_and_says_what_is_wrong() {
    let mut run = start("e2e-iso").await;
    let other = provision(&run.stack.store, Region::Eu1).await;
    run.mparticle(run.batch("iso-1", 1, json!([
        {"partner_identities": [raw("CleverTap_User_ID", "__secret")], "user_identities": [raw("email", "s@example.com")],
         "audiences": [entry_for(77, "add")]}
    ]))).await;
    run.pipeline.run_until_idle(20).await.unwrap();
    assert_eq!(run.read("/v1/segments/77").await["member_count"], 1);

    for path in [
        "/v1/segments/77",
        "/v1/segments/77/members",
        "/v1/profiles/__secret",
        "/v1/profiles/__secret/events",
        "/v1/people?event=Partner%20Sync&segment=77",
    ] {
        let (status, body) = run.read_as(&other, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["status"], "fail");
    }
    for path in ["/v1/segments", "/v1/syncs"] {
        let (_, body) = run.read_as(&other, path).await;
        assert_eq!(
            body.as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            0,
            "{path}"
        );
    }
    assert_eq!(
        run.read_as(&other, "/v1/profiles?email=s@example.com")
            .await
            .1["profiles"],
        json!([])
    );
    assert_eq!(
        run.read_as(&other, "/v1/usage?month=1970-01").await.1["partner_sync_events"],
        0
    );

    // Authentication and input errors.
    let (status, body) = http(run.port, "GET", "/v1/segments", &[], "").await;
    assert_eq!((status, body["status"].as_str()), (401, Some("fail")));
    let mut wrong = run.stack.project.clone();
    wrong.passcode = "nope".into();
    assert_eq!(run.read_as(&wrong, "/v1/segments").await.0, 401);
    assert_eq!(run.read_as(&run.stack.project, "/v1/nothing").await.0, 404);
    assert_eq!(
        run.read_as(&run.stack.project, "/v1/segments/77/members?limit=0")
            .await
            .0,
        400
    );
    assert_eq!(
        run.read_as(&run.stack.project, "/v1/segments/77/members?cursor=zz")
            .await
            .0,
        400
    );
    assert_eq!(
        run.read_as(&run.stack.project, "/v1/people?segment=77")
            .await
            .0,
        400
    );
    assert_eq!(
        run.read_as(&run.stack.project, "/v1/usage?month=2026-13")
            .await
            .0,
        400
    );
}

/// The same batch through the whole pipeline, on a stack whose segments get one bucket and on
/// one whose segments get many: the same members and counts.
#[tokio::test]
async fn one_bucket_and_many_run_the_pipeline_alike() {
    let mut answers = Vec::new();
    for buckets in [1, shared::store::keys::memberships::DEFAULT_BUCKETS] {
        let stack = Stack::with_buckets(&format!("e2e-b{buckets}"), Region::Eu1, buckets).await;
        let mut pipeline = stack.pipeline_with_lanes(4).await;
        let profiles: Vec<Value> = (0..60)
            .map(|i| json!({"user_identities": [raw("customer", &format!("c-{i}"))], "mpid": format!("{}", i + 1),
                            "audiences": [entry_for(31, "add")]}))
            .collect();
        stack
            .send(&stack.batch("b1", 1_000, Value::Array(profiles)))
            .await;
        pipeline.run_until_idle(200).await.unwrap();
        let (_, segment) = stack.read_api("GET", "/v1/segments/31", "").await;
        let mut members = stack.members(31, 500).await;
        members.sort();
        answers.push((segment["member_count"].clone(), members.len()));
    }
    assert_eq!(answers[0], (json!(60), 60));
    assert_eq!(answers[0], answers[1]);
}

/// The bench's key meter only watches: the pipeline over a metered client ends as it does without
/// it, and the meter counts each membership change once and charges the keys it wrote.
#[tokio::test]
async fn the_key_meter_watches_a_first_sync_without_changing_it() {
    for buckets in [1, shared::store::keys::memberships::DEFAULT_BUCKETS] {
        let plain = Stack::with_buckets(&format!("e2e-meter{buckets}"), Region::Eu1, buckets).await;
        let meter = lab::meter::Meter::default();
        let client = lab::meter::metered_client(&endpoint(), meter.clone());
        let store = shared::store::Store::for_local_stack(
            shared::store::clients::RegionalClients::single(client.clone()),
            plain.names.clone(),
        )
        .with_new_segment_buckets(buckets);
        let mut pipeline = local::pipeline::LocalPipeline::with_lanes(
            &client,
            &endpoint(),
            store,
            plain.names.clone(),
            &[Region::Eu1],
            4,
        )
        .await
        .unwrap();
        meter.start_keys(&plain.names, Region::Eu1);
        let profiles: Vec<Value> = (0..300)
            .map(|i| json!({"user_identities": [raw("customer", &format!("c-{i}"))], "mpid": format!("{}", i + 1),
                            "audiences": [entry_for(32, "add")]}))
            .collect();
        plain
            .send(&plain.batch("b1", 1_000, Value::Array(profiles)))
            .await;
        pipeline.run_until_idle(200).await.unwrap();
        let heat = meter.stop_keys().expect("on");
        // The heat table of this small first sync (`--nocapture` shows it).
        for target in &heat.targets {
            let h = &target.hottest;
            eprintln!(
                "heat buckets={buckets} {:<28} keys {:>4} W/change {:.4} R/change {:.4} hottest {:.5} W {:.4} R {:.4} load {:.3}",
                target.target,
                target.keys,
                target.wcu / heat.changes as f64,
                target.rcu / heat.changes as f64,
                h.key.key,
                h.wcu_per_change,
                h.rcu_per_change,
                h.load
            );
        }
        eprintln!(
            "heat buckets={buckets} total WCU/change {:.3}",
            heat.wcu / heat.changes as f64
        );
        let (_, segment) = plain.read_api("GET", "/v1/segments/32", "").await;
        assert_eq!(segment["member_count"], 300, "{buckets} buckets");
        assert_eq!(heat.changes, 300, "one change per Partner Sync event");
        let memberships = heat
            .targets
            .iter()
            .find(|t| t.target == "memberships")
            .expect("memberships charged");
        assert_eq!(
            memberships.keys as u32,
            if buckets == 1 {
                1
            } else {
                memberships.keys as u32
            }
        );
        assert!(
            memberships.keys as u32 >= buckets.min(40),
            "{} keys",
            memberships.keys
        );
    }
}
