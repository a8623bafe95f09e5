//! The profiles and erasure-log ports in memory: profiles, claims, holders, tombstones and the
//! projects' erasure marks. (The profiles table has no stream the stages read: these changes are
//! not logged.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{Keyed, Twin, check_item_size};
use crate::domain::erasure::{ErasureAudit, TombstoneKeys};
use crate::domain::profile_merge::{HeldValue, ProfileField, ProfileWrite, TakeBack};
use crate::domain::records::Profile;
use crate::domain::region::Region;
use crate::ports::erasures::{Begun, ErasureAudits, ErasureLog, ErasureMarks};
use crate::ports::profiles::{Claim, Claimed, Profiles};
use crate::ports::{StoreError, Written};
use crate::store::rows::profiles as rows;

/// The profiles table and the erasure marks of the projects table.
#[derive(Default)]
pub(super) struct Tables {
    /// By (project, CleverTap ID).
    profiles: Keyed<(String, String), Profile>,
    /// By (project, Identity).
    claims: Keyed<(String, String), Claim>,
    /// By (project, kind, value); an emptied set stays until dropped, as in DynamoDB.
    holders: Keyed<(String, HeldValue, String), BTreeSet<String>>,
    /// By (project, hash): erased as of.
    tombstones: Keyed<(String, String), i64>,
    /// By project.
    marks: Keyed<String, ErasureMarks>,
    /// By (project, request id).
    audits: Keyed<(String, String), ErasureAudit>,
    /// When each erasure request began: its cut-off, and the profiles it found.
    begun: Keyed<(String, String), Begun>,
}

fn key2(region: Region, a: &str, b: &str) -> (Region, (String, String)) {
    (region, (a.to_owned(), b.to_owned()))
}

/// Whether every planned field still has the version the write was planned against.
fn versions_hold(profile: Option<&Profile>, write: &ProfileWrite) -> bool {
    write.fields.iter().all(|f| {
        let stored = profile.and_then(|p| f.field.version_in(p));
        stored == f.expected.as_deref()
    })
}

/// The profile a write leaves, as the adapter's update does.
fn written_profile(
    current: Option<&Profile>,
    clevertap_id: &str,
    write: &ProfileWrite,
    now_ms: i64,
) -> Profile {
    let mut p = current.cloned().unwrap_or_else(|| Profile {
        clevertap_id: clevertap_id.to_owned(),
        created_ms: Some(now_ms),
        ..Profile::default()
    });
    p.created_ms = p.created_ms.or(Some(now_ms));
    p.updated_ms = Some(now_ms);
    p.held.extend(write.recorded.iter().cloned());
    if let Some(id) = &write.identity {
        p.identity.get_or_insert_with(|| id.value.clone());
        p.versions
            .identity
            .get_or_insert_with(|| id.version.clone());
    }
    for f in &write.fields {
        let version = Some(f.version.clone());
        let text = |v: &Option<crate::domain::records::PropertyValue>| match v {
            Some(crate::domain::records::PropertyValue::Text(t)) => Some(t.clone()),
            _ => None,
        };
        match &f.field {
            ProfileField::Identity => {
                p.identity = text(&f.value);
                p.versions.identity = version;
            }
            ProfileField::Email => {
                p.email = text(&f.value);
                p.versions.email = version;
            }
            ProfileField::Phone => {
                p.phone = text(&f.value);
                p.versions.phone = version;
            }
            ProfileField::Property(key) => {
                match &f.value {
                    Some(v) => p.properties.insert(key.clone(), v.clone()),
                    None => p.properties.remove(key),
                };
                p.versions.properties.insert(key.clone(), f.version.clone());
            }
        }
    }
    p
}

/// The profile left after taking fields back (the version attributes go with them).
fn taken_back(mut p: Profile, take: &TakeBack) -> Profile {
    for (entry, _) in &take.held {
        p.held.remove(entry);
    }
    for (field, _) in &take.fields {
        match field {
            ProfileField::Identity => (p.identity, p.versions.identity) = (None, None),
            ProfileField::Email => (p.email, p.versions.email) = (None, None),
            ProfileField::Phone => (p.phone, p.versions.phone) = (None, None),
            ProfileField::Property(key) => {
                p.properties.remove(key);
                p.versions.properties.remove(key);
            }
        }
    }
    p
}

impl Twin {
    /// Every profile of a project in a region (for tests and the simulation's checks).
    pub fn profiles_of(&self, region: Region, project_id: &str) -> Vec<Profile> {
        let state = self.lock();
        let mut all: Vec<Profile> = (state.profiles.profiles.iter())
            .filter(|((r, (p, _)), _)| *r == region && p == project_id)
            .map(|(_, profile)| profile.clone())
            .collect();
        all.sort_by(|a, b| a.clevertap_id.cmp(&b.clevertap_id));
        all
    }

    /// Every claim of a project: Identity → CleverTap ID.
    pub fn claims_in(&self, region: Region, project_id: &str) -> HashMap<String, String> {
        let state = self.lock();
        (state.profiles.claims.iter())
            .filter(|((r, (p, _)), _)| *r == region && p == project_id)
            .map(|((_, (_, id)), c)| (id.clone(), c.clevertap_id.clone()))
            .collect()
    }

