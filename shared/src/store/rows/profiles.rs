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

/// An item of the profiles table as a scan meets it (`scripts/admin holders backfill`).
#[derive(Debug, Clone, PartialEq)]
pub enum ScannedItem {
    Profile {
        project_id: String,
        profile: Box<Profile>,
    },
    Holders {
        project_id: String,
        kind: HeldValue,
        value: String,
        clevertap_ids: Vec<String>,
    },
    /// A claim, tombstone or erasure item.
    Other,
}

pub fn scanned_item(item: &Item) -> ScannedItem {
    let pk = get_s(item, keys::PK).unwrap_or_default();
    if let Some(rest) = pk.strip_prefix("H#") {
        let parsed = rest.split_once('#').and_then(|(project, rest)| {
            let (kind, value) = rest.split_once('#')?;
            let kind = match kind {
                "email" => HeldValue::Email,
                "phone" => HeldValue::Phone,
                _ => return None,
            };
            Some((project.to_owned(), kind, value.to_owned()))
        });
        if let Some((project_id, kind, value)) = parsed {
            return ScannedItem::Holders {
                project_id,
                kind,
                value,
                clevertap_ids: holders_of(item),
            };
        }
    }
    if pk.starts_with("P#") {
        let project = get_s(item, PROJECT_ID).map(str::to_owned);
        if let (Some(project_id), Some(profile)) = (project, profile_of(item)) {
            return ScannedItem::Profile {
                project_id,
                profile: Box::new(profile),
            };
        }
    }
    ScannedItem::Other
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

/// Taking back fields: removes them with their versions, conditional on each
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
        assert_eq!(
            item.keys().filter(|k| k.contains("_key")).count(),
            0,
            "no index keys: an email or phone is found through its holders"
        );
    }

    #[test]
    fn a_write_sets_the_email_and_conditions_each_version() {
        let merge = ProfileMerge {
            email: Some(Versioned {
                value: "a@x.io".into(),
                version: "2".into(),
            }),
            ..ProfileMerge::default()
        };
        let write = merge.plan(None).unwrap();
        let spec = profile_written("p", "ct", &write, 5);
        assert!(spec.update.contains("#f0 = :f0"));
        assert_eq!(spec.names["#f0"], "email");
        assert_eq!(spec.values[":f0"], s("a@x.io"));
        assert_eq!(spec.condition.as_deref(), Some("attribute_not_exists(#v0)"));
        assert_eq!(spec.names["#v0"], "v#email");
    }

    #[test]
    fn a_scan_tells_profiles_from_holders_and_the_rest() {
        let profile = Profile {
            clevertap_id: "ct".into(),
            email: Some("a#b@x.io".into()),
            ..Profile::default()
        };
        let item = profile_item("p", &profile);
        assert_eq!(
            scanned_item(&item),
            ScannedItem::Profile {
                project_id: "p".into(),
                profile: Box::new(profile)
            }
        );
        let mut holders = holders_key("p", HeldValue::Email, "a#b@x.io");
        holders.insert(k::HOLDERS.to_owned(), AttributeValue::Ss(vec!["ct".into()]));
        assert_eq!(
            scanned_item(&holders),
            ScannedItem::Holders {
                project_id: "p".into(),
                kind: HeldValue::Email,
                value: "a#b@x.io".into(),
                clevertap_ids: vec!["ct".into()],
            }
        );
        assert_eq!(scanned_item(&identity_key("p", "c-1")), ScannedItem::Other);
    }
}
