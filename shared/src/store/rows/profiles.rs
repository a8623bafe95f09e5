//! The `profiles` table's rows: profiles (versioned fields, one attribute each, with their index
//! keys), identity claims, holders of an email or phone, and tombstones.

use aws_sdk_dynamodb::types::AttributeValue;

use super::UpdateSpec;
use crate::domain::profile_merge::{HeldValue, ProfileField, ProfileWrite, TakeBack};
use crate::domain::records::{FieldVersions, Profile, PropertyValue};
use crate::ports::profiles::Claim;
use crate::store::keys::{self, profiles as k};
use crate::store::{Item, get_n, get_s, n, s};

/// Profile attributes shared by mParticle are stored as top-level attributes with this prefix.
pub const ATTRIBUTE_PREFIX: &str = "attr#";
const CLEVERTAP_ID: &str = "clevertap_id";
const PROJECT_ID: &str = "project_id";
const IDENTITY: &str = "identity";
const EMAIL: &str = "email";
const PHONE: &str = "phone";
const CREATED_MS: &str = "created_ms";
const UPDATED_MS: &str = "updated_ms";
const MESSAGE_ID: &str = "message_id";
const ERASED_MS: &str = "erased_ms";
/// An email or phone the profile was given: `h#email:<value>` / `h#phone:<value>`, holding the
/// version of the newest message that gave it.
const HELD_PREFIX: &str = "h#";
/// Versions are kept next to their field: `v#email`, `v#attr#plan`.
const VERSION_PREFIX: &str = "v#";

/// The attribute holding a field.
pub fn field_attribute(field: &ProfileField) -> String {
    match field {
        ProfileField::Identity => IDENTITY.to_owned(),
        ProfileField::Email => EMAIL.to_owned(),
        ProfileField::Phone => PHONE.to_owned(),
        ProfileField::Property(key) => format!("{ATTRIBUTE_PREFIX}{key}"),
    }
}

/// The attribute holding the version of a field.
pub fn version_attribute(field: &ProfileField) -> String {
    format!("{VERSION_PREFIX}{}", field_attribute(field))
}

/// The index key an email or phone is found by (`by_email`, `by_phone`).
fn index_key(
    project_id: &str,
    field: &ProfileField,
    value: &str,
) -> Option<(&'static str, String)> {
    match field {
        ProfileField::Email => Some((k::EMAIL_KEY, k::email_key(project_id, value))),
        ProfileField::Phone => Some((k::PHONE_KEY, k::phone_key(project_id, value))),
        _ => None,
    }
}

fn held_attribute(kind: HeldValue, value: &str) -> String {
    format!("{HELD_PREFIX}{}:{value}", kind.as_str())
}

fn held_of(attribute: &str) -> Option<(HeldValue, String)> {
    let (kind, value) = attribute.strip_prefix(HELD_PREFIX)?.split_once(':')?;
    let kind = [HeldValue::Email, HeldValue::Phone]
        .into_iter()
        .find(|k| k.as_str() == kind)?;
    Some((kind, value.to_owned()))
}

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

pub fn profile_key(project_id: &str, clevertap_id: &str) -> Item {
    Item::from([(
        keys::PK.to_owned(),
        s(k::profile_pk(project_id, clevertap_id)),
    )])
}

pub fn identity_key(project_id: &str, identity: &str) -> Item {
    Item::from([(keys::PK.to_owned(), s(k::identity_pk(project_id, identity)))])
}

pub fn holders_key(project_id: &str, kind: HeldValue, value: &str) -> Item {
    Item::from([(
        keys::PK.to_owned(),
        s(k::holders_pk(project_id, kind.as_str(), value)),
    )])
}

pub fn tombstone_key(project_id: &str, hash: &str) -> Item {
    Item::from([(keys::PK.to_owned(), s(k::tombstone_pk(project_id, hash)))])
}

