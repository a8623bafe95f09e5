//! The profiles and erasure-log ports' contract.

use shared::domain::auth::{Project, ProjectStatus, StoredPasscode};
use shared::domain::profile_merge::{
    HeldValue, ProfileField, ProfileMerge, TakeBack, Versioned, data_version,
    message_version_prefix,
};
use shared::domain::records::PropertyValue;
use shared::ports::erasures::ErasureLog;
use shared::ports::profiles::{Profiles, remove_holder, take_back_fields};
use shared::ports::projects::Projects;
use shared::ports::{StoreError, Written};

use super::{HOME, OTHER, contract_cases};

contract_cases!(
    an_identity_is_claimed_once_and_the_loser_learns_the_winner,
    a_claim_is_deleted_only_by_the_profile_it_names,
    a_profile_write_holds_only_against_the_versions_it_planned_from,
    a_property_deleted_keeps_its_version_and_an_identity_is_set_once,
    one_messages_fields_are_taken_back_and_the_rest_stay,
    a_profile_over_the_item_limit_is_refused_and_nothing_is_written,
    holders_are_a_set_and_their_item_goes_with_the_last,
    reads_of_one_key_twice_answer_once,
    erasure_marks_need_the_project_and_tombstones_keep_the_newest_time,
    an_audit_row_is_written_once,
    a_profile_records_every_value_it_was_made_a_holder_of,
    an_erasure_request_keeps_the_cut_off_it_began_with,
);

fn merge(message: &str, email: Option<&str>, plan: Option<&str>) -> ProfileMerge {
    let version = data_version(1_000, message, 0);
    ProfileMerge {
        identity: Some(Versioned {
            value: "c-1".into(),
            version: version.clone(),
        }),
        email: email.map(|e| Versioned {
            value: e.to_owned(),
            version: version.clone(),
        }),
        phone: None,
        properties: plan
            .map(|p| {
                let value = Some(PropertyValue::Text(p.to_owned()));
                ("plan".to_owned(), Versioned { value, version })
            })
            .into_iter()
            .collect(),
    }
}

