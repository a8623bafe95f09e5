//! Profiles and identity claims.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, conditional, get_s, n, s};
use crate::domain::records::{FieldVersions, Profile, PropertyValue};
use crate::domain::region::Region;
use crate::store::keys::{self, profiles as k};
use crate::store::tables::Table;

/// Profile attributes shared by mParticle are stored as top-level attributes with this prefix.
pub const ATTRIBUTE_PREFIX: &str = "attr#";

fn property_attribute(value: &PropertyValue) -> AttributeValue {
    match value {
        PropertyValue::Text(v) => s(v.clone()),
        PropertyValue::List(l) => AttributeValue::L(l.iter().cloned().map(s).collect()),
        PropertyValue::Tag => AttributeValue::Bool(true),
    }
}

fn property_of(value: &AttributeValue) -> Option<PropertyValue> {
    match value {
        AttributeValue::S(v) => Some(PropertyValue::Text(v.clone())),
        AttributeValue::L(l) => Some(PropertyValue::List(
            l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        )),
        AttributeValue::Bool(true) => Some(PropertyValue::Tag),
        _ => None,
    }
}

/// A stored profile item as a [`Profile`] (`None`: not a profile item).
pub(super) fn profile_of(item: &Item) -> Option<Profile> {
    Some(Profile {
        clevertap_id: get_s(item, "clevertap_id")?.to_owned(),
        identity: get_s(item, "identity").map(str::to_owned),
        email: get_s(item, "email").map(str::to_owned),
        phone: get_s(item, "phone").map(str::to_owned),
        properties: item
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix(ATTRIBUTE_PREFIX)?.to_owned(),
                    property_of(v)?,
                ))
            })
            .collect(),
        versions: FieldVersions {
            email: get_s(item, &version_attribute("email")).map(str::to_owned),
            phone: get_s(item, &version_attribute("phone")).map(str::to_owned),
            properties: item
                .iter()
                .filter_map(|(k, v)| {
                    let key = k
                        .strip_prefix(&version_attribute(ATTRIBUTE_PREFIX))?
                        .to_owned();
                    Some((key, v.as_s().ok()?.clone()))
                })
                .collect(),
        },
        created_ms: super::get_n(item, "created_ms"),
        updated_ms: super::get_n(item, "updated_ms"),
    })
}

/// A value with the version of the message that set it: message time, then message id and the
/// profile's position, so that every profile of every message has one place in a total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: String,
}

/// The version of the data a profile of a message carries (see [`Versioned`]).
pub fn data_version(message_ts: i64, message_id: &str, profile_index: u32) -> String {
    format!(
        "{}{profile_index:06}",
        message_version_prefix(message_ts, message_id)
    )
}

/// What every data version of one message begins with.
pub fn message_version_prefix(message_ts: i64, message_id: &str) -> String {
    format!("{:013}#{message_id}#", message_ts.max(0))
}

/// The attribute holding the version of a profile field (`email`, `phone`, `attr#<key>`).
pub fn version_attribute(field: &str) -> String {
    format!("v#{field}")
}

/// What to merge into one profile: `None` fields are left as they are. Each field is newest-wins
/// by the version of the message that set it, not by arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileMerge {
    /// Versioned like the fields, so a take-back can tell the message that set it.
    pub identity: Option<Versioned<String>>,
    pub email: Option<Versioned<String>>,
    pub phone: Option<Versioned<String>>,
    /// Upserts (`Some`) and deletions (`None`) by key.
    pub properties: BTreeMap<String, Versioned<Option<PropertyValue>>>,
}

/// One field a profile write sets (or removes), with the version it records and the version it
/// expects to find (`None`: no version stored yet).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldWrite {
    pub attribute: String,
    /// `None` removes the attribute (a deleted property); its version stays as a tombstone.
    pub value: Option<AttributeValue>,
    /// An index key set together with the value (`email_key`, `phone_key`).
    pub index_key: Option<(&'static str, String)>,
    pub version: String,
    pub expected: Option<String>,
}

/// The write that brings a stored profile up to a merge: only fields whose version is newer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileWrite {
    /// Set only if the profile has no Identity yet, with the version of the message that sets it.
    pub identity: Option<Versioned<String>>,
    pub fields: Vec<FieldWrite>,
    /// The profile does not exist yet.
    pub create: bool,
}

