//! Holders of an email or phone: the profiles that were given it, as items of the profiles
//! table (`keys::profiles::holders_pk`). Resolve adds a profile before it writes the value, so an
//! erasure that reads the holders (strongly consistent) after writing its tombstones finds every
//! profile a chunk wrote before it, or the chunk's own check after writing finds the tombstone.
//! The `by_email` / `by_phone` indexes serve reads that may lag; these serve erasure.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, Store, StoreError, conditional, s};
use crate::domain::region::Region;
use crate::store::keys::{self, profiles as pk};
use crate::store::tables::Table;

/// Which value a profile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HeldValue {
    Email,
    Phone,
}

impl HeldValue {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldValue::Email => "email",
            HeldValue::Phone => "phone",
        }
    }

    /// The value a profile field (`email`, `phone`) holds, if it is one of these.
    pub fn of_field(field: &str) -> Option<Self> {
        match field {
            "email" => Some(HeldValue::Email),
            "phone" => Some(HeldValue::Phone),
            _ => None,
        }
    }
}

impl Store {
    /// Records that profile `clevertap_id` holds `value` (idempotent).
    pub async fn add_holder(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> Result<(), StoreError> {
        self.change_holders(region, project_id, kind, value, clevertap_id, "ADD")
            .await
    }

    /// The profiles that were given `value`, strongly consistent. BatchGetItem: the erase
    /// function's role reads profiles no other way.
    pub async fn holders(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let key = Item::from([(
            keys::PK.to_owned(),
            s(pk::holders_pk(project_id, kind.as_str(), value)),
        )]);
        Ok(self
            .batch_get(region, Table::Profiles, vec![key])
            .await?
            .into_iter()
            .next()
            .and_then(|mut i| i.remove(pk::HOLDERS))
            .and_then(|v| v.as_ss().ok().cloned())
            .unwrap_or_default())
    }

    /// Takes profile `clevertap_id` off the holders of `value`; the item goes with its last
    /// holder (its key names the value).
    pub async fn remove_holder(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
    ) -> Result<(), StoreError> {
        self.change_holders(region, project_id, kind, value, clevertap_id, "DELETE")
            .await?;
        // An emptied set is removed by DynamoDB: the item goes unless a holder came meanwhile.
        let res = self
            .client(region)
            .delete_item()
            .table_name(self.table(region, Table::Profiles))
            .key(
                keys::PK,
                s(pk::holders_pk(project_id, kind.as_str(), value)),
            )
            .condition_expression("attribute_not_exists(#cts)")
            .expression_attribute_names("#cts", pk::HOLDERS)
            .send()
            .await;
        conditional(res).map(|_| ())
    }

    /// `ADD`s or `DELETE`s one CleverTap ID to or from the holders of `value`.
    async fn change_holders(
        &self,
        region: Region,
        project_id: &str,
        kind: HeldValue,
        value: &str,
        clevertap_id: &str,
        operation: &str,
    ) -> Result<(), StoreError> {
        self.client(region)
            .update_item()
            .table_name(self.table(region, Table::Profiles))
            .key(
                keys::PK,
                s(pk::holders_pk(project_id, kind.as_str(), value)),
            )
            .update_expression(format!("{operation} #cts :ct"))
            .expression_attribute_names("#cts", pk::HOLDERS)
            .expression_attribute_values(":ct", AttributeValue::Ss(vec![clevertap_id.to_owned()]))
            .send()
            .await?;
        Ok(())
    }
}