/// A stored profile item as a [`Profile`] (`None`: not a profile item).
pub fn profile_of(item: &Item) -> Option<Profile> {
    let version = |field: ProfileField| get_s(item, &version_attribute(&field)).map(str::to_owned);
    Some(Profile {
        clevertap_id: get_s(item, CLEVERTAP_ID)?.to_owned(),
        identity: get_s(item, IDENTITY).map(str::to_owned),
        email: get_s(item, EMAIL).map(str::to_owned),
        phone: get_s(item, PHONE).map(str::to_owned),
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
            identity: version(ProfileField::Identity),
            email: version(ProfileField::Email),
            phone: version(ProfileField::Phone),
            properties: item
                .iter()
                .filter_map(|(k, v)| {
                    let key = k
                        .strip_prefix(VERSION_PREFIX)?
                        .strip_prefix(ATTRIBUTE_PREFIX)?;
                    Some((key.to_owned(), v.as_s().ok()?.clone()))
                })
                .collect(),
        },
        created_ms: get_n(item, CREATED_MS),
        updated_ms: get_n(item, UPDATED_MS),
        held: (item.iter())
            .filter_map(|(k, v)| Some((held_of(k)?, v.as_s().ok()?.clone())))
            .collect(),
    })
}

/// A profile as the item the adapter's writes leave (the twin measures and logs it).
pub fn profile_item(project_id: &str, profile: &Profile) -> Item {
    let mut item = profile_key(project_id, &profile.clevertap_id);
    item.insert(CLEVERTAP_ID.to_owned(), s(&profile.clevertap_id));
    item.insert(PROJECT_ID.to_owned(), s(project_id));
    let mut text = |field: ProfileField, value: &Option<String>| {
        if let Some(v) = value {
            if let Some((attr, key)) = index_key(project_id, &field, v) {
                item.insert(attr.to_owned(), s(key));
            }
            item.insert(field_attribute(&field), s(v));
        }
    };
    text(ProfileField::Identity, &profile.identity);
    text(ProfileField::Email, &profile.email);
    text(ProfileField::Phone, &profile.phone);
    for (key, value) in &profile.properties {
        let field = ProfileField::Property(key.clone());
        item.insert(field_attribute(&field), property_attribute(value));
    }
    for (field, version) in ProfileField::all_of(profile) {
        item.insert(version_attribute(&field), s(version));
    }
    if let Some(at) = profile.created_ms {
        item.insert(CREATED_MS.to_owned(), n(at));
    }
    if let Some(at) = profile.updated_ms {
        item.insert(UPDATED_MS.to_owned(), n(at));
    }
    for ((kind, value), version) in &profile.held {
        item.insert(held_attribute(*kind, value), s(version));
    }
    item
}

/// A claim item as a [`Claim`] with its Identity (`None`: not a claim of this project).
pub fn claim_of(project_id: &str, item: &Item) -> Option<(String, Claim)> {
    let identity = get_s(item, keys::PK)?.strip_prefix(&k::identity_pk(project_id, ""))?;
    let claim = Claim {
        clevertap_id: get_s(item, CLEVERTAP_ID)?.to_owned(),
        message_id: get_s(item, MESSAGE_ID).map(str::to_owned),
    };
    Some((identity.to_owned(), claim))
}

/// The CleverTap ID a claim item names.
pub fn claimed_by(item: &Item) -> Option<&str> {
    get_s(item, CLEVERTAP_ID)
}

/// A new claim: which message made it is kept, so a retry after an erasure overtook it undoes
/// its own.
pub fn claim_item(
    project_id: &str,
    identity: &str,
    clevertap_id: &str,
    message_id: &str,
    now_ms: i64,
) -> Item {
    let mut item = identity_key(project_id, identity);
    item.insert(CLEVERTAP_ID.to_owned(), s(clevertap_id));
    item.insert(MESSAGE_ID.to_owned(), s(message_id));
    item.insert(CREATED_MS.to_owned(), n(now_ms));
    item
}

/// The condition of a new claim or holder-less drop: nothing under the key yet.
pub const NEW_ITEM_ONLY: &str = "attribute_not_exists(pk)";

/// The condition of deleting a profile or claim: it names this CleverTap ID (as `:ct`).
pub fn names_clevertap_id(clevertap_id: &str) -> UpdateSpec {
    UpdateSpec::new("")
        .condition(format!("{CLEVERTAP_ID} = :ct"))
        .value(":ct", s(clevertap_id))
}