impl ProfileWrite {
    /// The emails and phones this write gives the profile: their holders are recorded first.
    pub fn held_values(&self) -> Vec<(crate::store::holders::HeldValue, &str)> {
        self.fields
            .iter()
            .filter_map(|f| {
                let kind = crate::store::holders::HeldValue::of_field(&f.attribute)?;
                Some((kind, f.value.as_ref()?.as_s().ok()?.as_str()))
            })
            .collect()
    }
}

impl ProfileMerge {
    /// Plans the write against the stored profile (`None`: a new one); `None` if nothing would
    /// change. A field is written when its version is newer than the stored one, even with an
    /// equal value: the version must advance, or an older message arriving later would win.
    pub fn plan(&self, project_id: &str, existing: Option<&Profile>) -> Option<ProfileWrite> {
        let stored_version = |attribute: &str| -> Option<String> {
            let versions = &existing?.versions;
            match attribute {
                "email" => versions.email.clone(),
                "phone" => versions.phone.clone(),
                other => versions
                    .properties
                    .get(other.strip_prefix(ATTRIBUTE_PREFIX)?)
                    .cloned(),
            }
        };
        let mut fields = Vec::new();
        let mut consider = |attribute: String,
                            value: Option<AttributeValue>,
                            index_key: Option<(&'static str, String)>,
                            version: &str| {
            let expected = stored_version(&attribute);
            if expected.as_deref().is_some_and(|v| v >= version) {
                return;
            }
            fields.push(FieldWrite {
                attribute,
                value,
                index_key,
                version: version.to_owned(),
                expected,
            });
        };
        if let Some(e) = &self.email {
            let key = (k::EMAIL_KEY, k::email_key(project_id, &e.value));
            consider(
                "email".into(),
                Some(s(e.value.clone())),
                Some(key),
                &e.version,
            );
        }
        if let Some(p) = &self.phone {
            let key = (k::PHONE_KEY, k::phone_key(project_id, &p.value));
            consider(
                "phone".into(),
                Some(s(p.value.clone())),
                Some(key),
                &p.version,
            );
        }
        for (key, v) in &self.properties {
            let value = v.value.as_ref().map(property_attribute);
            consider(format!("{ATTRIBUTE_PREFIX}{key}"), value, None, &v.version);
        }
        let identity = self
            .identity
            .clone()
            .filter(|_| existing.is_none_or(|p| p.identity.is_none()));
        let create = existing.is_none();
        (create || identity.is_some() || !fields.is_empty()).then_some(ProfileWrite {
            identity,
            fields,
            create,
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

/// Re-reads of a profile whose fields moved while taking one message's fields back.
const MAX_TAKE_BACK_REREADS: u32 = 25;

/// An identity claim as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub clevertap_id: String,
    /// The message that made it (claims made before this was recorded have none).
    pub message_id: Option<String>,
}

impl Store {
    /// The claims of these Identities, those that exist (one BatchGetItem round).
    pub async fn claims_of(
        &self,
        region: Region,
        project_id: &str,
        identities: &[String],
    ) -> Result<HashMap<String, Claim>, StoreError> {
        let prefix = k::identity_pk(project_id, "");
        let keys = identities
            .iter()
            .map(|id| identity_key(project_id, id))
            .collect();
        Ok(self
            .batch_get(region, Table::Profiles, keys)
            .await?
            .iter()
            .filter_map(|item| {
                let id = get_s(item, keys::PK)?.strip_prefix(&prefix)?;
                let claim = Claim {
                    clevertap_id: get_s(item, "clevertap_id")?.to_owned(),
                    message_id: get_s(item, "message_id").map(str::to_owned),
                };
                Some((id.to_owned(), claim))
            })
            .collect())
    }

    /// The CleverTap IDs of those Identities that are claimed already (one BatchGetItem round).
    pub async fn claimed_identities(
        &self,
        region: Region,
        project_id: &str,
        identities: &HashSet<&str>,
    ) -> Result<HashMap<String, String>, StoreError> {
        let identities: Vec<String> = identities.iter().map(|i| (*i).to_owned()).collect();
        Ok(self
            .claims_of(region, project_id, &identities)
            .await?
            .into_iter()
            .map(|(identity, claim)| (identity, claim.clevertap_id))
            .collect())
    }

    /// Removes from a profile the fields whose version begins with `version_prefix` (one
    /// message's data), with their versions and index keys; deletes the profile if it holds
    /// nothing else. Conditional on the versions read: a field another message moved meanwhile
    /// is theirs and stays (a lost condition re-reads).
    pub async fn take_back_fields(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        version_prefix: &str,
    ) -> Result<(), StoreError> {
        for _ in 0..MAX_TAKE_BACK_REREADS {
            let Some(item) = self
                .get_profile_item(region, project_id, clevertap_id)
                .await?
            else {
                return Ok(());
            };
            let versions: Vec<(&str, &str)> = item
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("v#")?, v.as_s().ok()?.as_str())))
                .collect();
            let ours: Vec<(&str, &str)> = versions
                .iter()
                .copied()
                .filter(|(_, v)| v.starts_with(version_prefix))
                .collect();
            if ours.is_empty() {
                return Ok(());
            }
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            let mut removes = Vec::new();
            let mut conditions = Vec::new();
            for (i, (field, version)) in ours.iter().enumerate() {
                names.insert(format!("#f{i}"), (*field).to_owned());
                names.insert(format!("#v{i}"), version_attribute(field));
                values.insert(format!(":v{i}"), s(*version));
                removes.push(format!("#f{i}, #v{i}"));
                conditions.push(format!("#v{i} = :v{i}"));
                let index = match *field {
                    "email" => Some(k::EMAIL_KEY),
                    "phone" => Some(k::PHONE_KEY),
                    _ => None,
                };
                if let Some(index) = index {
                    names.insert(format!("#i{i}"), index.to_owned());
                    removes.push(format!("#i{i}"));
                }
            }
            let key = profile_key(project_id, clevertap_id);
            let done = if ours.len() == versions.len() {
                let res = self
                    .client(region)
                    .delete_item()
                    .table_name(self.table(region, Table::Profiles))
                    .set_key(Some(key))
                    .condition_expression(conditions.join(" AND "))
                    .set_expression_attribute_names(Some(
                        names
                            .into_iter()
                            .filter(|(k, _)| k.starts_with("#v"))
                            .collect(),
                    ))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await;
                conditional(res)?
            } else {
                let res = self
                    .client(region)
                    .update_item()
                    .table_name(self.table(region, Table::Profiles))
                    .set_key(Some(key))
                    .update_expression(format!("REMOVE {}", removes.join(", ")))
                    .condition_expression(conditions.join(" AND "))
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await;
                conditional(res)?
            };
            if done {
                // The values taken back no longer lead to this profile.
                for (field, _) in &ours {
                    let kind = crate::store::holders::HeldValue::of_field(field);
                    if let (Some(kind), Some(value)) = (kind, get_s(&item, field)) {
                        self.remove_holder(region, project_id, kind, value, clevertap_id)
                            .await?;
                    }
                }
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "profile {clevertap_id} kept changing while taking a message's fields back"
        )))
    }

