//! `scripts/admin holders backfill`: makes every profile findable by its email and phone through
//! its holders items, for profiles written before holders were (the table has no email or phone
//! index any more). Two passes over the profiles table, driven by the CLI's Scan:
//!
//! 1. each profile records its current email and phone (conditional on their versions, so an
//!    erased profile is not recreated and a replaced value not recorded), then is added to their
//!    holders: the order resolve keeps, so an erasure that reads the profile takes the holder off;
//! 2. each holders item drops the CleverTap IDs that have no profile: a profile erased between
//!    the first pass's read and its holder write leaves no value naming it.
//!
//! Idempotent: a second run changes nothing.

use crate::domain::profile_merge::{HeldValue, recording_current};
use crate::domain::records::Profile;
use crate::domain::region::Region;
use crate::ports::StoreError;
use crate::ports::profiles::{Profiles, remove_holder};
use crate::store::Store;
use crate::store::rows::profiles::ScannedItem;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backfilled {
    pub profiles_seen: u64,
    /// Values recorded on profiles and added to their holders.
    pub holders_added: u64,
    /// Profiles whose values changed since they were read (a newer message recorded its own).
    pub skipped_changed: u64,
    /// CleverTap IDs without a profile taken off holders items.
    pub holders_removed: u64,
}

impl Backfilled {
    pub fn add(&mut self, other: Backfilled) {
        self.profiles_seen += other.profiles_seen;
        self.holders_added += other.holders_added;
        self.skipped_changed += other.skipped_changed;
        self.holders_removed += other.holders_removed;
    }
}

/// Both passes over a region's profiles table, page by page: profiles first, then holders items.
pub async fn backfill_region(
    store: &Store,
    region: Region,
) -> Result<(Backfilled, Backfilled), StoreError> {
    let mut totals = [Backfilled::default(), Backfilled::default()];
    for (pass, total) in totals.iter_mut().enumerate() {
        let mut start = None;
        loop {
            let (items, next) = store.scan_profiles_table(region, start).await?;
            for item in items {
                let done = match (pass, item) {
                    (
                        0,
                        ScannedItem::Profile {
                            project_id,
                            profile,
                        },
                    ) => backfill_profile(store, region, &project_id, &profile).await?,
                    (
                        1,
                        ScannedItem::Holders {
                            project_id,
                            kind,
                            value,
                            clevertap_ids,
                        },
                    ) => {
                        sweep_holders(store, region, &project_id, kind, &value, &clevertap_ids)
                            .await?
                    }
                    _ => continue,
                };
                total.add(done);
            }
            match next {
                Some(key) => start = Some(key),
                None => break,
            }
        }
    }
    let [first, second] = totals;
    Ok((first, second))
}

/// Pass 1 for one profile as scanned.
pub async fn backfill_profile(
    store: &impl Profiles,
    region: Region,
    project_id: &str,
    profile: &Profile,
) -> Result<Backfilled, StoreError> {
    let mut done = Backfilled {
        profiles_seen: 1,
        ..Backfilled::default()
    };
    let Some(write) = recording_current(profile) else {
        return Ok(done);
    };
    let ct = profile.clevertap_id.as_str();
    let now = crate::domain::protocol::now_ms();
    if !(store
        .write_profile(region, project_id, ct, &write, now)
        .await?)
        .applied()
    {
        done.skipped_changed = 1;
        return Ok(done);
    }
    for ((kind, value), _) in &write.recorded {
        store
            .add_holder(region, project_id, *kind, value, ct)
            .await?;
        done.holders_added += 1;
    }
    Ok(done)
}

/// Pass 2 for one holders item as scanned: takes off the CleverTap IDs with no profile.
pub async fn sweep_holders(
    store: &impl Profiles,
    region: Region,
    project_id: &str,
    kind: HeldValue,
    value: &str,
    clevertap_ids: &[String],
) -> Result<Backfilled, StoreError> {
    let mut done = Backfilled::default();
    let existing = store.profiles(region, project_id, clevertap_ids).await?;
    for ct in clevertap_ids {
        if existing.iter().any(|p| &p.clevertap_id == ct) {
            continue;
        }
        remove_holder(store, region, project_id, kind, value, ct).await?;
        done.holders_removed += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::profile_merge::{ProfileMerge, Versioned};
    use crate::twin::Twin;

    const R: Region = Region::Eu1;

    /// A profile as written before values were recorded: no `held`, no holders.
    async fn old_profile(twin: &Twin, ct: &str, email: &str) -> Profile {
        let merge = ProfileMerge {
            email: Some(Versioned {
                value: email.into(),
                version: "5".into(),
            }),
            ..ProfileMerge::default()
        };
        let write = merge.plan(None).unwrap();
        assert!(write.recorded.is_empty(), "written as before recording");
        assert!(
            twin.write_profile(R, "P", ct, &write, 1)
                .await
                .unwrap()
                .applied()
        );
        twin.profile(R, "P", ct).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn an_old_profile_becomes_findable_by_its_email_and_a_second_run_changes_nothing() {
        let twin = Twin::new();
        let profile = old_profile(&twin, "ct1", "a@x.io").await;
        assert!(
            twin.holders(R, "P", HeldValue::Email, "a@x.io")
                .await
                .unwrap()
                .is_empty()
        );
        let done = backfill_profile(&twin, R, "P", &profile).await.unwrap();
        assert_eq!(done.holders_added, 1);
        assert_eq!(
            twin.holders(R, "P", HeldValue::Email, "a@x.io")
                .await
                .unwrap(),
            ["ct1"]
        );
        let recorded = twin.profile(R, "P", "ct1").await.unwrap().unwrap();
        assert!(
            recorded
                .held
                .contains_key(&(HeldValue::Email, "a@x.io".to_owned()))
        );
        let again = backfill_profile(&twin, R, "P", &recorded).await.unwrap();
        assert_eq!(again.holders_added, 0);
    }

    #[tokio::test]
    async fn an_erased_profile_is_not_recreated_and_its_stray_holder_is_swept() {
        let twin = Twin::new();
        let read = old_profile(&twin, "ct1", "a@x.io").await;
        // Erased after the scan read it.
        assert!(twin.delete_profile(R, "P", "ct1").await.unwrap().applied());
        let done = backfill_profile(&twin, R, "P", &read).await.unwrap();
        assert_eq!((done.holders_added, done.skipped_changed), (0, 1));
        assert_eq!(
            twin.profile(R, "P", "ct1").await.unwrap(),
            None,
            "not recreated"
        );
        // A holder left naming it (as if erased between the record and the holder write).
        twin.add_holder(R, "P", HeldValue::Email, "a@x.io", "ct1")
            .await
            .unwrap();
        let kept = old_profile(&twin, "ct2", "a@x.io").await;
        backfill_profile(&twin, R, "P", &kept).await.unwrap();
        let holders = twin
            .holders(R, "P", HeldValue::Email, "a@x.io")
            .await
            .unwrap();
        let swept = sweep_holders(&twin, R, "P", HeldValue::Email, "a@x.io", &holders)
            .await
            .unwrap();
        assert_eq!(swept.holders_removed, 1);
        assert_eq!(
            twin.holders(R, "P", HeldValue::Email, "a@x.io")
                .await
                .unwrap(),
            ["ct2"]
        );
    }
}