/// The update that brings a profile up to a planned write: only the planned fields, each
/// conditional on its version being the one planned against.
pub fn profile_written(
    project_id: &str,
    clevertap_id: &str,
    write: &ProfileWrite,
    now_ms: i64,
) -> UpdateSpec {
    let mut set = vec![
        format!("{CLEVERTAP_ID} = :ct"),
        format!("{PROJECT_ID} = :pid"),
        format!("{CREATED_MS} = if_not_exists({CREATED_MS}, :now)"),
        format!("{UPDATED_MS} = :now"),
    ];
    let mut remove = Vec::new();
    let mut conditions = Vec::new();
    let mut spec = UpdateSpec::new("")
        .value(":ct", s(clevertap_id))
        .value(":pid", s(project_id))
        .value(":now", n(now_ms));
    if let Some(id) = &write.identity {
        // Both or neither: the version names the message whose Identity stands.
        set.push("#identity = if_not_exists(#identity, :id)".into());
        set.push("#vid = if_not_exists(#vid, :vid)".into());
        spec = spec
            .name("#identity", IDENTITY)
            .name("#vid", &version_attribute(&ProfileField::Identity))
            .value(":id", s(id.value.clone()))
            .value(":vid", s(id.version.clone()));
    }
    for (i, f) in write.fields.iter().enumerate() {
        let (name, version) = (format!("#f{i}"), format!("#v{i}"));
        spec = spec
            .name(&name, &field_attribute(&f.field))
            .name(&version, &version_attribute(&f.field))
            .value(&format!(":v{i}"), s(f.version.clone()));
        set.push(format!("{version} = :v{i}"));
        match &f.value {
            Some(v) => {
                set.push(format!("{name} = :f{i}"));
                spec = spec.value(&format!(":f{i}"), property_attribute(v));
                let text = match v {
                    PropertyValue::Text(t) => Some(t.as_str()),
                    _ => None,
                };
                if let Some((attr, key)) = text.and_then(|t| index_key(project_id, &f.field, t)) {
                    set.push(format!("{attr} = :k{i}"));
                    spec = spec.value(&format!(":k{i}"), s(key));
                }
            }
            None => remove.push(name),
        }
        match &f.expected {
            None => conditions.push(format!("attribute_not_exists({version})")),
            Some(e) => {
                conditions.push(format!("{version} = :e{i}"));
                spec = spec.value(&format!(":e{i}"), s(e.clone()));
            }
        }
    }
    spec.update = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        spec.update
            .push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    for (i, ((kind, value), version)) in write.recorded.iter().enumerate() {
        spec = spec
            .name(&format!("#h{i}"), &held_attribute(*kind, value))
            .value(&format!(":h{i}"), s(version.clone()));
        let at = spec.update.find(" REMOVE").unwrap_or(spec.update.len());
        spec.update.insert_str(at, &format!(", #h{i} = :h{i}"));
    }
    if !conditions.is_empty() {
        spec = spec.condition(conditions.join(" AND "));
    }
    spec
}

/// Taking back fields: removes them with their versions and index keys, conditional on each
/// version as planned. For a whole take-back (a delete) only the condition and its names and
/// values count.
pub fn fields_taken_back(take: &TakeBack) -> UpdateSpec {
    let mut spec = UpdateSpec::new("");
    let mut removes = Vec::new();
    let mut conditions = Vec::new();
    for (i, (field, version)) in take.fields.iter().enumerate() {
        spec = spec
            .name(&format!("#v{i}"), &version_attribute(field))
            .value(&format!(":v{i}"), s(version.clone()));
        conditions.push(format!("#v{i} = :v{i}"));
        if take.whole {
            continue;
        }
        spec = spec.name(&format!("#f{i}"), &field_attribute(field));
        removes.push(format!("#f{i}, #v{i}"));
        let index = match field {
            ProfileField::Email => Some(k::EMAIL_KEY),
            ProfileField::Phone => Some(k::PHONE_KEY),
            _ => None,
        };
        if let Some(index) = index {
            spec = spec.name(&format!("#i{i}"), index);
            removes.push(format!("#i{i}"));
        }
    }
    for (i, ((kind, value), version)) in take.held.iter().enumerate() {
        spec = spec
            .name(&format!("#h{i}"), &held_attribute(*kind, value))
            .value(&format!(":h{i}"), s(version.clone()));
        conditions.push(format!("#h{i} = :h{i}"));
        removes.push(format!("#h{i}"));
    }
    if !take.whole {
        spec.update = format!("REMOVE {}", removes.join(", "));
    }
    spec.condition(conditions.join(" AND "))
}