    /// Every holders item of a project: (kind, value) → CleverTap IDs.
    pub fn holders_in(
        &self,
        region: Region,
        project_id: &str,
    ) -> HashMap<(HeldValue, String), BTreeSet<String>> {
        let state = self.lock();
        (state.profiles.holders.iter())
            .filter(|((r, (p, _, _)), _)| *r == region && p == project_id)
            .map(|((_, (_, kind, value)), cts)| ((*kind, value.clone()), cts.clone()))
            .collect()
    }

    /// The times of a project's tombstones, by hash.
    pub fn tombstones_in(&self, region: Region, project_id: &str) -> BTreeMap<String, i64> {
        let state = self.lock();
        (state.profiles.tombstones.iter())
            .filter(|((r, (p, _)), _)| *r == region && p == project_id)
            .map(|((_, (_, hash)), at)| (hash.clone(), *at))
            .collect()
    }
}

impl Profiles for Twin {
    fn new_clevertap_id(&self) -> String {
        self.mint_clevertap_id()
    }

    async fn claims_of(
        &self,
        region: Region,
        project_id: &str,
        identities: &[String],
    ) -> Result<HashMap<String, Claim>, StoreError> {
        self.pause("profiles.claims_of").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "profiles.claims_of")?;
        Ok(identities
            .iter()
            .filter_map(|id| {
                let claim = state.profiles.claims.get(&key2(region, project_id, id))?;
                Some((id.clone(), claim.clone()))
            })
            .collect())
    }

    async fn claim_identity(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        new_clevertap_id: &str,
        message_id: &str,
        _now_ms: i64,
    ) -> Result<Claimed, StoreError> {
        const CALL: &str = "profiles.claim_identity";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, identity);
        if let Some(winner) = state.profiles.claims.get(&key) {
            return Ok(Claimed {
                clevertap_id: winner.clevertap_id.clone(),
                won: false,
            });
        }
        let claim = Claim {
            clevertap_id: new_clevertap_id.to_owned(),
            message_id: Some(message_id.to_owned()),
        };
        state.profiles.claims.insert(key, claim);
        let claimed = Claimed {
            clevertap_id: new_clevertap_id.to_owned(),
            won: true,
        };
        Twin::after_write(&entry, CALL, claimed)
    }

    async fn delete_claim(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        clevertap_id: &str,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "profiles.delete_claim";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, identity);
        let names_it =
            (state.profiles.claims.get(&key)).is_some_and(|c| c.clevertap_id == clevertap_id);
        if !names_it {
            return Ok(Written::ConditionFailed);
        }
        state.profiles.claims.remove(&key);
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn profiles(
        &self,
        region: Region,
        project_id: &str,
        clevertap_ids: &[String],
    ) -> Result<Vec<Profile>, StoreError> {
        self.pause("profiles.profiles").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "profiles.profiles")?;
        // One profile per distinct key, as the adapter's deduplicated BatchGetItem answers.
        let distinct: BTreeSet<&String> = clevertap_ids.iter().collect();
        Ok(distinct
            .into_iter()
            .filter_map(|ct| {
                state
                    .profiles
                    .profiles
                    .get(&key2(region, project_id, ct))
                    .cloned()
            })
            .collect())
    }

    async fn profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Option<Profile>, StoreError> {
        self.pause("profiles.profile").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "profiles.profile")?;
        Ok(state
            .profiles
            .profiles
            .get(&key2(region, project_id, clevertap_id))
            .cloned())
    }

    async fn write_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        write: &ProfileWrite,
        now_ms: i64,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "profiles.write_profile";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, clevertap_id);
        let current = state.profiles.profiles.get(&key);
        if !versions_hold(current, write) {
            return Ok(Written::ConditionFailed);
        }
        let next = written_profile(current, clevertap_id, write, now_ms);
        check_item_size(&rows::profile_item(project_id, &next))?;
        state.profiles.profiles.insert(key, next);
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn take_back(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        take: &TakeBack,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "profiles.take_back";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, clevertap_id);
        let Some(current) = state.profiles.profiles.get(&key) else {
            return Ok(Written::ConditionFailed);
        };
        let holds = (take.fields.iter()).all(|(f, v)| f.version_in(current) == Some(v.as_str()))
            && (take.held.iter()).all(|(entry, v)| current.held.get(entry) == Some(v));
        if !holds {
            return Ok(Written::ConditionFailed);
        }
        match take.whole {
            true => {
                state.profiles.profiles.remove(&key);
            }
            false => {
                let next = taken_back(current.clone(), take);
                state.profiles.profiles.insert(key, next);
            }
        }
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn delete_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "profiles.delete_profile";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, clevertap_id);
        if state.profiles.profiles.remove(&key).is_none() {
            return Ok(Written::ConditionFailed);
        }
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn add_holder(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> Result<(), StoreError> {
        const CALL: &str = "profiles.add_holder";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = (region, (project_id.to_owned(), kind, value.to_owned()));
        let holders = state.profiles.holders.entry(key).or_default();
        // A string set of about 10,000 CleverTap IDs fills an item.
        let size: usize = holders.iter().map(String::len).sum::<usize>() + clevertap_id.len();
        if !holders.contains(clevertap_id) && size > super::MAX_ITEM_BYTES {
            return Err(StoreError::Rejected(
                "ValidationException: Item size has exceeded the maximum allowed size".to_owned(),
            ));
        }
        holders.insert(clevertap_id.to_owned());
        Twin::after_write(&entry, CALL, ())
    }

    async fn take_holder_off(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> Result<(), StoreError> {
        const CALL: &str = "profiles.take_holder_off";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = (region, (project_id.to_owned(), kind, value.to_owned()));
        // DynamoDB's DELETE on an absent item creates it with its key alone.
        state
            .profiles
            .holders
            .entry(key)
            .or_default()
            .remove(clevertap_id);
        Twin::after_write(&entry, CALL, ())
    }

    async fn drop_holders_if_empty(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "profiles.drop_holders_if_empty";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = (region, (project_id.to_owned(), kind, value.to_owned()));
        if state
            .profiles
            .holders
            .get(&key)
            .is_some_and(|h| !h.is_empty())
        {
            return Ok(Written::ConditionFailed);
        }
        state.profiles.holders.remove(&key);
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn holders(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.pause("profiles.holders").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "profiles.holders")?;
        let key = (region, (project_id.to_owned(), kind, value.to_owned()));
        Ok(state
            .profiles
            .holders
            .get(&key)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default())
    }
}

impl ErasureLog for Twin {
    async fn erasure_marks(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<ErasureMarks, StoreError> {
        self.pause("erasures.erasure_marks").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "erasures.erasure_marks")?;
        Ok(state
            .profiles
            .marks
            .get(&(region, project_id.to_owned()))
            .cloned()
            .unwrap_or_default())
    }

    async fn mark_erasures(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<ErasureMarks, StoreError> {
        const CALL: &str = "erasures.mark_erasures";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = (region, project_id.to_owned());
        if !state.projects.contains_key(&key) {
            return Err(StoreError::Rejected(format!(
                "ConditionalCheckFailedException: project {project_id} does not exist"
            )));
        }
        let marks = state.profiles.marks.entry(key).or_default();
        marks.had_erasure = true;
        let marks = marks.clone();
        Twin::after_write(&entry, CALL, marks)
    }

    async fn tombstone_keys(&self) -> Result<Arc<TombstoneKeys>, StoreError> {
        crate::store::keyring::Keyring::for_local_use().keys().await
    }

    async fn tombstones(
        &self,
        region: Region,
        project_id: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        self.pause("erasures.tombstones").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "erasures.tombstones")?;
        Ok(hashes
            .iter()
            .filter_map(|h| {
                let at = state
                    .profiles
                    .tombstones
                    .get(&key2(region, project_id, h))?;
                Some((h.clone(), *at))
            })
            .collect())
    }

    async fn write_tombstone(
        &self,
        region: Region,
        project_id: &str,
        hash: &str,
        erased_ms: i64,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "erasures.write_tombstone";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, hash);
        if state
            .profiles
            .tombstones
            .get(&key)
            .is_some_and(|&at| at >= erased_ms)
        {
            return Ok(Written::ConditionFailed);
        }
        state.profiles.tombstones.insert(key, erased_ms);
        Twin::after_write(&entry, CALL, Written::Applied)
    }
}

