//! Resolution's pure steps: the ladder over a chunk's profiles, per connection setting, the
//! membership change each audience entry makes, and the users an erasure covers left out. Shared
//! by resolve and the preview.

use std::collections::{BTreeMap, HashSet};

use crate::domain::batch::{StoredAudience, StoredProfile};
use crate::domain::changes::ChangeAction;
use crate::domain::identity::{ProfileKey, Resolution, Rung, SkipReason, resolve, user_id_type};
use crate::domain::protocol::{AudienceAction, UserIdentityType};
use crate::domain::sync_log::ResolveOutcomes;

/// One user resolved under one connection setting, with the audience entries it governs.
pub struct Resolved<'a> {
    pub profile: &'a StoredProfile,
    /// The profile's audience entries with this connection setting (`userIdType`).
    pub entries: Vec<usize>,
    pub id_type: UserIdentityType,
    pub resolution: Resolution,
}

/// Why an audience entry makes no membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChange {
    /// `attribute_update`: profile data only.
    AttributeUpdate,
    UnknownAction,
    MissingAudienceId,
}

/// The membership change an audience entry makes (action, audience id), pure.
pub fn entry_change(entry: &StoredAudience) -> Result<(ChangeAction, i64), NoChange> {
    let action = match entry.action() {
        AudienceAction::Add => ChangeAction::Add,
        AudienceAction::Delete => ChangeAction::Delete,
        AudienceAction::AttributeUpdate => return Err(NoChange::AttributeUpdate),
        AudienceAction::Unknown(_) => return Err(NoChange::UnknownAction),
    };
    let audience_id = entry.audience_id.ok_or(NoChange::MissingAudienceId)?;
    Ok((action, audience_id))
}

/// The Identities (rung `identity` or `mpid`) among resolved users, each once.
pub fn identities_of<'a>(resolved: &'a [Resolved<'_>]) -> HashSet<&'a str> {
    resolved
        .iter()
        .filter_map(|r| match &r.resolution.outcome {
            Ok((ProfileKey::Identity(id), _)) => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

/// Step 1 of resolution, pure: the ladder, per profile and per distinct `userIdType` among its
/// entries, counted into `outcomes`. A profile beyond a profile-level bound is only counted.
pub fn ladder<'a>(
    profiles: &'a [StoredProfile],
    outcomes: &mut ResolveOutcomes,
) -> Vec<Resolved<'a>> {
    let mut resolved = Vec::new();
    for p in profiles {
        if !p.within_limits() {
            outcomes.too_long += 1;
            continue;
        }
        let mut groups: BTreeMap<UserIdentityType, Vec<usize>> = BTreeMap::new();
        for (i, a) in p.audiences.iter().enumerate() {
            groups
                .entry(user_id_type(a.user_id_type.as_deref()))
                .or_default()
                .push(i);
        }
        for (t, entries) in groups {
            let resolution = resolve(p, &t);
            outcomes.invalid_email += resolution.invalid_emails as u64;
            outcomes.invalid_phone += resolution.invalid_phones as u64;
            match &resolution.outcome {
                Ok((_, Rung::PartnerId)) => outcomes.partner_id += 1,
                Ok((_, Rung::Identity)) => outcomes.identity += 1,
                Ok((_, Rung::Mpid)) => outcomes.mpid += 1,
                Err(SkipReason::Anonymous) => outcomes.anonymous += 1,
                Err(SkipReason::HashedUnusable) => outcomes.hashed_unusable += 1,
                Err(SkipReason::NoIdentity) => outcomes.no_identity += 1,
            }
            resolved.push(Resolved {
                profile: p,
                entries,
                id_type: t,
                resolution,
            });
        }
    }
    resolved
}

/// The users not `covered`; the others are counted as `erased`.
pub fn without_covered<'a>(
    users: Vec<Resolved<'a>>,
    covered: &[Option<i64>],
    outcomes: &mut ResolveOutcomes,
) -> Vec<Resolved<'a>> {
    let mut kept = Vec::with_capacity(users.len());
    for (r, erased) in users.into_iter().zip(covered) {
        if erased.is_some() {
            outcomes.erased += 1;
        } else {
            kept.push(r);
        }
    }
    kept
}