    /// Claims an Identity for a new profile with a conditional write. If another writer claimed
    /// it first, the winner's CleverTap ID is returned instead: one Identity, one profile.
    pub async fn claim_identity(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        new_clevertap_id: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<(String, bool), StoreError> {
        let res = self
            .client(region)
            .put_item()
            .table_name(self.table(region, Table::Profiles))
            .item(keys::PK, s(k::identity_pk(project_id, identity)))
            .item("clevertap_id", s(new_clevertap_id))
            // Which message made the claim: a retry after an erasure overtook it undoes its own.
            .item("message_id", s(message_id))
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

    /// Creates or updates a profile in one UpdateItem, touching only the planned fields, each
    /// conditional on its version being the one planned against. Returns false if another writer
    /// moved one of them first: read again and re-plan.
    pub async fn write_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        write: &ProfileWrite,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut set = vec![
            "clevertap_id = :ct".to_owned(),
            "project_id = :pid".to_owned(),
            "created_ms = if_not_exists(created_ms, :now)".to_owned(),
            "updated_ms = :now".to_owned(),
        ];
        let mut remove = Vec::new();
        let mut conditions = Vec::new();
        let mut req = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Profiles))
            .key(keys::PK, s(k::profile_pk(project_id, clevertap_id)))
            .expression_attribute_values(":ct", s(clevertap_id))
            .expression_attribute_values(":pid", s(project_id))
            .expression_attribute_values(":now", n(now_ms));
        if let Some(id) = &write.identity {
            // Both or neither: the version names the message whose Identity stands.
            set.push("#identity = if_not_exists(#identity, :id)".into());
            set.push("#vid = if_not_exists(#vid, :vid)".into());
            req = req
                .expression_attribute_names("#identity", "identity")
                .expression_attribute_names("#vid", version_attribute("identity"))
                .expression_attribute_values(":id", s(id.value.clone()))
                .expression_attribute_values(":vid", s(id.version.clone()));
        }
        for (i, f) in write.fields.iter().enumerate() {
            let (name, version) = (format!("#f{i}"), format!("#v{i}"));
            req = req
                .expression_attribute_names(&name, &f.attribute)
                .expression_attribute_names(&version, version_attribute(&f.attribute))
                .expression_attribute_values(format!(":v{i}"), s(f.version.clone()));
            set.push(format!("{version} = :v{i}"));
            match &f.value {
                Some(v) => {
                    set.push(format!("{name} = :f{i}"));
                    req = req.expression_attribute_values(format!(":f{i}"), v.clone());
                }
                None => remove.push(name),
            }
            if let Some((attr, key)) = &f.index_key {
                set.push(format!("{attr} = :k{i}"));
                req = req.expression_attribute_values(format!(":k{i}"), s(key.clone()));
            }
            match &f.expected {
                None => conditions.push(format!("attribute_not_exists({version})")),
                Some(e) => {
                    conditions.push(format!("{version} = :e{i}"));
                    req = req.expression_attribute_values(format!(":e{i}"), s(e.clone()));
                }
            }
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        if !conditions.is_empty() {
            req = req.condition_expression(conditions.join(" AND "));
        }
        super::conditional(req.update_expression(expr).send().await)
    }

