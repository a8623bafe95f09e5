//! The `memberships` table's rows: one (segment, profile) pair. The attribute names of a row and
//! the readers every module uses (materialize's planning, the erasure, the read API, snapshots).

use aws_sdk_dynamodb::types::AttributeValue;

use super::UpdateSpec;
use crate::domain::records::SegmentLayout;
use crate::domain::segment_state::MemberState;
use crate::ports::memberships::{PairWrite, SyncHistory};
use crate::store::Item;
pub use crate::store::keys::memberships::{EVER_ADDED, EVER_REMOVED};
use crate::store::keys::{self, memberships as mk};
use crate::store::{get_s, n, s};

/// Whether the profile is a member now.
pub const MEMBER: &str = "member";
/// The version of the last change applied (or of the clear or erasure that scrubbed it).
pub const VERSION: &str = "version";
/// The Identity the profile was resolved by; removed by an erasure.
pub const IDENTITY: &str = "identity";
pub const CLEVERTAP_ID: &str = "clevertap_id";
pub const AUDIENCE_ID: &str = "audience_id";
pub const UPDATED_MS: &str = "updated_ms";
pub const CLEARED_MS: &str = "cleared_ms";
pub const ERASED_MS: &str = "erased_ms";

pub fn membership_key(project_id: &str, layout: SegmentLayout, clevertap_id: &str) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(layout.row_pk(project_id, clevertap_id)),
        ),
        (keys::SK.to_owned(), s(mk::sk(clevertap_id))),
    ])
}

/// The condition of a planned write: the row is as it was read (absent, or at that version).
pub fn as_planned(expected_version: Option<&str>) -> UpdateSpec {
    match expected_version {
        None => UpdateSpec::new("").condition("attribute_not_exists(pk)"),
        Some(v) => UpdateSpec::new("")
            .condition(format!("{VERSION} = :expected"))
            .value(":expected", s(v)),
    }
}

/// A pair's row as a planned write leaves it.
pub fn membership_item(project_id: &str, pair: &PairWrite, now_ms: i64) -> Item {
    let mut item = membership_key(project_id, pair.layout, &pair.clevertap_id);
    item.insert(MEMBER.into(), boolean(pair.next.member));
    item.insert(
        VERSION.into(),
        s(pair.next.version.clone().unwrap_or_default()),
    );
    item.insert(CLEVERTAP_ID.into(), s(pair.clevertap_id.clone()));
    item.insert(AUDIENCE_ID.into(), n(pair.layout.audience_id));
    item.insert(UPDATED_MS.into(), n(now_ms));
    if let Some(id) = &pair.identity {
        item.insert(IDENTITY.into(), s(id.clone()));
    }
    for (flag, name) in [
        (pair.history.added, EVER_ADDED),
        (pair.history.removed, EVER_REMOVED),
    ] {
        if flag {
            item.insert(name.into(), boolean(true));
        }
    }
    item
}

fn flag(item: &Item, name: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

/// A boolean attribute's value.
pub fn boolean(value: bool) -> AttributeValue {
    AttributeValue::Bool(value)
}

/// Whether a row's profile is a member.
pub fn is_member(item: &Item) -> bool {
    flag(item, MEMBER)
}

/// A row's version, if it has one.
pub fn version(item: &Item) -> Option<&str> {
    get_s(item, VERSION)
}

/// A stored row in the state machine's terms (no row: not a member, no version).
pub fn member_state(item: Option<&Item>) -> MemberState {
    match item {
        None => MemberState::default(),
        Some(i) => MemberState {
            member: is_member(i),
            version: version(i).map(str::to_owned),
        },
    }
}

/// The Partner Sync actions a stored row records (no row: none).
pub fn history(item: Option<&Item>) -> SyncHistory {
    SyncHistory {
        added: item.is_some_and(|i| flag(i, EVER_ADDED)),
        removed: item.is_some_and(|i| flag(i, EVER_REMOVED)),
    }
}

/// Whether a row still names the person or their history (Identity, ever added or removed).
pub fn holds_person(item: &Item) -> bool {
    item.contains_key(IDENTITY) || item.contains_key(EVER_ADDED) || item.contains_key(EVER_REMOVED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::s;

    #[test]
    fn a_row_reads_as_its_state_and_history() {
        let item = Item::from([
            (MEMBER.to_owned(), boolean(true)),
            (VERSION.to_owned(), s("v1")),
            (EVER_ADDED.to_owned(), boolean(true)),
        ]);
        assert_eq!(
            member_state(Some(&item)),
            MemberState {
                member: true,
                version: Some("v1".into())
            }
        );
        assert_eq!(
            history(Some(&item)),
            SyncHistory {
                added: true,
                removed: false
            }
        );
        assert!(holds_person(&item));
        assert_eq!(member_state(None), MemberState::default());
        assert_eq!(history(None), SyncHistory::default());
        assert!(!holds_person(&Item::from([(
            MEMBER.to_owned(),
            boolean(false)
        )])));
    }
}
