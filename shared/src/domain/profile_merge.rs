//! Profile merges, pure: each field is newest-wins by the version of the message that set it,
//! not by arrival. Resolve plans a [`ProfileWrite`] from a [`ProfileMerge`] and the profile read;
//! a take-back plans which fields one message set ([`TakeBack`]).

use std::collections::BTreeMap;

pub use crate::domain::records::HeldValue;
use crate::domain::records::{Profile, PropertyValue};

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

/// A versioned field of a profile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProfileField {
    Identity,
    Email,
    Phone,
    Property(String),
}

impl ProfileField {
    /// The held value this field is, if it is an email or phone.
    pub fn held(&self) -> Option<HeldValue> {
        match self {
            ProfileField::Email => Some(HeldValue::Email),
            ProfileField::Phone => Some(HeldValue::Phone),
            _ => None,
        }
    }

    /// The field's version in a profile, if it has one.
    pub fn version_in<'p>(&self, profile: &'p Profile) -> Option<&'p str> {
        let v = &profile.versions;
        match self {
            ProfileField::Identity => v.identity.as_deref(),
            ProfileField::Email => v.email.as_deref(),
            ProfileField::Phone => v.phone.as_deref(),
            ProfileField::Property(key) => v.properties.get(key).map(String::as_str),
        }
    }

    /// Every versioned field of a profile with its version.
    pub fn all_of(profile: &Profile) -> Vec<(ProfileField, &str)> {
        let v = &profile.versions;
        let mut fields: Vec<(ProfileField, &str)> = [
            (ProfileField::Identity, v.identity.as_deref()),
            (ProfileField::Email, v.email.as_deref()),
            (ProfileField::Phone, v.phone.as_deref()),
        ]
        .into_iter()
        .filter_map(|(f, v)| Some((f, v?)))
        .collect();
        fields.extend(
            v.properties
                .iter()
                .map(|(k, v)| (ProfileField::Property(k.clone()), v.as_str())),
        );
        fields
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWrite {
    pub field: ProfileField,
    /// `None` removes the value (a deleted property); its version stays as a tombstone. An
    /// email or phone is a `Text`.
    pub value: Option<PropertyValue>,
    pub version: String,
    pub expected: Option<String>,
}

impl FieldWrite {
    /// The email or phone this write gives the profile, if it is one.
    pub fn held_value(&self) -> Option<(HeldValue, &str)> {
        match (self.field.held()?, self.value.as_ref()?) {
            (kind, PropertyValue::Text(v)) => Some((kind, v.as_str())),
            _ => None,
        }
    }
}

impl ProfileWrite {
    /// What the write records: each email or phone it sets, with its version, unless the
    /// profile read records it with a version as new already.
    pub fn recording(&self, read: Option<&Profile>) -> Vec<((HeldValue, String), String)> {
        (self.fields.iter())
            .filter_map(|f| {
                let (kind, value) = f.held_value()?;
                let entry = (kind, value.to_owned());
                let newer = read
                    .and_then(|p| p.held.get(&entry))
                    .is_none_or(|v| *v < f.version);
                newer.then(|| (entry, f.version.clone()))
            })
            .collect()
    }
}

/// For a profile from before values were recorded (`scripts/admin holders backfill`): the write
/// that records its current email and phone with their versions, each rewritten as it is and
/// conditional on its version, so it fails rather than recreate an erased profile or record a
/// value a newer message replaced. `None` when both are recorded already.
pub fn recording_current(profile: &Profile) -> Option<ProfileWrite> {
    let mut write = ProfileWrite::default();
    for field in [ProfileField::Email, ProfileField::Phone] {
        let (Some(kind), Some(version)) = (field.held(), field.version_in(profile)) else {
            continue;
        };
        let Some(value) = kind.of(profile) else {
            continue;
        };
        let entry = (kind, value.to_owned());
        if profile.held.contains_key(&entry) {
            continue;
        }
        write.fields.push(FieldWrite {
            field,
            value: Some(PropertyValue::Text(value.to_owned())),
            version: version.to_owned(),
            expected: Some(version.to_owned()),
        });
        write.recorded.push((entry, version.to_owned()));
    }
    (!write.fields.is_empty()).then_some(write)
}

/// The write that brings a stored profile up to a merge: only fields whose version is newer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileWrite {
    /// Set only if the profile has no Identity yet, with the version of the message that sets it.
    pub identity: Option<Versioned<String>>,
    pub fields: Vec<FieldWrite>,
    /// The profile does not exist yet.
    pub create: bool,
    /// The emails and phones this write gives the profile, with this message's version: recorded
    /// on the profile before their holders name it (`Profile::held`).
    pub recorded: Vec<((HeldValue, String), String)>,
}