impl ErasureAudits for Twin {
    async fn erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> Result<Option<ErasureAudit>, StoreError> {
        self.pause("erasures.erasure_audit").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "erasures.erasure_audit")?;
        Ok(state
            .profiles
            .audits
            .get(&key2(region, project_id, request_id))
            .cloned())
    }

    async fn begin_erasure(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
        cut_off_ms: i64,
        found: &Begun,
    ) -> Result<Begun, StoreError> {
        const CALL: &str = "erasures.begin_erasure";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, request_id);
        let begun = state.profiles.begun.entry(key).or_insert(Begun {
            cut_off_ms,
            ..Begun::default()
        });
        begun
            .clevertap_ids
            .extend(found.clevertap_ids.iter().cloned());
        begun.holders.extend(found.holders.iter().cloned());
        let begun = begun.clone();
        Twin::after_write(&entry, CALL, begun)
    }

    async fn finish_erasure(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> Result<(), StoreError> {
        const CALL: &str = "erasures.finish_erasure";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        state
            .profiles
            .begun
            .remove(&key2(region, project_id, request_id));
        Twin::after_write(&entry, CALL, ())
    }

    async fn put_erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        audit: &ErasureAudit,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "erasures.put_erasure_audit";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = key2(region, project_id, &audit.request_id);
        if state.profiles.audits.contains_key(&key) {
            return Ok(Written::ConditionFailed);
        }
        state.profiles.audits.insert(key, audit.clone());
        Twin::after_write(&entry, CALL, Written::Applied)
    }
}
