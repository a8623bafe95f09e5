//! Profiles, identity claims and holders: the profiles port on DynamoDB (the items are mapped in
//! `rows::profiles`).

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::rows::profiles as row;
use super::{Item, Store, StoreError, written};
use crate::domain::profile_merge::{HeldValue, ProfileWrite, TakeBack};
use crate::domain::records::Profile;
use crate::domain::region::Region;
use crate::ports::Written;
use crate::ports::profiles::{Claim, Claimed, Profiles};
use crate::store::tables::Table;

impl Store {
    /// One page of a region's profiles table, strongly consistent, from `start` (the last
    /// page's key); `None` after the last page. Only `scripts/admin holders backfill` scans.
    pub async fn scan_profiles_table(
        &self,
        region: Region,
        start: Option<Item>,
    ) -> Result<(Vec<row::ScannedItem>, Option<Item>), StoreError> {
        let page = self
            .client(region)
            .scan()
            .table_name(self.table(region, Table::Profiles))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        let items = (page.items.unwrap_or_default().iter())
            .map(row::scanned_item)
            .collect();
        Ok((items, page.last_evaluated_key))
    }

    /// Reads one item of the profiles table (strongly consistent).
    async fn profiles_item(&self, region: Region, key: Item) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Profiles))
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }

    /// One UpdateItem of the profiles table.
    async fn update_profiles_item(
        &self,
        region: Region,
        key: Item,
        spec: super::rows::UpdateSpec,
    ) -> Result<Written, StoreError> {
        let res = spec
            .on(self
                .client(region)
                .update_item()
                .table_name(self.table(region, Table::Profiles))
                .set_key(Some(key)))
            .send()
            .await;
        written(res)
    }

    /// Adds (`true`) or takes a CleverTap ID to or off the holders of a value: one UpdateItem.
    async fn change_holders(
        &self,
        region: Region,
        project_id: &str,
        (kind, value): (HeldValue, &str),
        clevertap_id: &str,
        add: bool,
    ) -> Result<(), StoreError> {
        let key = row::holders_key(project_id, kind, value);
        let _unconditional = self
            .update_profiles_item(region, key, row::holder_changed(clevertap_id, add))
            .await?;
        Ok(())
    }

    /// One conditional DeleteItem of the profiles table.
    async fn delete_profiles_item(
        &self,
        region: Region,
        key: Item,
        spec: super::rows::UpdateSpec,
    ) -> Result<Written, StoreError> {
        let res = spec
            .on_delete(
                self.client(region)
                    .delete_item()
                    .table_name(self.table(region, Table::Profiles))
                    .set_key(Some(key)),
            )
            .send()
            .await;
        written(res)
    }
}

impl Profiles for Store {
    async fn claims_of(
        &self,
        region: Region,
        project_id: &str,
        identities: &[String],
    ) -> Result<HashMap<String, Claim>, StoreError> {
        let keys = identities
            .iter()
            .map(|id| row::identity_key(project_id, id))
            .collect();
        Ok(self
            .batch_get(region, Table::Profiles, keys)
            .await?
            .iter()
            .filter_map(|item| row::claim_of(project_id, item))
            .collect())
    }

    async fn claim_identity(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        new_clevertap_id: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Claimed, StoreError> {
        let item = row::claim_item(project_id, identity, new_clevertap_id, message_id, now_ms);
        let res = self
            .client(region)
            .put_item()
            .table_name(self.table(region, Table::Profiles))
            .set_item(Some(item))
            .condition_expression(row::NEW_ITEM_ONLY)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let e = match res {
            Ok(_) => {
                return Ok(Claimed {
                    clevertap_id: new_clevertap_id.to_owned(),
                    won: true,
                });
            }
            Err(e) => e,
        };
        let refused = e.as_service_error().and_then(|se| match se {
            PutItemError::ConditionalCheckFailedException(c) => Some(c),
            _ => None,
        });
        let Some(refused) = refused else {
            return Err(e.into());
        };
        let winner = match refused.item().and_then(row::claimed_by) {
            Some(ct) => ct.to_owned(),
            // Condition failed without the old item: read the winner.
            None => {
                let item = self
                    .profiles_item(region, row::identity_key(project_id, identity))
                    .await?
                    .ok_or_else(|| StoreError::Unavailable("identity claim vanished".into()))?;
                row::claimed_by(&item)
                    .ok_or_else(|| {
                        StoreError::Corrupt("identity claim without clevertap_id".into())
                    })?
                    .to_owned()
            }
        };
        Ok(Claimed {
            clevertap_id: winner,
            won: false,
        })
    }

    async fn delete_claim(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        clevertap_id: &str,
    ) -> Result<Written, StoreError> {
        let key = row::identity_key(project_id, identity);
        self.delete_profiles_item(region, key, row::names_clevertap_id(clevertap_id))
            .await
    }

    async fn profiles(
        &self,
        region: Region,
        project_id: &str,
        clevertap_ids: &[String],
    ) -> Result<Vec<Profile>, StoreError> {
        let keys = clevertap_ids
            .iter()
            .map(|ct| row::profile_key(project_id, ct))
            .collect();
        Ok(self
            .batch_get(region, Table::Profiles, keys)
            .await?
            .iter()
            .filter_map(row::profile_of)
            .collect())
    }

    async fn profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Option<Profile>, StoreError> {
        let key = row::profile_key(project_id, clevertap_id);
        Ok(self
            .profiles_item(region, key)
            .await?
            .as_ref()
            .and_then(row::profile_of))
    }

    async fn write_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        write: &ProfileWrite,
        now_ms: i64,
    ) -> Result<Written, StoreError> {
        let key = row::profile_key(project_id, clevertap_id);
        let spec = row::profile_written(project_id, clevertap_id, write, now_ms);
        self.update_profiles_item(region, key, spec).await
    }

    async fn take_back(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        take: &TakeBack,
    ) -> Result<Written, StoreError> {
        let key = row::profile_key(project_id, clevertap_id);
        let spec = row::fields_taken_back(take);
        match take.whole {
            true => self.delete_profiles_item(region, key, spec).await,
            false => self.update_profiles_item(region, key, spec).await,
        }
    }

    async fn delete_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Written, StoreError> {
        let key = row::profile_key(project_id, clevertap_id);
        self.delete_profiles_item(region, key, row::names_clevertap_id(clevertap_id))
            .await
    }

    async fn add_holder(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> Result<(), StoreError> {
        self.change_holders(region, project_id, (kind, value), clevertap_id, true)
            .await
    }

    async fn take_holder_off(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> Result<(), StoreError> {
        self.change_holders(region, project_id, (kind, value), clevertap_id, false)
            .await
    }

    async fn drop_holders_if_empty(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> Result<Written, StoreError> {
        let key = row::holders_key(project_id, kind, value);
        self.delete_profiles_item(region, key, row::holders_empty())
            .await
    }

    /// BatchGetItem: the erase function's role reads profiles no other way.
    async fn holders(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let key = row::holders_key(project_id, kind, value);
        Ok(self
            .batch_get(region, Table::Profiles, vec![key])
            .await?
            .first()
            .map(row::holders_of)
            .unwrap_or_default())
    }
}
