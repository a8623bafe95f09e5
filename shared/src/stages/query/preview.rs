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

use crate::domain::batch::{StoredAudience, StoredProfile};
use crate::domain::changes::{ChangeAction, MembershipChange};
use crate::domain::identity::{ProfileKey, Rung, SkipReason};
use crate::domain::protocol::{self, Encoding, Request, now_ms};
use crate::domain::region::Region;
use crate::domain::resolution::{
    NoChange, Resolved, entry_change, identities_of, ladder, without_covered,
};
use crate::domain::segment_state::{MemberState, Outcome, SyncAction, apply};
use crate::domain::sync_log::ResolveOutcomes;
use crate::ports::erasures::Erasures;
use crate::ports::profiles::Profiles as _;
use crate::store::segment_item::SegmentLayout;
use crate::store::{Store, StoreError};

/// Profiles one preview takes at most.
pub const MAX_PREVIEW_PROFILES: usize = 1_000;
/// Audience entries (all profiles together) and distinct audiences one preview takes at most:
/// what it reads stays bounded whatever the profiles carry.
pub const MAX_PREVIEW_ENTRIES: usize = 10_000;
pub const MAX_PREVIEW_AUDIENCES: usize = 100;

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
    #[error(
        "a preview takes at most {MAX_PREVIEW_ENTRIES} audience entries in at most {MAX_PREVIEW_AUDIENCES} audiences"
    )]
    TooManyEntries,
}