impl ProfileMerge {
    /// The email and phone the message gives the profile (whether or not they win the field).
    pub fn held_values(&self) -> Vec<(HeldValue, &str)> {
        [
            (HeldValue::Email, &self.email),
            (HeldValue::Phone, &self.phone),
        ]
        .into_iter()
        .filter_map(|(kind, v)| Some((kind, v.as_ref()?.value.as_str())))
        .collect()
    }

    /// Plans the write against the stored profile (`None`: a new one); `None` if nothing would
    /// change. A field is written when its version is newer than the stored one, even with an
    /// equal value: the version must advance, or an older message arriving later would win.
    pub fn plan(&self, existing: Option<&Profile>) -> Option<ProfileWrite> {
        let mut fields = Vec::new();
        let mut consider = |field: ProfileField, value: Option<PropertyValue>, version: &str| {
            let expected = existing
                .and_then(|p| field.version_in(p))
                .map(str::to_owned);
            if expected.as_deref().is_some_and(|v| v >= version) {
                return;
            }
            fields.push(FieldWrite {
                field,
                value,
                version: version.to_owned(),
                expected,
            });
        };
        if let Some(e) = &self.email {
            let value = Some(PropertyValue::Text(e.value.clone()));
            consider(ProfileField::Email, value, &e.version);
        }
        if let Some(p) = &self.phone {
            let value = Some(PropertyValue::Text(p.value.clone()));
            consider(ProfileField::Phone, value, &p.version);
        }
        for (key, v) in &self.properties {
            consider(
                ProfileField::Property(key.clone()),
                v.value.clone(),
                &v.version,
            );
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
            recorded: Vec::new(),
        })
    }
}

/// The fields of a profile one message set (their version begins with its prefix), to take
/// back: each conditional on its version as read. `whole`: they are all the profile holds, so
/// the profile goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeBack {
    pub fields: Vec<(ProfileField, String)>,
    /// The emails and phones the message gave the profile, with their versions (conditions).
    pub held: Vec<((HeldValue, String), String)>,
    pub whole: bool,
}

