//! Every fixture payload (`tests/fixtures/`, the project's own, one per message shape and edge
//! case of the protocol) parses, and responses keep their wire shape.
//!
//! Requests, `request_*.json`:
//! - `request_membership_add_update_delete.json`: one profile with md5 email and customer ids, four
//!   device ids, a non-mParticle partner id, a numeric-string mpid, and `add`,
//!   `attribute_update` (whose attributes include a stray `{}`) and `delete` entries.
//! - `request_membership_attribute_kinds.json`: a future `firehose_version` ahead of `id`, no mpid,
//!   `add` with attributes, and an `attribute_update` with a plain value, a list value, a tag
//!   (`"value": null`) and an attribute deletion.
//! - `request_membership_heartbeat.json`: verification request, no `user_profiles`.
//! - `request_membership_two_profiles_sha256.json`: two profiles, sha256 emails, raw customer id,
//!   a negative mpid, a partner id, credentials in `account_settings`.
//! - `request_membership_legacy_added_removed.json`: pre-2.0 `added_audiences` /
//!   `removed_audiences`, no `firehose_version`, no mpid (same `id` as the attribute-kinds one).
//! - `request_registration_minimal.json`: registration without `firehose_version`.
//! - `request_registration_versioned.json`: registration with `firehose_version`.
//! - `request_subscription_add.json`: `add` with an audience name.
//! - `request_subscription_add_legacy_audience_zero.json`: old `add`, audience id 0, no name, no
//!   `firehose_version`.
//! - `request_subscription_update.json`: `update` with a description and the previous settings.
//! - `request_subscription_remove.json`: `remove` with the connection settings.
//!
//! Responses, `response_*.json`:
//! - `response_registration_full.json`: every permission list, both `allow_*` flags, text and
//!   boolean settings (hidden, confidential, defaults), an HTML description.
//! - `response_registration_minimal.json`: mpid permission only, two text settings, a `\u`-escaped
//!   description, `firehose_version` last.
//! - `response_subscription_settings.json`: two returned connection settings.
//! - `response_subscription_hidden_id.json`: echoes the subscription `add` id, returns the hidden
//!   list id.
//! - `response_membership_keep.json`: `suspend_subscription: false`.
//! - `response_membership_suspend.json`: echoes the two-profile request id,
//!   `suspend_subscription: true`.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use shared::domain::protocol::*;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 17, "fixtures missing from {dir:?}");
    out
}