/// The profiles of a preview body in their stored form, and the message time and id the
/// changes would carry (a body of just `user_profiles` is taken as sent now).
pub fn preview_input(body: &[u8]) -> Result<(Vec<StoredProfile>, i64, String), PreviewInputError> {
    let wrapped;
    let body = match protocol::peek_type(body) {
        Some(_) => body,
        None => {
            // Just `{"user_profiles": …}`: the same parser, with the envelope filled in.
            // Not UTF-8: the parser says so, precisely.
            let Ok(text) = std::str::from_utf8(body) else {
                return Err(match protocol::parse_request(body) {
                    Err(e) => PreviewInputError::Parse(e),
                    Ok(_) => PreviewInputError::NotMembership,
                });
            };
            let Some(rest) = text.trim_start().strip_prefix('{') else {
                return Err(PreviewInputError::NotMembership);
            };
            let rest = rest.trim_start();
            let separator = if rest.starts_with('}') { "" } else { "," };
            wrapped = format!(
                r#"{{"type":"audience_membership_change_request","id":"preview","timestamp_ms":{},"account":{{}}{separator}{rest}"#,
                now_ms(),
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
            let stored: Vec<StoredProfile> = profiles
                .iter()
                .enumerate()
                .map(|(i, p)| StoredProfile::from_wire(i as u32, p))
                .collect();
            let entries = stored.iter().map(|p| p.audiences.len()).sum::<usize>();
            let audiences: HashSet<i64> = (stored.iter())
                .flat_map(|p| p.audiences.iter().filter_map(|a| a.audience_id))
                .collect();
            if entries > MAX_PREVIEW_ENTRIES || audiences.len() > MAX_PREVIEW_AUDIENCES {
                return Err(PreviewInputError::TooManyEntries);
            }
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
    /// The audience was disconnected (archived or being cleared): ignored. (An audience never
    /// seen is created by its first membership batch, so its entries preview as usual.)
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
    // 1. The ladder (pure), as resolve runs it, less the people an erasure made after the
    //    request's time covers (skipped whole, as resolve skips them).
    let mut outcomes = ResolveOutcomes::default();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let resolved = ladder(profiles, &mut outcomes);
    //    The read API's role cannot read the tombstone keys (only the stream functions and
    //    `erase` may): deployed, the preview says it did not check erasures.
    let erasures_checked = store.checks_tombstones();
    let covered = match erasures_checked {
        true => {
            Erasures::of(store, region, project)
                .await?
                .covering(store, region, project, message_ts, &resolved)
                .await?
        }
        false => vec![None; resolved.len()],
    };
    let mut users: Vec<Value> = (resolved.iter().zip(&covered))
        .filter(|(_, erased)| erased.is_some())
        .map(|(r, _)| skipped_user(r.profile, "erased", &mut totals))
        .collect();
    let resolved = without_covered(resolved, &covered, &mut outcomes);
    // 2. What the tables hold now (reads only).
    let mut now = Current::read(store, region, project, profiles, &resolved).await?;
    // 3. Each user's entries through the state machine, in request order, as materialize would;
    //    profiles beyond a profile-level bound are skipped whole, as resolve skips them.
    users.extend(
        resolved
            .iter()
            .map(|r| now.user(r, message_ts, message_id, &mut totals)),
    );
    users.extend(
        profiles
            .iter()
            .filter(|p| !p.within_limits())
            .map(|p| skipped_user(p, "too_long", &mut totals)),
    );
    users.sort_by_key(|u| u["index"].as_u64());
    Ok(json!({
        "profiles": profiles.len(),
        "totals": {
            "ladder": outcomes_json(&outcomes),
            "entries": totals,
        },
        "users": users,
        "erasures_checked": erasures_checked,
        "written": false,
    }))
}

/// What the tables hold for the preview's users, and the memberships as the simulation moves them.
struct Current {
    /// Identity → CleverTap ID, for the identities claimed already.
    clevertap_of: HashMap<String, String>,
    /// CleverTap IDs whose profile exists.
    existing: HashSet<String>,
    /// Audiences whose segment is active.
    active: HashSet<i64>,
    /// (audience, holder) → membership, as read, then as the previewed changes leave it.
    states: HashMap<(i64, String), MemberState>,
}

impl Current {
    async fn read(
        store: &Store,
        region: Region,
        project: &str,
        profiles: &[StoredProfile],
        resolved: &[Resolved<'_>],
    ) -> Result<Self, StoreError> {
        let mut now = Current {
            clevertap_of: HashMap::new(),
            existing: HashSet::new(),
            active: HashSet::new(),
            states: HashMap::new(),
        };
        // Identities to CleverTap IDs: existing claims only (a new identity would be claimed).
        now.clevertap_of = store
            .claimed_identities(region, project, &identities_of(resolved))
            .await?;
        // Which of their profiles exist.
        let cts: HashSet<String> = resolved
            .iter()
            .filter_map(|r| now.target(&r.resolution.outcome))
            .collect();
        let cts: Vec<String> = cts.into_iter().collect();
        now.existing = store
            .profiles(region, project, &cts)
            .await?
            .into_iter()
            .map(|p| p.clevertap_id)
            .collect();
        // Which segments take members: an active one, or one not seen yet (materialize creates
        // a segment first seen in a membership batch); an archived or archiving one does not.
        let audiences: HashSet<i64> = profiles
            .iter()
            .flat_map(|p| p.audiences.iter().filter_map(|a| a.audience_id))
            .collect();
        let segments = store
            .segments_by_id(region, project, audiences.iter().copied())
            .await?;
        let inactive: HashSet<i64> = segments
            .values()
            .filter(|s| !s.is_active())
            .map(|s| s.audience_id)
            .collect();
        now.active = audiences.difference(&inactive).copied().collect();
        // Where each segment's rows are: its recorded buckets, or a new segment's.
        let layout = |audience: i64| {
            SegmentLayout::of_read(
                audience,
                segments.get(&audience),
                store.new_segment_buckets(),
            )
        };
        // The memberships the entries concern.
        let pairs: HashSet<(i64, String)> = resolved
            .iter()
            .filter_map(|r| Some((r, now.target(&r.resolution.outcome)?)))
            .flat_map(|(r, ct)| {
                r.entries.iter().filter_map(move |&e| {
                    let (_, audience) = entry_change(&r.profile.audiences[e]).ok()?;
                    Some((audience, ct.clone()))
                })
            })
            .collect();
        let pairs: Vec<(SegmentLayout, &str)> = pairs
            .iter()
            .map(|(a, ct)| (layout(*a), ct.as_str()))
            .collect();
        let rows = store.pair_states(region, project, &pairs).await?;
        for (layout, ct) in pairs {
            let key = (layout.audience_id, ct.to_owned());
            let state = rows.get(&key).map(|r| r.state.clone()).unwrap_or_default();
            now.states.insert(key, state);
        }
        Ok(now)
    }

    /// The CleverTap ID a resolution reaches today, if any.
    fn target(&self, outcome: &Result<(ProfileKey, Rung), SkipReason>) -> Option<String> {
        match outcome {
            Ok((ProfileKey::CleverTapId(ct), _)) => Some(ct.clone()),
            Ok((ProfileKey::Identity(id), _)) => self.clevertap_of.get(id).cloned(),
            Err(_) => None,
        }
    }

    /// Who a membership belongs to while simulating: the CleverTap ID, or for an identity not
    /// claimed yet the identity itself (its profile would be created with no memberships).
    fn holder(&self, outcome: &Result<(ProfileKey, Rung), SkipReason>) -> Option<String> {
        match outcome {
            Ok((ProfileKey::Identity(id), _)) if !self.clevertap_of.contains_key(id) => {
                Some(format!("new identity {id}"))
            }
            other => self.target(other),
        }
    }

    /// One entry: what it would come to, moving the simulated membership.
    fn entry(
        &mut self,
        r: &Resolved<'_>,
        e: usize,
        message_ts: i64,
        message_id: &str,
    ) -> EntryPreview {
        let (action, audience) = match entry_change(&r.profile.audiences[e]) {
            Ok(change) => change,
            Err(NoChange::AttributeUpdate) => return EntryPreview::AttributeUpdate,
            Err(NoChange::UnknownAction) => return EntryPreview::UnknownAction,
            Err(NoChange::MissingAudienceId) => return EntryPreview::MissingAudienceId,
        };
        let Some(holder) = self.holder(&r.resolution.outcome) else {
            return EntryPreview::UserSkipped;
        };
        if !self.active.contains(&audience) {
            return EntryPreview::SegmentNotActive;
        }
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
            received_ms: None,
            way: Default::default(),
        }
        .version();
        // A profile not created yet starts as a non-member.
        let state = self.states.entry((audience, holder)).or_default();
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

    /// One user under one `userIdType`: how it resolves and what each of its entries would do.
    fn user(
        &mut self,
        r: &Resolved<'_>,
        message_ts: i64,
        message_id: &str,
        totals: &mut BTreeMap<&'static str, u64>,
    ) -> Value {
        let entries: Vec<Value> = r
            .entries
            .iter()
            .map(|&e| {
                let result = self.entry(r, e, message_ts, message_id);
                *totals.entry(entry_name(result)).or_default() += 1;
                entry_json(&r.profile.audiences[e], result)
            })
            .collect();
        let ct = self.target(&r.resolution.outcome);
        let (rung, skip) = match &r.resolution.outcome {
            Ok((_, rung)) => (Some(rung_name(*rung)), None),
            Err(reason) => (None, Some(skip_name(*reason))),
        };
        let exists = ct.as_ref().is_some_and(|c| self.existing.contains(c));
        let hashed = (r.profile.user_identities.iter())
            .chain(&r.profile.partner_identities)
            .filter(|i| !matches!(i.encoding(), Encoding::Raw))
            .count();
        json!({
            "index": r.profile.index,
            "user_id_type": r.id_type.as_str(),
            "rung": rung,
            "skip": skip,
            "clevertap_id": ct,
            "profile_exists": exists,
            "new_profile": r.resolution.outcome.is_ok() && !exists,
            "email": r.resolution.email.as_deref().map(mask_email),
            "phone": r.resolution.phone.as_deref().map(mask_phone),
            "invalid_emails": r.resolution.invalid_emails,
            "invalid_phones": r.resolution.invalid_phones,
            "hashed_identities": hashed,
            "entries": entries,
        })
    }
}

/// A profile skipped whole (`too_long`: beyond a profile-level bound; `erased`: covered by an
/// erasure made after the request's time).
fn skipped_user(p: &StoredProfile, skip: &str, totals: &mut BTreeMap<&'static str, u64>) -> Value {
    let entries: Vec<Value> = p
        .audiences
        .iter()
        .map(|a| {
            *totals
                .entry(entry_name(EntryPreview::UserSkipped))
                .or_default() += 1;
            entry_json(a, EntryPreview::UserSkipped)
        })
        .collect();
    json!({"index": p.index, "rung": null, "skip": skip, "clevertap_id": null,
           "profile_exists": false, "new_profile": false, "entries": entries})
}

fn entry_json(entry: &StoredAudience, result: EntryPreview) -> Value {
    json!({
        "audience_id": entry.audience_id,
        "audience_name": entry.name,
        "action": entry.action,
        "result": result,
    })
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
        "invalid_email": o.invalid_email, "invalid_phone": o.invalid_phone, "erased": o.erased,
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
