//! `POST /v1/preview`: what importing a membership request would do, without doing it.
//!
//! The body is a Firehose membership request, or an object with just its `user_profiles` (at
//! most [`MAX_PREVIEW_PROFILES`]). The profiles take the import's own path: the stored form
//! (`batch::StoredProfile`), the ladder (`resolve::ladder`), the entry rules
//! (`resolve::entry_change`) and the segment state machine (`segment_state::apply`), against what
//! the tables hold now. Only reads (GetItem, BatchGetItem): nothing is claimed, created or written.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::batch::StoredProfile;
use crate::changes::{ChangeAction, MembershipChange};
use crate::identity::{ProfileKey, Rung, SkipReason};
use crate::protocol::{self, Encoding, Request, now_ms};
use crate::region::Region;
use crate::resolve::{NoChange, ResolveOutcomes, entry_change, ladder};
use crate::segment_state::{MemberState, Outcome, SyncAction, apply};
use crate::store::memberships::{member_state, membership_key};
use crate::store::profiles::{identity_key, profile_key};
use crate::store::segments::{SegmentKey, status as segment_status};
use crate::store::{Item, Store, StoreError, get_s};
use crate::tables::Table;

/// Profiles one preview takes at most.
pub const MAX_PREVIEW_PROFILES: usize = 1_000;

/// Why a preview body is refused (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreviewInputError {
    #[error("{0}")]
    Parse(protocol::ParseError),
    #[error(
        "a preview takes an audience_membership_change_request or {{\"user_profiles\": [...]}}"
    )]
    NotMembership,
    #[error("a preview takes at most {MAX_PREVIEW_PROFILES} profiles, this body has {0}")]
    TooMany(usize),
}

/// The profiles of a preview body in their stored form, and the message time and id the
/// changes would carry (a body of just `user_profiles` is taken as sent now).
pub fn preview_input(body: &[u8]) -> Result<(Vec<StoredProfile>, i64, String), PreviewInputError> {
    let wrapped;
    let body = match protocol::peek_type(body) {
        Some(_) => body,
        None => {
            // Just `{"user_profiles": …}`: the same parser, with the envelope filled in.
            let text = std::str::from_utf8(body).map_err(|_| {
                PreviewInputError::Parse(protocol::parse_request(body).unwrap_err())
            })?;
            let Some(rest) = text.trim_start().strip_prefix('{') else {
                return Err(PreviewInputError::NotMembership);
            };
            wrapped = format!(
                r#"{{"type":"audience_membership_change_request","id":"preview","timestamp_ms":{},"account":{{}},{}"#,
                now_ms(),
                rest.trim_start()
            );
            wrapped.as_bytes()
        }
    };
    match protocol::parse_request(body).map_err(PreviewInputError::Parse)? {
        Request::AudienceMembershipChange(m) => {
            let profiles = m.user_profiles.unwrap_or_default();
            if profiles.len() > MAX_PREVIEW_PROFILES {
                return Err(PreviewInputError::TooMany(profiles.len()));
            }
            let stored = profiles
                .iter()
                .enumerate()
                .map(|(i, p)| StoredProfile::from_wire(i as u32, p))
                .collect();
            Ok((stored, m.envelope.timestamp_ms, m.envelope.id))
        }
        _ => Err(PreviewInputError::NotMembership),
    }
}

/// `a***@example.com`: enough to recognise, not to read.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// `+49*******789`: the country prefix and the last three digits.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let keep_head = if chars.first() == Some(&'+') { 3 } else { 0 };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i + 3 >= chars.len() {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// What one audience entry would come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryPreview {
    /// Would join the segment: a Partner Sync event, Action Added.
    Added,
    /// Would leave the segment: a Partner Sync event, Action Removed.
    Removed,
    /// Is a member already: nothing changes.
    AlreadyMember,
    /// Is not a member: the delete changes nothing.
    NotMember,
    /// Older than the membership's last change: ignored.
    Stale,
    /// This very change was applied already.
    Duplicate,
    /// The audience is not connected (never, or disconnected): ignored.
    SegmentNotActive,
    /// The user is skipped (see `skip`): nothing of it is imported.
    UserSkipped,
    AttributeUpdate,
    UnknownAction,
    MissingAudienceId,
}

