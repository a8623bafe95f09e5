//! The `projects` table's rows: a project's output credentials, and its erasure marks (kept on
//! the same item, ignored by [`project`]).

use aws_sdk_dynamodb::types::AttributeValue;

use super::UpdateSpec;
use crate::domain::auth::{Project, ProjectStatus, StoredPasscode};
use crate::ports::StoreError;
use crate::ports::erasures::ErasureMarks;
use crate::store::keys::projects as k;
use crate::store::{Item, s};

const PASSCODES: &str = "passcodes";
/// The salt of tombstones written before they were keyed (never written any more).
const SALT: &str = "erasure_salt";
/// The project has keyed tombstones (set before the first is written).
const KEYED: &str = "erasure_keyed";
const STATUS: &str = "status";

/// A project's key.
pub fn key(project_id: &str) -> Item {
    Item::from([(k::PROJECT_ID.to_owned(), s(project_id))])
}

pub fn item(project: &Project) -> Result<Item, StoreError> {
    Ok(serde_dynamo::to_item(project)?)
}

pub fn project(item: Item) -> Result<Project, StoreError> {
    Ok(serde_dynamo::from_item(item)?)
}

/// The condition of a create: no project with this id (its key attribute, `keys::projects`).
pub const NEW_PROJECT_ONLY: &str = "attribute_not_exists(project_id)";

/// Appends a passcode, if the project exists.
pub fn passcode_added(passcode: &StoredPasscode) -> Result<UpdateSpec, StoreError> {
    Ok(UpdateSpec::new("SET #pcs = list_append(#pcs, :p)")
        .condition("attribute_exists(#pcs)")
        .name("#pcs", PASSCODES)
        .value(
            ":p",
            AttributeValue::L(vec![serde_dynamo::to_attribute_value(passcode)?]),
        ))
}

/// Removes the passcode at `index`, if it is still the one with `passcode_id`.
pub fn passcode_removed(index: usize, passcode_id: &str) -> UpdateSpec {
    UpdateSpec::new(format!("REMOVE #pcs[{index}]"))
        .condition(format!("#pcs[{index}].id = :pid"))
        .name("#pcs", PASSCODES)
        .value(":pid", s(passcode_id))
}

/// Sets the status, if the project exists.
pub fn status_set(status: ProjectStatus) -> Result<UpdateSpec, StoreError> {
    Ok(UpdateSpec::new("SET #st = :s")
        .condition("attribute_exists(#pcs)")
        .name("#st", STATUS)
        .name("#pcs", PASSCODES)
        .value(":s", serde_dynamo::to_attribute_value(status)?))
}

/// The attributes [`marks_of`] reads (a projection: the credentials stay unread).
pub const MARKS: [&str; 2] = [SALT, KEYED];

/// What a project item says of its erasures (an absent item: none).
pub fn marks_of(item: &Item) -> ErasureMarks {
    let legacy_salt = crate::store::get_s(item, SALT).map(str::to_owned);
    let keyed = matches!(item.get(KEYED), Some(AttributeValue::Bool(true)));
    ErasureMarks {
        had_erasure: keyed || legacy_salt.is_some(),
        legacy_salt,
    }
}

/// Marks a project as having keyed tombstones, if it exists.
pub fn erasures_marked() -> UpdateSpec {
    UpdateSpec::new("SET #keyed = :yes")
        .condition("attribute_exists(#pid)")
        .name("#keyed", KEYED)
        .name("#pid", k::PROJECT_ID)
        .value(":yes", AttributeValue::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::region::Region;

    #[test]
    fn a_project_round_trips_and_its_create_condition_names_its_key() {
        let project = Project {
            project_id: "P1".into(),
            region: Region::Eu1,
            account_token: "tok".into(),
            passcodes: vec![],
            status: ProjectStatus::Active,
            created_ms: 5,
        };
        let item = item(&project).unwrap();
        assert_eq!(item[k::PROJECT_ID], key("P1")[k::PROJECT_ID]);
        assert_eq!(super::project(item).unwrap(), project);
        assert!(NEW_PROJECT_ONLY.contains(k::PROJECT_ID));
    }
}
