//! Profiles and identity claims.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, get_s, n, s};
use crate::keys::{self, profiles as k};
use crate::region::Region;
use crate::tables::Table;

/// Profile attributes shared by mParticle are stored as top-level attributes with this prefix.
pub const ATTRIBUTE_PREFIX: &str = "attr#";

/// A profile property value: a string, a list of strings, or `true` for a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    Text(String),
    List(Vec<String>),
    Tag,
}

impl PropertyValue {
    fn to_attr(&self) -> AttributeValue {
        match self {
            PropertyValue::Text(v) => s(v.clone()),
            PropertyValue::List(l) => AttributeValue::L(l.iter().cloned().map(s).collect()),
            PropertyValue::Tag => AttributeValue::Bool(true),
        }
    }
}

/// What to merge into one profile: `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileMerge {
    pub identity: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Upserts (`Some`) and deletions (`None`) by key, applied in message order.
    pub properties: BTreeMap<String, Option<PropertyValue>>,
}

impl ProfileMerge {
    /// Whether writing this merge would change the stored item.
    pub fn changes(&self, existing: Option<&Item>) -> bool {
        let Some(item) = existing else { return true };
        let differs = |attr: &str, v: &Option<String>| {
            v.as_ref().is_some_and(|v| get_s(item, attr) != Some(v))
        };
        if differs("email", &self.email) || differs("phone", &self.phone) {
            return true;
        }
        if self.identity.is_some() && get_s(item, "identity").is_none() {
            return true;
        }
        self.properties.iter().any(|(key, v)| {
            let current = item.get(&format!("{ATTRIBUTE_PREFIX}{key}"));
            match v {
                None => current.is_some(),
                Some(v) => current != Some(&v.to_attr()),
            }
        })
    }
}

pub fn profile_key(project_id: &str, clevertap_id: &str) -> Item {
    Item::from([(
        keys::PK.to_owned(),
        s(k::profile_pk(project_id, clevertap_id)),
    )])
}

pub fn identity_key(project_id: &str, identity: &str) -> Item {
    Item::from([(keys::PK.to_owned(), s(k::identity_pk(project_id, identity)))])
}

impl Store {
    /// Claims an Identity for a new profile with a conditional write. If another writer claimed
    /// it first, the winner's CleverTap ID is returned instead: one Identity, one profile.
    pub async fn claim_identity(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        new_clevertap_id: &str,
        now_ms: i64,
    ) -> Result<(String, bool), StoreError> {
        let res = self
            .client(region)
            .put_item()
            .table_name(self.table(region, Table::Profiles))
            .item(keys::PK, s(k::identity_pk(project_id, identity)))
            .item("clevertap_id", s(new_clevertap_id))
            .item("created_ms", n(now_ms))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok((new_clevertap_id.to_owned(), true)),
            Err(e) => {
                let winner = e
                    .as_service_error()
                    .and_then(|se| match se {
                        PutItemError::ConditionalCheckFailedException(c) => Some(c),
                        _ => None,
                    })
                    .map(|c| {
                        c.item()
                            .and_then(|i| get_s(i, "clevertap_id"))
                            .map(str::to_owned)
                    });
                match winner {
                    Some(Some(id)) => Ok((id, false)),
                    // Condition failed without the old item: read the winner.
                    Some(None) => {
                        let item = self
                            .client(region)
                            .get_item()
                            .table_name(self.table(region, Table::Profiles))
                            .set_key(Some(identity_key(project_id, identity)))
                            .consistent_read(true)
                            .send()
                            .await?
                            .item
                            .ok_or_else(|| {
                                StoreError::Unavailable("identity claim vanished".into())
                            })?;
                        let id = get_s(&item, "clevertap_id").ok_or_else(|| {
                            StoreError::Corrupt("identity claim without clevertap_id".into())
                        })?;
                        Ok((id.to_owned(), false))
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    /// Creates or updates a profile in one UpdateItem, touching only the merged attributes.
    pub async fn merge_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        merge: &ProfileMerge,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut set = vec![
            "clevertap_id = :ct".to_owned(),
            "project_id = :pid".to_owned(),
            "created_ms = if_not_exists(created_ms, :now)".to_owned(),
            "updated_ms = :now".to_owned(),
        ];
        let mut remove = Vec::new();
        let mut req = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Profiles))
            .key(keys::PK, s(k::profile_pk(project_id, clevertap_id)))
            .expression_attribute_values(":ct", s(clevertap_id))
            .expression_attribute_values(":pid", s(project_id))
            .expression_attribute_values(":now", n(now_ms));
        if let Some(id) = &merge.identity {
            set.push("#identity = if_not_exists(#identity, :id)".into());
            req = req
                .expression_attribute_names("#identity", "identity")
                .expression_attribute_values(":id", s(id.clone()));
        }
        if let Some(e) = &merge.email {
            set.push("email = :email, email_key = :ek".into());
            req = req
                .expression_attribute_values(":email", s(e.clone()))
                .expression_attribute_values(":ek", s(k::email_key(project_id, e)));
        }
        if let Some(p) = &merge.phone {
            set.push("phone = :phone, phone_key = :pk".into());
            req = req
                .expression_attribute_values(":phone", s(p.clone()))
                .expression_attribute_values(":pk", s(k::phone_key(project_id, p)));
        }
        for (i, (key, value)) in merge.properties.iter().enumerate() {
            let name = format!("#a{i}");
            req = req.expression_attribute_names(&name, format!("{ATTRIBUTE_PREFIX}{key}"));
            match value {
                Some(v) => {
                    let val = format!(":a{i}");
                    set.push(format!("{name} = {val}"));
                    req = req.expression_attribute_values(val, v.to_attr());
                }
                None => remove.push(name),
            }
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        req.update_expression(expr).send().await?;
        Ok(())
    }
}
