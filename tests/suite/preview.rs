//! `POST /v1/preview` against DynamoDB Local: every rung and skip reason, every entry result,
//! and not one byte written.

use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::region::Region;

async fn call(stack: &Stack, method: &str, passcode: &str, body: &str) -> (u16, Value) {
    stack
        .read_api_as(passcode, method, "/v1/preview", body)
        .await
}

fn sub(stack: &Stack, audience_id: i64, action: &str, ts: i64) -> String {
    stack.subscription(audience_id, &format!("Audience {audience_id}"), action, ts)
}

#[tokio::test]
async fn the_preview_walks_the_ladder_and_the_state_machine_and_writes_nothing() {
    let stack = Stack::new("preview", Region::Eu1).await;
    stack.send(&sub(&stack, 7, "add", 1)).await;
    // Audience 9 was connected, then disconnected.
    stack.send(&sub(&stack, 9, "add", 2)).await;
    stack.send(&sub(&stack, 9, "remove", 3)).await;
    // Imported for real: c-1 (by customer id) and a partner-id profile join audience 7.
    stack
        .send(&stack.batch(
            "m1",
            1_000,
            json!([
                {"user_identities": [raw("customer", "c-1"), raw("email", "ann@example.com")], "mpid": "11",
                 "audiences": [entry(7, "add")]},
                {"partner_identities": [raw("CleverTap_User_ID", "__ctp0001")], "mpid": "12",
                 "audiences": [entry(7, "add")]},
            ]),
        ))
        .await;
    stack.pipeline().await.run_until_idle(50).await.unwrap();
    let before = stack.snapshot().await;
    let member = |v: &Value, ct: &str| {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["clevertap_id"] == ct)
    };

    let mut hashed = raw("customer", "5f4dcc3b5aa765d61d8327deb882cf99");
    hashed["encoding"] = json!("md5");
    let body = json!({"user_profiles": [
        // 0: an existing identity leaving the segment.
        {"user_identities": [raw("customer", "c-1")], "audiences": [entry(7, "delete")]},
        // 1: an existing partner-id profile, already a member.
        {"partner_identities": [raw("CleverTap_User_ID", "__ctp0001")], "audiences": [entry(7, "add")]},
        // 2: a new identity: a new profile, joining 7, and 8 (never seen: created by the import).
        {"user_identities": [raw("customer", "c-new"), raw("email", "Bo@Example.com"), raw("mobile_number", "+4915123456789")],
         "audiences": [entry(7, "add"), entry(8, "add")]},
        // 3: only an mParticle ID: anonymous.
        {"mpid": "123", "audiences": [entry(7, "add")]},
        // 4: a hashed customer id only.
        {"user_identities": [hashed], "audiences": [entry(7, "add")]},
        // 5: nothing usable: an invalid email.
        {"user_identities": [raw("email", "not-an-email")], "audiences": [entry(7, "add")]},
        // 6: the mpid rung: an mParticle ID with an email.
        {"mpid": "555", "user_identities": [raw("email", "cy@example.com")], "audiences": [entry(7, "add")]},
        // 7: entries that change no membership.
        {"user_identities": [raw("customer", "c-1")],
         "audiences": [entry(7, "attribute_update"), {"action": "add", "audience_subscription_settings": {"userIdType": "customer"}}]},
        // 8: an identity beyond the bound of a key.
        {"user_identities": [raw("customer", &"x".repeat(600))], "audiences": [entry(7, "add")]},
        // 9: a disconnected audience.
        {"user_identities": [raw("customer", "c-1")], "audiences": [entry(9, "add")]},
    ]})
    .to_string();
    let (status, v) = call(&stack, "POST", &stack.project.passcode, &body).await;
    assert_eq!(status, 200, "{v}");
    let users = v["users"].as_array().unwrap();
    let user = |i: u64| {
        users
            .iter()
            .find(|u| u["index"] == i)
            .unwrap_or_else(|| panic!("user {i}: {v}"))
    };
    let results = |i: u64| -> Vec<String> {
        user(i)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["result"].as_str().unwrap().to_owned())
            .collect()
    };

    assert_eq!(
        (
            user(0)["rung"].as_str(),
            user(0)["profile_exists"].as_bool()
        ),
        (Some("identity"), Some(true))
    );
    assert!(user(0)["clevertap_id"].as_str().unwrap().starts_with("__"));
    assert_eq!(results(0), ["removed"]);
    assert_eq!(
        (user(1)["rung"].as_str(), user(1)["clevertap_id"].as_str()),
        (Some("partner_id"), Some("__ctp0001"))
    );
    assert_eq!(results(1), ["already_member"]);
    let new = user(2);
    assert_eq!(
        (
            new["rung"].as_str(),
            new["new_profile"].as_bool(),
            &new["clevertap_id"]
        ),
        (Some("identity"), Some(true), &Value::Null)
    );
    assert_eq!(
        (new["email"].as_str(), new["phone"].as_str()),
        (Some("b***@example.com"), Some("+49********789"))
    );
    assert_eq!(results(2), ["added", "added"]);
    assert_eq!(
        (user(3)["skip"].as_str(), results(3)),
        (Some("anonymous"), vec!["user_skipped".to_owned()])
    );
    assert_eq!(
        (
            user(4)["skip"].as_str(),
            user(4)["hashed_identities"].as_u64()
        ),
        (Some("hashed_unusable"), Some(1))
    );
    assert_eq!(
        (user(5)["skip"].as_str(), user(5)["invalid_emails"].as_u64()),
        (Some("no_identity"), Some(1))
    );
    assert_eq!(
        (user(6)["rung"].as_str(), user(6)["new_profile"].as_bool()),
        (Some("mpid"), Some(true))
    );
    assert_eq!(results(6), ["added"]);
    assert_eq!(results(7), ["attribute_update", "missing_audience_id"]);
    assert_eq!(results(9), ["segment_not_active"]);
    assert_eq!(
        (user(8)["skip"].as_str(), results(8)),
        (Some("too_long"), vec!["user_skipped".to_owned()])
    );
    assert_eq!(v["totals"]["ladder"]["too_long"], 1);
    let ladder = &v["totals"]["ladder"];
    assert_eq!(
        (
            ladder["identity"].as_u64(),
            ladder["partner_id"].as_u64(),
            ladder["mpid"].as_u64(),
            ladder["anonymous"].as_u64(),
            ladder["hashed_unusable"].as_u64(),
            ladder["no_identity"].as_u64()
        ),
        (Some(4), Some(1), Some(1), Some(1), Some(1), Some(1))
    );
    assert_eq!(v["totals"]["entries"]["added"], 3);
    assert_eq!(v["written"], false);
    assert!(
        !member(&v, "c-new"),
        "no CleverTap ID is made up for a new identity"
    );
    assert!(
        !v.to_string().contains("Bo@Example.com") && !v.to_string().contains("4915123456789"),
        "masked"
    );

    // A request older than what is stored: the change would be stale.
    let old = stack.batch(
        "m0",
        500,
        json!([{"user_identities": [raw("customer", "c-1")], "audiences": [entry(7, "delete")]}]),
    );
    let (status, v) = call(&stack, "POST", &stack.project.passcode, &old).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["users"][0]["entries"][0]["result"], "stale");

    // Refusals, like the read API's.
    assert_eq!(
        call(&stack, "POST", "wrong-passcode-000000000", &body)
            .await
            .0,
        401
    );
    assert_eq!(
        call(&stack, "GET", &stack.project.passcode, "").await.0,
        405
    );
    let (status, v) = call(
        &stack,
        "POST",
        &stack.project.passcode,
        r#"{"user_profiles":[{"audiences":{}}]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("user_profiles[0].audiences"),
        "{v}"
    );
    let reg = r#"{"type":"module_registration_request"}"#;
    assert_eq!(
        call(&stack, "POST", &stack.project.passcode, reg).await.0,
        400
    );

    assert_eq!(stack.snapshot().await, before, "the preview wrote nothing");
}