/// The preview of a membership request for one project.
pub async fn preview(
    store: &Store,
    region: Region,
    project: &str,
    profiles: &[StoredProfile],
    message_ts: i64,
    message_id: &str,
) -> Result<Value, StoreError> {
    // 1. The ladder (pure), as resolve runs it.
    let mut outcomes = ResolveOutcomes::default();
    let resolved = ladder(profiles, &mut outcomes);

    // 2. Identities to CleverTap IDs: existing claims only (a new identity would be claimed).
    let identities: HashSet<&str> = resolved
        .iter()
        .filter_map(|r| match &r.resolution.outcome {
            Ok((ProfileKey::Identity(id), _)) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let claim_prefix = crate::keys::profiles::identity_pk(project, "");
    let clevertap_of: HashMap<String, String> = store
        .batch_get(
            region,
            Table::Profiles,
            identities
                .iter()
                .map(|id| identity_key(project, id))
                .collect(),
        )
        .await?
        .iter()
        .filter_map(|item| {
            let id = get_s(item, crate::keys::PK)?.strip_prefix(&claim_prefix)?;
            Some((id.to_owned(), get_s(item, "clevertap_id")?.to_owned()))
        })
        .collect();
    let target = |outcome: &Result<(ProfileKey, Rung), SkipReason>| match outcome {
        Ok((ProfileKey::CleverTapId(ct), _)) => Some(ct.clone()),
        Ok((ProfileKey::Identity(id), _)) => clevertap_of.get(id).cloned(),
        Err(_) => None,
    };
    // Who a membership belongs to while simulating: the CleverTap ID, or for an identity not
    // claimed yet the identity itself (its profile would be created with no memberships).
    let holder = |outcome: &Result<(ProfileKey, Rung), SkipReason>| match outcome {
        Ok((ProfileKey::Identity(id), _)) if !clevertap_of.contains_key(id) => {
            Some(format!("new identity {id}"))
        }
        other => target(other),
    };

    // 3. Which of those profiles exist, which segments are active, what memberships hold now.
    let cts: HashSet<String> = resolved
        .iter()
        .filter_map(|r| target(&r.resolution.outcome))
        .collect();
    let existing: HashSet<String> = store
        .batch_get(
            region,
            Table::Profiles,
            cts.iter().map(|ct| profile_key(project, ct)).collect(),
        )
        .await?
        .iter()
        .filter_map(|i| get_s(i, "clevertap_id").map(str::to_owned))
        .collect();
    let audiences: HashSet<i64> = profiles
        .iter()
        .flat_map(|p| p.audiences.iter().filter_map(|a| a.audience_id))
        .collect();
    let mut active: HashSet<i64> = HashSet::new();
    for &audience_id in &audiences {
        let segment = SegmentKey {
            region,
            project_id: project,
            audience_id,
        };
        let item = store.get_segment_item(&segment).await?;
        if item.as_ref().and_then(|i| get_s(i, "status")) == Some(segment_status::ACTIVE) {
            active.insert(audience_id);
        }
    }
    let pairs: HashSet<(i64, String)> = resolved
        .iter()
        .filter_map(|r| Some((r, target(&r.resolution.outcome)?)))
        .flat_map(|(r, ct)| {
            r.entries.iter().filter_map(move |&e| {
                let (_, audience) = entry_change(&r.profile.audiences[e]).ok()?;
                Some((audience, ct.clone()))
            })
        })
        .collect();
    let rows: Vec<Item> = store
        .batch_get(
            region,
            Table::Memberships,
            pairs
                .iter()
                .map(|(a, ct)| membership_key(project, *a, ct))
                .collect(),
        )
        .await?;
    let mut states: HashMap<(i64, String), MemberState> = pairs
        .iter()
        .map(|(a, ct)| {
            let key = membership_key(project, *a, ct);
            let row = rows.iter().find(|r| {
                r.get(crate::keys::PK) == key.get(crate::keys::PK)
                    && r.get(crate::keys::SK) == key.get(crate::keys::SK)
            });
            ((*a, ct.clone()), member_state(row))
        })
        .collect();

    // 4. Each user's entries through the state machine, in request order, as materialize would.
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut users = Vec::new();
    for r in &resolved {
        let ct = target(&r.resolution.outcome);
        let mut entries = Vec::new();
        for &e in &r.entries {
            let entry = &r.profile.audiences[e];
            let result = match (entry_change(entry), holder(&r.resolution.outcome)) {
                (Err(NoChange::AttributeUpdate), _) => EntryPreview::AttributeUpdate,
                (Err(NoChange::UnknownAction), _) => EntryPreview::UnknownAction,
                (Err(NoChange::MissingAudienceId), _) => EntryPreview::MissingAudienceId,
                (Ok(_), None) => EntryPreview::UserSkipped,
                (Ok((_, audience)), Some(_)) if !active.contains(&audience) => {
                    EntryPreview::SegmentNotActive
                }
                (Ok((action, audience)), Some(holder)) => {
                    // A profile not created yet starts as a non-member.
                    let state = states.entry((audience, holder)).or_default();
                    let version = MembershipChange {
                        clevertap_id: String::new(),
                        identity: None,
                        audience_id: audience,
                        audience_name: None,
                        action,
                        ts_ms: message_ts,
                        message_id: message_id.to_owned(),
                        profile_index: r.profile.index,
                        entry_index: e as u32,
                    }
                    .version();
                    let (next, outcome) = apply(state, action, &version);
                    *state = next;
                    match (outcome, action) {
                        (Outcome::Changed(SyncAction::Added), _) => EntryPreview::Added,
                        (Outcome::Changed(SyncAction::Removed), _) => EntryPreview::Removed,
                        (Outcome::NoOp, ChangeAction::Add) => EntryPreview::AlreadyMember,
                        (Outcome::NoOp, ChangeAction::Delete) => EntryPreview::NotMember,
                        (Outcome::Stale, _) => EntryPreview::Stale,
                        (Outcome::Duplicate, _) => EntryPreview::Duplicate,
                    }
                }
            };
            let name = serde_json::to_value(result).expect("a unit enum serializes");
            *totals.entry(entry_name(result)).or_default() += 1;
            entries.push(json!({
                "audience_id": entry.audience_id,
                "audience_name": entry.name,
                "action": entry.action,
                "result": name,
            }));
        }
        let (rung, skip) = match &r.resolution.outcome {
            Ok((_, rung)) => (Some(rung_name(*rung)), None),
            Err(reason) => (None, Some(skip_name(*reason))),
        };
        let hashed = r
            .profile
            .user_identities
            .iter()
            .chain(&r.profile.partner_identities)
            .filter(|i| !matches!(i.encoding(), Encoding::Raw))
            .count();
        users.push(json!({
            "index": r.profile.index,
            "user_id_type": r.id_type.as_str(),
            "rung": rung,
            "skip": skip,
            "clevertap_id": ct,
            "profile_exists": ct.as_ref().is_some_and(|c| existing.contains(c)),
            "new_profile": r.resolution.outcome.is_ok() && ct.as_ref().is_none_or(|c| !existing.contains(c)),
            "email": r.resolution.email.as_deref().map(mask_email),
            "phone": r.resolution.phone.as_deref().map(mask_phone),
            "invalid_emails": r.resolution.invalid_emails,
            "invalid_phones": r.resolution.invalid_phones,
            "hashed_identities": hashed,
            "entries": entries,
        }));
    }
    // Profiles beyond a profile-level bound are skipped whole, as resolve skips them.
    for p in profiles.iter().filter(|p| !p.within_limits()) {
        let entries: Vec<Value> = p
            .audiences
            .iter()
            .map(|a| {
                *totals
                    .entry(entry_name(EntryPreview::UserSkipped))
                    .or_default() += 1;
                json!({"audience_id": a.audience_id, "audience_name": a.name, "action": a.action,
                       "result": EntryPreview::UserSkipped})
            })
            .collect();
        users.push(
            json!({"index": p.index, "rung": null, "skip": "too_long", "clevertap_id": null,
                          "profile_exists": false, "new_profile": false, "entries": entries}),
        );
    }
    users.sort_by_key(|u| u["index"].as_u64());
    Ok(json!({
        "profiles": profiles.len(),
        "totals": {
            "ladder": outcomes_json(&outcomes),
            "entries": totals,
        },
        "users": users,
        "written": false,
    }))
}

fn entry_name(e: EntryPreview) -> &'static str {
    match e {
        EntryPreview::Added => "added",
        EntryPreview::Removed => "removed",
        EntryPreview::AlreadyMember => "already_member",
        EntryPreview::NotMember => "not_member",
        EntryPreview::Stale => "stale",
        EntryPreview::Duplicate => "duplicate",
        EntryPreview::SegmentNotActive => "segment_not_active",
        EntryPreview::UserSkipped => "user_skipped",
        EntryPreview::AttributeUpdate => "attribute_update",
        EntryPreview::UnknownAction => "unknown_action",
        EntryPreview::MissingAudienceId => "missing_audience_id",
    }
}

fn rung_name(r: Rung) -> &'static str {
    match r {
        Rung::PartnerId => "partner_id",
        Rung::Identity => "identity",
        Rung::Mpid => "mpid",
    }
}

