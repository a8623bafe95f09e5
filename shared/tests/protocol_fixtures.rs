//! Every example payload of the protocol reference parses, and responses keep their wire shape.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use shared::protocol::*;

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
        .filter(|(n, _)| n.contains("_request"))
    {
        let req = parse_request(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wire_type = serde_json::from_slice::<Value>(&body).unwrap()["type"].clone();
        assert_eq!(req.type_name(), wire_type, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 11);
}

fn membership(name: &str) -> AudienceMembershipChangeRequest {
    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n.starts_with(name))
        .unwrap();
    match parse_request(&body).unwrap() {
        Request::AudienceMembershipChange(m) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn fixture_details_survive_parsing() {
    let m1 = membership("M1");
    let p = &m1.user_profiles.as_ref().unwrap()[0];
    assert_eq!(m1.account.account_id, Some(123456));
    assert_eq!(p.mpid.as_deref(), Some("12345"));
    assert_eq!(p.user_identities.len(), 2);
    assert_eq!(p.user_identities[1].kind, UserIdentityType::Customer);
    assert_eq!(p.user_identities[1].encoding, Encoding::Md5);
    assert_eq!(p.device_identity_count, 4);
    assert_eq!(p.partner_identities[0].kind, "partner_id");
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

    let m2 = membership("M2");
    let attrs = &m2.user_profiles.as_ref().unwrap()[0].audiences[3].user_attributes;
    assert_eq!(
        attrs[1].list_value.as_ref().unwrap(),
        &["grass", "fire", "water"]
    );
    assert_eq!(
        (attrs[2].key.as_str(), attrs[2].value.as_ref()),
        ("Is Commuter", None)
    );
    assert_eq!(attrs[3].action, AttributeAction::Delete);

    assert!(membership("M3").is_heartbeat());

    let m4 = membership("M4");
    let p = m4.user_profiles.as_ref().unwrap();
    assert_eq!(p[0].mpid.as_deref(), Some("-6964353745838423734"));
    assert_eq!(p[1].user_identities[0].encoding, Encoding::Sha256);
    assert_eq!(m4.account.account_settings["region"], "eu");

    let m5 = membership("M5");
    let a = &m5.user_profiles.as_ref().unwrap()[0].audiences;
    assert_eq!(
        (a[0].audience_id, &a[0].action),
        (Some(456), &AudienceAction::Add)
    );
    assert_eq!(
        (a[1].audience_id, &a[1].action),
        (Some(432), &AudienceAction::Delete)
    );
}

/// Reading a response fixture into our type and writing it back gives the same JSON.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str) {
    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n.starts_with(name))
        .unwrap();
    let original: Value = serde_json::from_slice(&body).unwrap();
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), original, "{name}");
}

#[test]
fn responses_serialize_to_the_fixture_shapes() {
    round_trip::<ModuleRegistrationResponse>("R2");
    round_trip::<ModuleRegistrationResponse>("R3");
    round_trip::<AudienceSubscriptionResponse>("S5a");
    round_trip::<AudienceSubscriptionResponse>("S5b");
    round_trip::<AudienceMembershipChangeResponse>("M6a");
    round_trip::<AudienceMembershipChangeResponse>("M6b");
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
        let (_, body) = fixtures().into_iter().find(|(n, _)| n.starts_with("M1")).unwrap();
        let cut = cut % body.len();
        prop_assert!(parse_request(&body[..cut]).is_err());
    }
}