/// `ADD`s (`true`) or `DELETE`s a CleverTap ID to or from the holders of a value.
pub fn holder_changed(clevertap_id: &str, add: bool) -> UpdateSpec {
    let operation = if add { "ADD" } else { "DELETE" };
    UpdateSpec::new(format!("{operation} #cts :ct"))
        .name("#cts", k::HOLDERS)
        .value(":ct", AttributeValue::Ss(vec![clevertap_id.to_owned()]))
}

/// The condition of dropping a holders item: DynamoDB removed its emptied set.
pub fn holders_empty() -> UpdateSpec {
    UpdateSpec::new("")
        .condition("attribute_not_exists(#cts)")
        .name("#cts", k::HOLDERS)
}

/// The CleverTap IDs a holders item names.
pub fn holders_of(item: &Item) -> Vec<String> {
    item.get(k::HOLDERS)
        .and_then(|v| v.as_ss().ok().cloned())
        .unwrap_or_default()
}

/// A tombstone written as of `erased_ms`, unless a newer erasure's stands.
pub fn tombstone_written(erased_ms: i64) -> UpdateSpec {
    UpdateSpec::new("SET #e = :e")
        .condition("attribute_not_exists(#e) OR #e < :e")
        .name("#e", ERASED_MS)
        .value(":e", n(erased_ms))
}

/// A tombstone item's hash and time (`None`: not a tombstone of this project).
pub fn tombstone_of(project_id: &str, item: &Item) -> Option<(String, i64)> {
    let hash = get_s(item, keys::PK)?.strip_prefix(&k::tombstone_pk(project_id, ""))?;
    Some((hash.to_owned(), get_n(item, ERASED_MS)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::profile_merge::{ProfileMerge, Versioned};

    #[test]
    fn a_profile_round_trips_through_its_item_with_every_version() {
        let profile = Profile {
            clevertap_id: "ct".into(),
            identity: Some("c1".into()),
            email: Some("a@x.io".into()),
            phone: Some("+15550001".into()),
            properties: [
                ("plan".to_owned(), PropertyValue::Text("gold".into())),
                ("tags".to_owned(), PropertyValue::List(vec!["a".into()])),
                ("vip".to_owned(), PropertyValue::Tag),
            ]
            .into(),
            versions: FieldVersions {
                identity: Some("1".into()),
                email: Some("2".into()),
                phone: Some("3".into()),
                properties: [
                    ("plan".to_owned(), "4".to_owned()),
                    ("tags".to_owned(), "5".to_owned()),
                    ("vip".to_owned(), "6".to_owned()),
                    ("gone".to_owned(), "7".to_owned()),
                ]
                .into(),
            },
            created_ms: Some(10),
            updated_ms: Some(11),
            held: [
                ((HeldValue::Email, "a@x.io".to_owned()), "2".to_owned()),
                ((HeldValue::Email, "old:a@x.io".to_owned()), "1".to_owned()),
                ((HeldValue::Phone, "+15550001".to_owned()), "3".to_owned()),
            ]
            .into(),
        };
        let item = profile_item("p", &profile);
        assert_eq!(profile_of(&item), Some(profile));
        assert_eq!(get_s(&item, k::EMAIL_KEY), Some("p#a@x.io"));
    }

    #[test]
    fn a_write_sets_the_index_key_with_the_email_and_conditions_each_version() {
        let merge = ProfileMerge {
            email: Some(Versioned {
                value: "a@x.io".into(),
                version: "2".into(),
            }),
            ..ProfileMerge::default()
        };
        let write = merge.plan(None).unwrap();
        let spec = profile_written("p", "ct", &write, 5);
        assert!(spec.update.contains(&format!("{} = :k0", k::EMAIL_KEY)));
        assert_eq!(spec.values[":k0"], s("p#a@x.io"));
        assert_eq!(spec.condition.as_deref(), Some("attribute_not_exists(#v0)"));
        assert_eq!(spec.names["#v0"], "v#email");
    }
}