fn skip_name(s: SkipReason) -> &'static str {
    match s {
        SkipReason::Anonymous => "anonymous",
        SkipReason::HashedUnusable => "hashed_unusable",
        SkipReason::NoIdentity => "no_identity",
    }
}

fn outcomes_json(o: &ResolveOutcomes) -> Value {
    json!({
        "partner_id": o.partner_id, "identity": o.identity, "mpid": o.mpid,
        "anonymous": o.anonymous, "hashed_unusable": o.hashed_unusable,
        "no_identity": o.no_identity, "too_long": o.too_long,
        "invalid_email": o.invalid_email, "invalid_phone": o.invalid_phone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_enough_to_recognise() {
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(mask_phone("+4915123456789"), "+49********789");
        assert_eq!(mask_phone("12345"), "**345");
    }

    #[test]
    fn a_body_of_just_profiles_is_taken_as_a_request() {
        let (p, ts, id) =
            preview_input(br#"{"user_profiles":[{"mpid":"1"},{"mpid":"2"}]}"#).unwrap();
        assert_eq!((p.len(), id.as_str()), (2, "preview"));
        assert!(ts > 0);
        assert_eq!(p[1].mpid.as_deref(), Some("2"));
        let full = br#"{"type":"audience_membership_change_request","id":"m","timestamp_ms":7,"account":{},"user_profiles":[{}]}"#;
        let (p, ts, id) = preview_input(full).unwrap();
        assert_eq!((p.len(), ts, id.as_str()), (1, 7, "m"));
        assert_eq!(
            preview_input(br#"{"type":"module_registration_request"}"#),
            Err(PreviewInputError::NotMembership)
        );
        assert!(matches!(
            preview_input(b"[1]"),
            Err(PreviewInputError::NotMembership)
        ));
        assert!(matches!(
            preview_input(br#"{"user_profiles":3}"#),
            Err(PreviewInputError::Parse(_))
        ));
        let many = format!(r#"{{"user_profiles":[{}]}}"#, vec!["{}"; 1_001].join(","));
        assert_eq!(
            preview_input(many.as_bytes()),
            Err(PreviewInputError::TooMany(1_001))
        );
    }
}