    /// One profile, strongly consistent, `None` if there is none.
    pub async fn get_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Option<Profile>, StoreError> {
        Ok(self
            .get_profile_item(region, project_id, clevertap_id)
            .await?
            .as_ref()
            .and_then(profile_of))
    }

    /// Reads one profile (strongly consistent).
    pub(super) async fn get_profile_item(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Profiles))
            .set_key(Some(profile_key(project_id, clevertap_id)))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(email: Option<(&str, &str)>, props: &[(&str, Option<&str>, &str)]) -> ProfileMerge {
        ProfileMerge {
            identity: None,
            email: email.map(|(e, v)| Versioned {
                value: e.to_owned(),
                version: v.to_owned(),
            }),
            phone: None,
            properties: props
                .iter()
                .map(|(k, val, v)| {
                    (
                        (*k).to_owned(),
                        Versioned {
                            value: val.map(|x| PropertyValue::Text(x.to_owned())),
                            version: (*v).to_owned(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn stored(fields: &[(&str, &str, &str)]) -> Profile {
        let mut item = profile_key("p", "ct");
        item.insert("clevertap_id".to_owned(), s("ct"));
        for (attr, value, version) in fields {
            item.insert((*attr).to_owned(), s(*value));
            item.insert(version_attribute(attr), s(*version));
        }
        profile_of(&item).expect("a profile item")
    }

    #[test]
    fn a_new_profile_gets_every_field() {
        let w = merge(Some(("a@x.io", "2")), &[("plan", Some("gold"), "2")])
            .plan("p", None)
            .unwrap();
        assert!(w.create);
        assert_eq!(w.fields.len(), 2);
        assert!(w.fields.iter().all(|f| f.expected.is_none()));
        assert_eq!(
            w.fields[0].index_key,
            Some((k::EMAIL_KEY, "p#a@x.io".to_owned()))
        );
    }

    #[test]
    fn only_newer_fields_are_written_even_with_equal_values() {
        let item = stored(&[("email", "a@x.io", "05"), ("attr#plan", "gold", "09")]);
        // Older email: skipped. Same plan value but newer: its version must advance.
        let w = merge(Some(("b@x.io", "04")), &[("plan", Some("gold"), "10")])
            .plan("p", Some(&item))
            .unwrap();
        assert!(!w.create);
        assert_eq!(w.fields.len(), 1);
        assert_eq!(w.fields[0].attribute, "attr#plan");
        assert_eq!(w.fields[0].expected.as_deref(), Some("09"));
        assert_eq!(w.fields[0].version, "10");
    }

    #[test]
    fn nothing_newer_plans_nothing_and_a_delete_keeps_its_version() {
        let item = stored(&[("email", "a@x.io", "5")]);
        assert_eq!(
            merge(Some(("a@x.io", "5")), &[]).plan("p", Some(&item)),
            None
        );
        let w = merge(None, &[("plan", None, "7")])
            .plan("p", Some(&item))
            .unwrap();
        assert_eq!(w.fields[0].value, None, "a deleted property is removed");
        assert_eq!(w.fields[0].version, "7", "its version stays as a tombstone");
    }

    #[test]
    fn data_versions_order_by_time_then_message_then_position() {
        assert!(data_version(5, "z", 9) < data_version(40, "a", 0));
        assert!(data_version(5, "a", 9) < data_version(5, "b", 0));
        assert!(data_version(5, "a", 2) < data_version(5, "a", 10));
    }
}