impl TakeBack {
    /// Plans taking back what the message with `version_prefix` set; `None` if it set nothing
    /// that stands.
    pub fn plan(profile: &Profile, version_prefix: &str) -> Option<TakeBack> {
        let all = ProfileField::all_of(profile);
        let fields: Vec<(ProfileField, String)> = all
            .iter()
            .filter(|(_, v)| v.starts_with(version_prefix))
            .map(|(f, v)| (f.clone(), (*v).to_owned()))
            .collect();
        let held: Vec<((HeldValue, String), String)> = (profile.held.iter())
            .filter(|(_, v)| v.starts_with(version_prefix))
            .map(|(entry, v)| (entry.clone(), v.clone()))
            .collect();
        let whole = fields.len() == all.len();
        // Whole: every field is this message's (a profile with no field is another's too).
        let whole = whole && !fields.is_empty();
        (!fields.is_empty() || !held.is_empty()).then_some(TakeBack {
            fields,
            held,
            whole,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::FieldVersions;

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

    fn stored(email: Option<(&str, &str)>, props: &[(&str, &str, &str)]) -> Profile {
        Profile {
            clevertap_id: "ct".into(),
            email: email.map(|(e, _)| e.to_owned()),
            properties: props
                .iter()
                .map(|(k, v, _)| ((*k).to_owned(), PropertyValue::Text((*v).to_owned())))
                .collect(),
            versions: FieldVersions {
                email: email.map(|(_, v)| v.to_owned()),
                properties: props
                    .iter()
                    .map(|(k, _, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..FieldVersions::default()
            },
            ..Profile::default()
        }
    }

    #[test]
    fn a_new_profile_gets_every_field() {
        let m = merge(Some(("a@x.io", "2")), &[("plan", Some("gold"), "2")]);
        let w = m.plan(None).unwrap();
        assert!(w.create);
        assert_eq!(w.fields.len(), 2);
        assert!(w.fields.iter().all(|f| f.expected.is_none()));
        assert_eq!(m.held_values(), [(HeldValue::Email, "a@x.io")]);
    }

    #[test]
    fn only_newer_fields_are_written_even_with_equal_values() {
        let item = stored(Some(("a@x.io", "05")), &[("plan", "gold", "09")]);
        // Older email: skipped. Same plan value but newer: its version must advance.
        let w = merge(Some(("b@x.io", "04")), &[("plan", Some("gold"), "10")])
            .plan(Some(&item))
            .unwrap();
        assert!(!w.create);
        assert_eq!(w.fields.len(), 1);
        assert_eq!(w.fields[0].field, ProfileField::Property("plan".into()));
        assert_eq!(w.fields[0].expected.as_deref(), Some("09"));
        assert_eq!(w.fields[0].version, "10");
    }

    #[test]
    fn nothing_newer_plans_nothing_and_a_delete_keeps_its_version() {
        let item = stored(Some(("a@x.io", "5")), &[]);
        assert_eq!(merge(Some(("a@x.io", "5")), &[]).plan(Some(&item)), None);
        let w = merge(None, &[("plan", None, "7")])
            .plan(Some(&item))
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

    #[test]
    fn a_take_back_plans_one_messages_fields_and_the_whole_profile_when_nothing_else_stands() {
        let ours = message_version_prefix(10, "m1");
        let theirs = data_version(20, "m2", 0);
        let mine = data_version(10, "m1", 3);
        let profile = stored(Some(("a@x.io", &mine)), &[("plan", "gold", &theirs)]);
        let t = TakeBack::plan(&profile, &ours).unwrap();
        assert_eq!(t.fields, [(ProfileField::Email, mine.clone())]);
        assert!(!t.whole, "another message's property stands");
        let only_ours = stored(Some(("a@x.io", &mine)), &[]);
        assert!(TakeBack::plan(&only_ours, &ours).unwrap().whole);
        assert_eq!(
            TakeBack::plan(&only_ours, &message_version_prefix(10, "m2")),
            None
        );
    }

    #[test]
    fn a_profile_from_before_records_gets_its_current_values_recorded_as_they_are() {
        let mut old = Profile {
            clevertap_id: "ct".into(),
            email: Some("a@x.io".into()),
            phone: Some("+1555".into()),
            ..Profile::default()
        };
        old.versions.email = Some("5".into());
        old.versions.phone = Some("6".into());
        let write = recording_current(&old).unwrap();
        assert!(!write.create);
        assert_eq!(
            write.recorded,
            [
                ((HeldValue::Email, "a@x.io".to_owned()), "5".to_owned()),
                ((HeldValue::Phone, "+1555".to_owned()), "6".to_owned()),
            ]
        );
        for f in &write.fields {
            assert_eq!(
                f.expected.as_deref(),
                Some(f.version.as_str()),
                "unchanged since read"
            );
        }
        old.held
            .insert((HeldValue::Email, "a@x.io".into()), "5".into());
        let write = recording_current(&old).unwrap();
        assert_eq!(write.fields.len(), 1, "only the phone is left to record");
        old.held
            .insert((HeldValue::Phone, "+1555".into()), "6".into());
        assert_eq!(recording_current(&old), None);
        let bare = Profile {
            clevertap_id: "ct".into(),
            ..Profile::default()
        };
        assert_eq!(recording_current(&bare), None, "nothing to record");
    }
}