#[test]
fn every_request_fixture_parses_to_its_type() {
    let mut seen = 0;
    for (name, body) in fixtures()
        .into_iter()
        .filter(|(n, _)| n.starts_with("request_"))
    {
        let req = parse_request(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wire_type = serde_json::from_slice::<Value>(&body).unwrap()["type"].clone();
        assert_eq!(req.type_name(), wire_type, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 12);
}

fn membership(name: &str) -> MembershipRequest<'static> {
    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    match parse_request(&body).unwrap().into_owned() {
        Request::AudienceMembershipChange(m) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn fixture_details_survive_parsing() {
    let m1 = membership("request_membership_add_update_delete.json");
    let p = &m1.user_profiles.as_ref().unwrap()[0];
    assert_eq!(m1.account.account_id, Some(5093318));
    assert_eq!(p.mpid.as_deref(), Some("80231947"));
    assert_eq!(p.user_identities.len(), 2);
    assert_eq!(p.user_identities[1].kind, UserIdentityType::Customer);
    assert_eq!(p.user_identities[1].encoding, Encoding::Md5);
    assert_eq!(p.device_identity_count, 4);
    assert_eq!(p.partner_identities[0].kind.as_str(), "loyalty_member_id");
    let actions: Vec<_> = p.audiences.iter().map(|a| a.action.clone()).collect();
    assert_eq!(
        actions,
        [
            AudienceAction::Add,
            AudienceAction::AttributeUpdate,
            AudienceAction::Delete
        ]
    );
    // The stray `{}` attribute entry is skipped.
    assert_eq!(p.audiences[1].user_attributes.len(), 2);

    let m2 = membership("request_membership_attribute_kinds.json");
    let attrs = &m2.user_profiles.as_ref().unwrap()[0].audiences[3].user_attributes;
    assert_eq!(
        attrs[1].list_value.as_ref().unwrap(),
        &["north", "coast", "uplands"]
    );
    assert_eq!(
        (attrs[2].key.as_ref(), attrs[2].value.as_deref()),
        ("Has Pet", None)
    );
    assert_eq!(attrs[3].action, AttributeAction::Delete);

    assert!(membership("request_membership_heartbeat.json").is_heartbeat());

    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "request_dsr_erasure_mixed_identities.json")
        .unwrap();
    let Request::DsrProcessing(dsr) = parse_request(&body).unwrap() else {
        panic!("a DSR")
    };
    assert_eq!(dsr.request_type, DsrRequestType::Erasure);
    assert_eq!(dsr.regulation, Regulation::Gdpr);
    assert_eq!(
        dsr.subject_request_id,
        "4b9e0c3f-81d2-47a6-9c55-e2a01f6d7b38"
    );
    assert_eq!(dsr.submitted_ms, Some(1_740_652_744_518));
    let kinds: Vec<&str> = dsr
        .subject_identities
        .iter()
        .map(|i| i.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["android_advertising_id", "controller_customer_id", "email"],
        "one without a value is dropped"
    );

    let m4 = membership("request_membership_two_profiles_sha256.json");
    let p = m4.user_profiles.as_ref().unwrap();
    assert_eq!(p[0].mpid.as_deref(), Some("-4418207761925530118"));
    assert_eq!(p[1].user_identities[0].encoding, Encoding::Sha256);
    assert_eq!(m4.account.account_settings["dataCenter"], "ap");

    let m5 = membership("request_membership_legacy_added_removed.json");
    let a = &m5.user_profiles.as_ref().unwrap()[0].audiences;
    assert_eq!(
        (a[0].audience_id, &a[0].action),
        (Some(918), &AudienceAction::Add)
    );
    assert_eq!(
        (a[1].audience_id, &a[1].action),
        (Some(927), &AudienceAction::Delete)
    );
}

/// Reading a response fixture into our type and writing it back gives the same JSON.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str) {
    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    let original: Value = serde_json::from_slice(&body).unwrap();
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), original, "{name}");
}

#[test]
fn responses_serialize_to_the_fixture_shapes() {
    round_trip::<ModuleRegistrationResponse>("response_registration_full.json");
    round_trip::<ModuleRegistrationResponse>("response_registration_minimal.json");
    round_trip::<AudienceSubscriptionResponse>("response_subscription_settings.json");
    round_trip::<AudienceSubscriptionResponse>("response_subscription_hidden_id.json");
    round_trip::<AudienceMembershipChangeResponse>("response_membership_keep.json");
    round_trip::<AudienceMembershipChangeResponse>("response_membership_suspend.json");
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "add",
            "delete",
            "remove",
            "update",
            "attribute_update",
            "upsert",
            "raw",
            "sha256",
            "customer",
            "email",
            "CleverTap_User_ID",
            "audience_membership_change_request",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "type",
                    "id",
                    "timestamp_ms",
                    "account",
                    "account_id",
                    "account_settings",
                    "user_profiles",
                    "audiences",
                    "audience_id",
                    "action",
                    "mpid",
                    "value",
                    "encoding",
                    "user_identities",
                    "partner_identities",
                    "user_attributes",
                    "list_value",
                    "key",
                    "added_audiences",
                    "removed_audiences",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_request(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let _ = parse_request(v.to_string().as_bytes());
    }

    /// Valid envelopes with arbitrary JSON in the deep parts reach the inner parsers.
    #[test]
    fn arbitrary_profiles_never_panic(profiles in arb_json(), account in arb_json()) {
        for t in ["audience_membership_change_request", "audience_subscription_request"] {
            let body = serde_json::json!({
                "type": t, "id": "x", "timestamp_ms": 1, "audience_id": 1, "action": "add",
                "account": account.clone(), "user_profiles": profiles.clone(),
            });
            if let Err(e) = parse_request(body.to_string().as_bytes()) {
                prop_assert!(!e.path.is_empty());
            }
        }
    }

    /// Truncating a real payload anywhere gives an error, never a panic or a partial parse.
    #[test]
    fn truncated_fixtures_fail_cleanly(cut in 1usize..2000) {
        let (_, body) = fixtures()
            .into_iter()
            .find(|(n, _)| n == "request_membership_add_update_delete.json")
            .unwrap();
        let cut = cut % body.len();
        prop_assert!(parse_request(&body[..cut]).is_err());
    }
}