async fn an_identity_is_claimed_once_and_the_loser_learns_the_winner(port: &impl Profiles) {
    let first = port
        .claim_identity(HOME, "P1", "c-1", "ct-a", "m1", 5)
        .await
        .unwrap();
    assert_eq!((first.clevertap_id.as_str(), first.won), ("ct-a", true));
    let second = port
        .claim_identity(HOME, "P1", "c-1", "ct-b", "m2", 6)
        .await
        .unwrap();
    assert_eq!((second.clevertap_id.as_str(), second.won), ("ct-a", false));
    let claims = port
        .claims_of(HOME, "P1", &["c-1".into(), "c-2".into()])
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims["c-1"].clevertap_id, "ct-a");
    assert_eq!(claims["c-1"].message_id.as_deref(), Some("m1"));
    assert!(
        port.claims_of(OTHER, "P1", &["c-1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        port.claims_of(HOME, "P2", &["c-1".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_claim_is_deleted_only_by_the_profile_it_names(port: &impl Profiles) {
    let _ = port
        .claim_identity(HOME, "P1", "c-1", "ct-a", "m1", 5)
        .await
        .unwrap();
    let by_another = port.delete_claim(HOME, "P1", "c-1", "ct-b").await.unwrap();
    assert_eq!(by_another, Written::ConditionFailed);
    assert_eq!(
        port.claims_of(HOME, "P1", &["c-1".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    let by_owner = port.delete_claim(HOME, "P1", "c-1", "ct-a").await.unwrap();
    assert_eq!(by_owner, Written::Applied);
    let again = port.delete_claim(HOME, "P1", "c-1", "ct-a").await.unwrap();
    assert_eq!(again, Written::ConditionFailed, "nothing left to delete");
}

async fn a_profile_write_holds_only_against_the_versions_it_planned_from(port: &impl Profiles) {
    let new = merge("m1", Some("a@x.io"), Some("gold"))
        .plan(None)
        .unwrap();
    assert!(
        port.write_profile(HOME, "P1", "ct", &new, 7)
            .await
            .unwrap()
            .applied()
    );
    // The same plan again expects no versions: another writer was first.
    assert_eq!(
        port.write_profile(HOME, "P1", "ct", &new, 8).await.unwrap(),
        Written::ConditionFailed
    );
    let stored = port.profile(HOME, "P1", "ct").await.unwrap().unwrap();
    assert_eq!(stored.email.as_deref(), Some("a@x.io"));
    assert_eq!(stored.identity.as_deref(), Some("c-1"));
    assert_eq!(
        stored.properties["plan"],
        PropertyValue::Text("gold".into())
    );
    assert_eq!(stored.versions.email, Some(data_version(1_000, "m1", 0)));
    assert_eq!(stored.versions.identity, Some(data_version(1_000, "m1", 0)));
    assert_eq!((stored.created_ms, stored.updated_ms), (Some(7), Some(7)));
    // Planned from what is stored, a newer message writes.
    let newer = ProfileMerge {
        email: Some(Versioned {
            value: "b@x.io".into(),
            version: data_version(2_000, "m2", 0),
        }),
        ..ProfileMerge::default()
    };
    let write = newer.plan(Some(&stored)).unwrap();
    assert!(
        port.write_profile(HOME, "P1", "ct", &write, 9)
            .await
            .unwrap()
            .applied()
    );
    let stored = port.profile(HOME, "P1", "ct").await.unwrap().unwrap();
    assert_eq!(stored.email.as_deref(), Some("b@x.io"));
    assert_eq!((stored.created_ms, stored.updated_ms), (Some(7), Some(9)));
    assert_eq!(port.profile(OTHER, "P1", "ct").await.unwrap(), None);
}

async fn a_property_deleted_keeps_its_version_and_an_identity_is_set_once(port: &impl Profiles) {
    let new = merge("m1", None, Some("gold")).plan(None).unwrap();
    assert!(
        port.write_profile(HOME, "P1", "ct", &new, 7)
            .await
            .unwrap()
            .applied()
    );
    let stored = port.profile(HOME, "P1", "ct").await.unwrap().unwrap();
    let mut delete = merge("m2", None, None);
    let version = data_version(2_000, "m2", 0);
    delete.identity = Some(Versioned {
        value: "c-other".into(),
        version: version.clone(),
    });
    delete.properties.insert(
        "plan".into(),
        Versioned {
            value: None,
            version: version.clone(),
        },
    );
    let write = delete.plan(Some(&stored)).unwrap();
    assert_eq!(write.identity, None, "the profile has its Identity");
    assert!(
        port.write_profile(HOME, "P1", "ct", &write, 8)
            .await
            .unwrap()
            .applied()
    );
    let stored = port.profile(HOME, "P1", "ct").await.unwrap().unwrap();
    assert!(stored.properties.is_empty());
    assert_eq!(stored.versions.properties["plan"], version);
    assert_eq!(stored.identity.as_deref(), Some("c-1"));
}

async fn one_messages_fields_are_taken_back_and_the_rest_stay(port: &impl Profiles) {
    // m1 gives the profile its Identity and email; m2 its plan.
    let first = merge("m1", Some("a@x.io"), None).plan(None).unwrap();
    assert!(
        port.write_profile(HOME, "P1", "ct", &first, 7)
            .await
            .unwrap()
            .applied()
    );
    port.add_holder(HOME, "P1", HeldValue::Email, "a@x.io", "ct")
        .await
        .unwrap();
    let stored = port.profile(HOME, "P1", "ct").await.unwrap().unwrap();
    let second = merge("m2", None, Some("gold")).plan(Some(&stored)).unwrap();
    assert!(
        port.write_profile(HOME, "P1", "ct", &second, 8)
            .await
            .unwrap()
            .applied()
    );

    // A take-back planned against versions that moved does nothing.
    let stale = TakeBack {
        fields: vec![(ProfileField::Email, data_version(1_000, "m0", 0))],
        held: vec![],
        whole: false,
    };
    assert_eq!(
        port.take_back(HOME, "P1", "ct", &stale).await.unwrap(),
        Written::ConditionFailed
    );
    take_back_fields(port, HOME, "P1", "ct", &message_version_prefix(1_000, "m1"))
        .await
        .unwrap();
    let stored = port.profile(HOME, "P1", "ct").await.unwrap().unwrap();
    assert_eq!((stored.identity, stored.email), (None, None));
    assert_eq!(stored.versions.email, None);
    assert_eq!(
        stored.properties["plan"],
        PropertyValue::Text("gold".into())
    );
    assert!(
        port.holders(HOME, "P1", HeldValue::Email, "a@x.io")
            .await
            .unwrap()
            .is_empty(),
        "the value taken back no longer leads to the profile"
    );
    // The last message's fields go with the profile.
    take_back_fields(port, HOME, "P1", "ct", &message_version_prefix(1_000, "m2"))
        .await
        .unwrap();
    assert_eq!(port.profile(HOME, "P1", "ct").await.unwrap(), None);
    assert_eq!(
        port.delete_profile(HOME, "P1", "ct").await.unwrap(),
        Written::ConditionFailed
    );
}

async fn a_profile_over_the_item_limit_is_refused_and_nothing_is_written(port: &impl Profiles) {
    let mut big = merge("m1", None, None);
    big.properties.insert(
        "blob".into(),
        Versioned {
            value: Some(PropertyValue::Text("x".repeat(401 * 1024))),
            version: data_version(1_000, "m1", 0),
        },
    );
    let write = big.plan(None).unwrap();
    let refused = port
        .write_profile(HOME, "P1", "ct", &write, 7)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Rejected(m) if m.contains("ValidationException")),
        "{refused:?}"
    );
    assert_eq!(port.profile(HOME, "P1", "ct").await.unwrap(), None);
}

async fn holders_are_a_set_and_their_item_goes_with_the_last(port: &impl Profiles) {
    let phone = "+15550001";
    for ct in ["ct-a", "ct-b", "ct-a"] {
        port.add_holder(HOME, "P1", HeldValue::Phone, phone, ct)
            .await
            .unwrap();
    }
    let mut holders = port
        .holders(HOME, "P1", HeldValue::Phone, phone)
        .await
        .unwrap();
    holders.sort();
    assert_eq!(holders, ["ct-a", "ct-b"]);
    assert!(
        port.holders(HOME, "P1", HeldValue::Email, phone)
            .await
            .unwrap()
            .is_empty()
    );
    remove_holder(port, HOME, "P1", HeldValue::Phone, phone, "ct-a")
        .await
        .unwrap();
    assert_eq!(
        port.drop_holders_if_empty(HOME, "P1", HeldValue::Phone, phone)
            .await
            .unwrap(),
        Written::ConditionFailed,
        "ct-b still holds it"
    );
    port.take_holder_off(HOME, "P1", HeldValue::Phone, phone, "ct-b")
        .await
        .unwrap();
    assert!(
        port.holders(HOME, "P1", HeldValue::Phone, phone)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        port.drop_holders_if_empty(HOME, "P1", HeldValue::Phone, phone)
            .await
            .unwrap(),
        Written::Applied
    );
}

async fn reads_of_one_key_twice_answer_once(port: &(impl Profiles + ErasureLog)) {
    let new = merge("m1", None, None).plan(None).unwrap();
    assert!(
        port.write_profile(HOME, "P1", "ct", &new, 7)
            .await
            .unwrap()
            .applied()
    );
    let _ = port
        .claim_identity(HOME, "P1", "c-1", "ct", "m1", 5)
        .await
        .unwrap();
    let twice = ["ct".to_owned(), "ct".to_owned()];
    assert_eq!(port.profiles(HOME, "P1", &twice).await.unwrap().len(), 1);
    let claims = port
        .claims_of(HOME, "P1", &["c-1".into(), "c-1".into()])
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let tombstones = port
        .tombstones(HOME, "P1", &["h".into(), "h".into()])
        .await
        .unwrap();
    assert!(tombstones.is_empty());
}

async fn erasure_marks_need_the_project_and_tombstones_keep_the_newest_time(
    port: &(impl ErasureLog + Projects),
) {
    assert!(!port.erasure_marks(HOME, "P1").await.unwrap().had_erasure);
    let missing = port.mark_erasures(HOME, "P1").await.unwrap_err();
    assert!(matches!(missing, StoreError::Rejected(_)), "{missing:?}");
    let project = Project {
        project_id: "P1".into(),
        region: HOME,
        account_token: "token".into(),
        passcodes: vec![StoredPasscode::new("first-passcode", None)],
        status: ProjectStatus::Active,
        created_ms: 1,
    };
    port.create_project(&project).await.unwrap();
    assert!(port.mark_erasures(HOME, "P1").await.unwrap().had_erasure);
    let marks = port.erasure_marks(HOME, "P1").await.unwrap();
    assert!(marks.had_erasure && marks.legacy_salt.is_none());
    assert_eq!(
        port.project(HOME, "P1").await.unwrap(),
        Some(project),
        "credentials intact"
    );
    assert!(!port.erasure_marks(OTHER, "P1").await.unwrap().had_erasure);

    assert!(
        port.write_tombstone(HOME, "P1", "h1", 200)
            .await
            .unwrap()
            .applied()
    );
    assert_eq!(
        port.write_tombstone(HOME, "P1", "h1", 100).await.unwrap(),
        Written::ConditionFailed,
        "an older erasure never replaces a newer one"
    );
    assert!(
        port.write_tombstone(HOME, "P1", "h1", 300)
            .await
            .unwrap()
            .applied()
    );
    let found = port
        .tombstones(HOME, "P1", &["h1".into(), "h2".into()])
        .await
        .unwrap();
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [("h1".to_owned(), 300)]
    );
    assert!(
        port.tombstones(HOME, "P2", &["h1".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_audit_row_is_written_once(
    port: &(impl Profiles + shared::ports::erasures::ErasureAudits),
) {
    use shared::domain::erasure::{ErasureAudit, ErasureCounts, ErasureSource};
    let audit = ErasureAudit {
        request_id: "r1".into(),
        regulation: "gdpr".into(),
        source: ErasureSource::Mparticle,
        erased_ms: 10,
        submitted_ms: None,
        completed_ms: 11,
        removed: ErasureCounts::default(),
    };
    assert_eq!(port.erasure_audit(HOME, "P1", "r1").await.unwrap(), None);
    assert!(
        port.put_erasure_audit(HOME, "P1", &audit)
            .await
            .unwrap()
            .applied()
    );
    let mut later = audit.clone();
    later.completed_ms = 99;
    assert_eq!(
        port.put_erasure_audit(HOME, "P1", &later).await.unwrap(),
        Written::ConditionFailed,
        "the first row stands"
    );
    assert_eq!(
        port.erasure_audit(HOME, "P1", "r1").await.unwrap(),
        Some(audit)
    );
    assert_eq!(port.erasure_audit(OTHER, "P1", "r1").await.unwrap(), None);
}

async fn a_profile_records_every_value_it_was_made_a_holder_of(port: &impl Profiles) {
    let entry = |kind, v: &str| (kind, v.to_owned());
    let mut first = merge("m1", Some("old@x.io"), None).plan(None).unwrap();
    first.recorded = first.recording(None);
    let v1 = first.recorded[0].1.clone();
    assert!(
        (port.write_profile(HOME, "P1", "ct-a", &first, 5).await)
            .unwrap()
            .applied()
    );
    let read = port.profile(HOME, "P1", "ct-a").await.unwrap().unwrap();
    let mut second = merge("m2", Some("new@x.io"), None)
        .plan(Some(&read))
        .unwrap();
    second.recorded = second.recording(Some(&read));
    let v2 = second.recorded[0].1.clone();
    assert!(
        (port.write_profile(HOME, "P1", "ct-a", &second, 6).await)
            .unwrap()
            .applied()
    );
    let stored = port.profile(HOME, "P1", "ct-a").await.unwrap().unwrap();
    assert_eq!(stored.email.as_deref(), Some("new@x.io"));
    assert_eq!(
        stored.held,
        [
            (entry(HeldValue::Email, "new@x.io"), v2),
            (entry(HeldValue::Email, "old@x.io"), v1.clone())
        ]
        .into(),
        "a former value stays recorded with the version that gave it"
    );
    // Taking the second message back leaves the first's record.
    let take = TakeBack::plan(&stored, &message_version_prefix(1_000, "m2")).unwrap();
    assert!(!take.whole);
    let taken = port.take_back(HOME, "P1", "ct-a", &take).await.unwrap();
    assert!(taken.applied());
    let left = port.profile(HOME, "P1", "ct-a").await.unwrap().unwrap();
    assert_eq!(
        left.held,
        [(entry(HeldValue::Email, "old@x.io"), v1)].into()
    );
}

async fn an_erasure_request_keeps_the_cut_off_it_began_with(
    port: &(impl Profiles + shared::ports::erasures::ErasureAudits),
) {
    use shared::ports::erasures::Begun;
    let found = |ids: &[&str], held: &[(&str, &str)]| Begun {
        cut_off_ms: 0,
        clevertap_ids: ids.iter().map(|s| s.to_string()).collect(),
        holders: (held.iter())
            .map(|(v, ct)| (HeldValue::Email, v.to_string(), ct.to_string()))
            .collect(),
    };
    let first = (port.begin_erasure(
        HOME,
        "P1",
        "r1",
        100,
        &found(&["ct-a"], &[("a@x.io", "ct-a")]),
    ))
    .await
    .unwrap();
    assert_eq!(first.cut_off_ms, 100);
    assert_eq!(
        first,
        Begun {
            cut_off_ms: 100,
            ..found(&["ct-a"], &[("a@x.io", "ct-a")])
        }
    );
    let retried = (port.begin_erasure(
        HOME,
        "P1",
        "r1",
        200,
        &found(&["ct-b"], &[("b@x.io", "ct-b")]),
    ))
    .await
    .unwrap();
    assert_eq!(
        retried.cut_off_ms, 100,
        "a retry keeps the first attempt's cut-off"
    );
    assert_eq!(
        retried,
        Begun {
            cut_off_ms: 100,
            ..found(&["ct-a", "ct-b"], &[("a@x.io", "ct-a"), ("b@x.io", "ct-b")])
        },
        "and adds what it found"
    );
    let again = port
        .begin_erasure(HOME, "P1", "r1", 300, &found(&[], &[]))
        .await
        .unwrap();
    assert_eq!(again, retried);
    let other = port
        .begin_erasure(HOME, "P1", "r2", 300, &found(&[], &[]))
        .await
        .unwrap();
    assert_eq!(
        other,
        Begun {
            cut_off_ms: 300,
            ..Begun::default()
        }
    );
    let elsewhere = port
        .begin_erasure(OTHER, "P1", "r1", 400, &found(&[], &[]))
        .await
        .unwrap();
    assert_eq!(elsewhere.cut_off_ms, 400, "regions are apart");
    assert_eq!(
        port.erasure_audit(HOME, "P1", "r1").await.unwrap(),
        None,
        "beginning is not completing: no audit row"
    );
    // Finished: what was recorded goes; finishing again is harmless.
    port.finish_erasure(HOME, "P1", "r1").await.unwrap();
    port.finish_erasure(HOME, "P1", "r1").await.unwrap();
    let fresh = port
        .begin_erasure(HOME, "P1", "r1", 500, &found(&[], &[]))
        .await
        .unwrap();
    assert_eq!(
        fresh,
        Begun {
            cut_off_ms: 500,
            ..Begun::default()
        }
    );
}
