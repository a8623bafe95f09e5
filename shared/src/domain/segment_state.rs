//! The segment membership state machine, pure.
//!
//! State per (segment, profile): member or not, and the version (see
//! [`crate::domain::changes::MembershipChange::version`]) of the last change applied. A change is applied
//! only if it is newer than that version; it raises an event only if it flips membership.

use crate::domain::changes::ChangeAction;

/// Membership of one profile in one segment, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberState {
    pub member: bool,
    /// The last applied change's version; `None` if no change was ever applied.
    pub version: Option<String>,
}

/// The Partner Sync action a change raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncAction {
    Added,
    Removed,
}

impl SyncAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncAction::Added => "Added",
            SyncAction::Removed => "Removed",
        }
    }
}

/// What applying one change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Membership flipped: raise this event.
    Changed(SyncAction),
    /// Newer than the last change, but membership was already so: version advances, no event.
    NoOp,
    /// The very change applied last, delivered again.
    Duplicate,
    /// Older than the last applied change: ignored.
    Stale,
}

/// Applies one change to a membership state.
pub fn apply(state: &MemberState, action: ChangeAction, version: &str) -> (MemberState, Outcome) {
    match state.version.as_deref() {
        Some(v) if v == version => return (state.clone(), Outcome::Duplicate),
        Some(v) if v > version => return (state.clone(), Outcome::Stale),
        _ => {}
    }
    let member = action == ChangeAction::Add;
    let next = MemberState {
        member,
        version: Some(version.to_owned()),
    };
    let outcome = match (state.member, member) {
        (false, true) => Outcome::Changed(SyncAction::Added),
        (true, false) => Outcome::Changed(SyncAction::Removed),
        _ => Outcome::NoOp,
    };
    (next, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(member: bool, v: &str) -> MemberState {
        MemberState {
            member,
            version: Some(v.into()),
        }
    }

    #[test]
    fn transitions() {
        let fresh = MemberState::default();
        assert_eq!(
            apply(&fresh, ChangeAction::Add, "b").1,
            Outcome::Changed(SyncAction::Added)
        );
        assert_eq!(
            apply(&fresh, ChangeAction::Delete, "b"),
            (state(false, "b"), Outcome::NoOp)
        );
        assert_eq!(
            apply(&state(true, "b"), ChangeAction::Delete, "c"),
            (state(false, "c"), Outcome::Changed(SyncAction::Removed))
        );
        assert_eq!(
            apply(&state(true, "b"), ChangeAction::Add, "c"),
            (state(true, "c"), Outcome::NoOp)
        );
        assert_eq!(
            apply(&state(true, "b"), ChangeAction::Delete, "a"),
            (state(true, "b"), Outcome::Stale)
        );
        assert_eq!(
            apply(&state(true, "b"), ChangeAction::Add, "b"),
            (state(true, "b"), Outcome::Duplicate)
        );
    }

    /// A set of timestamped changes (distinct versions), delivered in any order with duplicates.
    fn arb_delivery() -> impl Strategy<Value = (Vec<(String, ChangeAction)>, Vec<usize>)> {
        prop::collection::btree_map(0u32..1000, any::<bool>(), 1..12)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(t, add)| {
                        (
                            format!("{t:06}"),
                            if add {
                                ChangeAction::Add
                            } else {
                                ChangeAction::Delete
                            },
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .prop_flat_map(|changes| {
                let n = changes.len();
                (
                    Just(changes),
                    prop::collection::vec(0..n, n..n * 3).prop_shuffle(),
                )
            })
    }

    proptest! {
        #[test]
        fn any_order_with_duplicates_ends_in_the_newest_state((changes, order) in arb_delivery(), initially_member in any::<bool>()) {
            // Every change is delivered at least once.
            let mut delivery: Vec<usize> = (0..changes.len()).collect();
            delivery.extend(order);
            let mut s = MemberState { member: initially_member, version: None };
            let mut events: Vec<(usize, SyncAction)> = Vec::new();
            for &i in &delivery {
                let (next, outcome) = apply(&s, changes[i].1, &changes[i].0);
                if let Outcome::Changed(a) = outcome {
                    events.push((i, a));
                }
                s = next;
            }
            let newest = changes.iter().max_by(|a, b| a.0.cmp(&b.0)).unwrap();
            prop_assert_eq!(s.member, newest.1 == ChangeAction::Add);
            prop_assert_eq!(s.version.as_deref(), Some(newest.0.as_str()));
            // One event per real change: no change raises twice, and events alternate.
            let mut raised: Vec<usize> = events.iter().map(|e| e.0).collect();
            raised.sort_unstable();
            raised.dedup();
            prop_assert_eq!(raised.len(), events.len());
            let mut member = initially_member;
            for (_, a) in &events {
                prop_assert_eq!(*a == SyncAction::Added, !member);
                member = !member;
            }
            prop_assert_eq!(member, s.member);
        }

        #[test]
        fn in_order_delivery_raises_an_event_for_every_flip((changes, _) in arb_delivery()) {
            let mut sorted = changes.clone();
            sorted.sort();
            let mut s = MemberState::default();
            let mut flips = 0;
            let mut member = false;
            for (v, a) in &sorted {
                let (next, outcome) = apply(&s, *a, v);
                let wants = *a == ChangeAction::Add;
                if wants != member {
                    flips += 1;
                    member = wants;
                    prop_assert!(matches!(outcome, Outcome::Changed(_)));
                } else {
                    prop_assert_eq!(outcome, Outcome::NoOp);
                }
                s = next;
            }
            prop_assert!(flips <= sorted.len());
        }
    }
}
