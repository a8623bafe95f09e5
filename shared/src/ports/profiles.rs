//! The profiles port: identity claims (one Identity, one profile), profiles with versioned
//! fields, and the holders of each email and phone (which profiles were given it, for the
//! erasure). Resolve writes them; the erasure and the read API read them.
//!
//! Holders are kept in the table itself so an erasure reads them strongly consistent; they are
//! the only way from an email or phone to its profiles (the table has no index). Resolve adds a profile to the holders of a value
//! before it writes the value, so an erasure that reads the holders after writing its
//! tombstones finds every profile a chunk wrote before it, or the chunk's own check after
//! writing finds the tombstone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;

use crate::domain::profile_merge::{HeldValue, ProfileWrite, TakeBack};
use crate::domain::records::Profile;
use crate::domain::region::Region;
use crate::ports::{StoreError, Written};

/// An identity claim as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub clevertap_id: String,
    /// The message that made it (claims made before this was recorded have none).
    pub message_id: Option<String>,
}

/// How a claim ended: the CleverTap ID the Identity belongs to, and whether this call made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub clevertap_id: String,
    pub won: bool,
}

/// Claims, profiles and holders.
pub trait Profiles: Send + Sync {
    /// A CleverTap ID for a new profile (random; the twin numbers them so a simulation replays).
    fn new_clevertap_id(&self) -> String {
        format!("__{}", uuid::Uuid::new_v4().simple())
    }

    /// The claims of these Identities, those that exist (strongly consistent).
    fn claims_of(
        &self,
        region: Region,
        project_id: &str,
        identities: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Claim>, StoreError>> + Send;

    /// Claims an Identity for a new profile with one conditional put. If another writer claimed
    /// it first, answers the winner's CleverTap ID (read back if the refusal did not carry it).
    fn claim_identity(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        new_clevertap_id: &str,
        message_id: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send;

    /// Deletes an Identity's claim if it names this profile: one conditional delete.
    fn delete_claim(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Profiles by CleverTap ID, those that exist (strongly consistent).
    fn profiles(
        &self,
        region: Region,
        project_id: &str,
        clevertap_ids: &[String],
    ) -> impl Future<Output = Result<Vec<Profile>, StoreError>> + Send;

    /// One profile, strongly consistent.
    fn profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<Option<Profile>, StoreError>> + Send;

    /// Creates or updates a profile in one conditional update, touching only the planned
    /// fields, each conditional on the version planned against: `ConditionFailed` if another
    /// writer moved one first (read again and re-plan).
    fn write_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        write: &ProfileWrite,
        now_ms: i64,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Removes the planned fields (with their index keys), or the whole profile, conditional on
    /// each field's version as planned: one conditional update or delete.
    fn take_back(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        take: &TakeBack,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Deletes a profile if it is this one: one conditional delete.
    fn delete_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Records that a profile holds `value` (idempotent): one update.
    fn add_holder(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes a profile off the holders of `value` (idempotent): one update. The holders item
    /// stays, empty, until [`Profiles::drop_holders_if_empty`].
    fn take_holder_off(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the holders item of `value` if it holds no one (its key names the value): one
    /// conditional delete.
    fn drop_holders_if_empty(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// The profiles that were given `value`, strongly consistent.
    fn holders(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The CleverTap IDs of those Identities that are claimed already.
    fn claimed_identities(
        &self,
        region: Region,
        project_id: &str,
        identities: &HashSet<&str>,
    ) -> impl Future<Output = Result<HashMap<String, String>, StoreError>> + Send {
        async move {
            let identities: Vec<String> = identities.iter().map(|i| (*i).to_owned()).collect();
            Ok(self
                .claims_of(region, project_id, &identities)
                .await?
                .into_iter()
                .map(|(identity, claim)| (identity, claim.clevertap_id))
                .collect())
        }
    }
}

/// Takes a profile off the holders of `value` and drops the item if that emptied it (two
/// requests: a holder added between them keeps the item).
pub async fn remove_holder(
    port: &impl Profiles,
    region: Region,
    project_id: &str,
    kind: HeldValue,
    value: &str,
    clevertap_id: &str,
) -> Result<(), StoreError> {
    port.take_holder_off(region, project_id, kind, value, clevertap_id)
        .await?;
    let _kept_by_another = port
        .drop_holders_if_empty(region, project_id, kind, value)
        .await?;
    Ok(())
}

/// Re-reads of a profile whose fields moved while taking one message's fields back.
const MAX_TAKE_BACK_REREADS: u32 = 25;

/// Removes from a profile the fields one message set (their version begins with
/// `version_prefix`), deleting the profile if it holds nothing else, then takes it off the
/// holders of the email and phone taken back. A field another message moved meanwhile is
/// theirs and stays (a lost condition reads again).
pub async fn take_back_fields(
    port: &impl Profiles,
    region: Region,
    project_id: &str,
    clevertap_id: &str,
    version_prefix: &str,
) -> Result<(), StoreError> {
    for _ in 0..MAX_TAKE_BACK_REREADS {
        let Some(profile) = port.profile(region, project_id, clevertap_id).await? else {
            return Ok(());
        };
        let Some(take) = TakeBack::plan(&profile, version_prefix) else {
            return Ok(());
        };
        if port
            .take_back(region, project_id, clevertap_id, &take)
            .await?
            .applied()
        {
            // The values taken back no longer lead to this profile; a profile taken back whole
            // leaves the holders of every value it was recorded holding.
            let mut values: BTreeSet<(HeldValue, String)> = (take.fields.iter())
                .filter_map(|(f, _)| f.held())
                .filter_map(|kind| Some((kind, kind.of(&profile)?.to_owned())))
                .collect();
            values.extend(take.held.iter().map(|(entry, _)| entry.clone()));
            if take.whole {
                values.extend(profile.held.keys().cloned());
            }
            for (kind, value) in &values {
                remove_holder(port, region, project_id, *kind, value, clevertap_id).await?;
            }
            return Ok(());
        }
    }
    Err(StoreError::Unavailable(format!(
        "profile {clevertap_id} kept changing while taking a message's fields back"
    )))
}
