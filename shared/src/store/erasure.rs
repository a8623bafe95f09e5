//! What an erasure reads and writes: the project's erasure marks, tombstones, the erased person's
//! membership rows (with exact counts), events, claims and profiles, and the audit rows.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnValue, Update, WriteRequest};

use super::memberships::{members_leave, membership_key};
use super::profiles::identity_key;
use super::rows::memberships as row;
use super::segment_item::SegmentLayout;
use super::{
    CancellationReason, Item, MAX_UNPROCESSED_RETRIES, Store, StoreError, TxOutcome, backoff,
    conditional, get_n, get_s, n, s,
};
use crate::domain::erasure::{
    ErasureAudit, TombstoneHasher, TombstoneKeys, TombstoneKind, is_before_erasure,
};
use crate::domain::feed::FeedNotice;
use crate::domain::region::Region;
use crate::domain::resolution::Resolved;
use crate::store::keys::{self, events as ek, profiles as pk, projects, segments as sk};
use crate::store::tables::Table;

/// What erasing needs to know of a stored membership row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ErasableRow {
    member: bool,
    version: Option<String>,
    /// It still names the person or their history (identity, ever added / removed).
    holds_person: bool,
}

fn erasable_row(item: &Item) -> ErasableRow {
    ErasableRow {
        member: row::is_member(item),
        version: row::version(item).map(str::to_owned),
        holds_person: row::holds_person(item),
    }
}

/// What erasing one membership row comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScrubPlan {
    /// No row: put a non-member row at the erasure's version, so a change sent before the
    /// erasure finds it stale.
    Block,
    /// Erased before, and nothing of the person came back since.
    Unchanged,
    /// Scrub the row to `next` (its version, at least the erasure's), conditional on the
    /// version read (`expected`); `leaving` when it was a member (the count goes down).
    Scrub {
        next: String,
        expected: Option<String>,
        leaving: bool,
    },
}

/// Pure: the plan for one row as read (`None`: no row).
fn plan_scrub(row: Option<&ErasableRow>, erased_version: &str) -> ScrubPlan {
    let Some(row) = row else {
        return ScrubPlan::Block;
    };
    let erased_before = !row.member
        && !row.holds_person
        && row.version.as_deref().is_some_and(|v| v >= erased_version);
    if erased_before {
        return ScrubPlan::Unchanged;
    }
    ScrubPlan::Scrub {
        next: row
            .version
            .clone()
            .unwrap_or_default()
            .max(erased_version.to_owned()),
        expected: row.version.clone(),
        leaving: row.member,
    }
}

/// The scrub of one row: not a member, no identity, no history, version `next`, conditional
/// on the version read.
fn scrub_update(
    table: &str,
    key: Item,
    next: &str,
    expected: Option<String>,
    now_ms: i64,
) -> Update {
    let (condition, read) = match expected {
        Some(v) => ("version = :read", Some(s(v))),
        None => ("attribute_not_exists(version)", None),
    };
    Update::builder()
        .table_name(table)
        .set_key(Some(key))
        // The person's events go: so does the history Find People reads.
        .update_expression(
            "SET #member = :no, version = :next, erased_ms = :now, \
             updated_ms = :now REMOVE #identity, #added, #removed",
        )
        .condition_expression(condition)
        .expression_attribute_names("#member", row::MEMBER)
        .expression_attribute_names("#identity", row::IDENTITY)
        .expression_attribute_names("#added", row::EVER_ADDED)
        .expression_attribute_names("#removed", row::EVER_REMOVED)
        .set_expression_attribute_values(Some(
            [
                (":no", AttributeValue::Bool(false)),
                (":next", s(next)),
                (":now", n(now_ms)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(read.map(|r| (":read".to_owned(), r)))
            .collect(),
        ))
        .build()
        .expect("table and key are set")
}

/// Attribute of a project item: the salt of its legacy (unkeyed) tombstone hashes, made by its
/// first erasure before tombstones were keyed. No new one is made.
const SALT: &str = "erasure_salt";
/// Attribute of a project item: true once an erasure wrote keyed tombstones for it.
const KEYED: &str = "erasure_keyed";
/// Attribute of a tombstone: the time (epoch ms) the erasure it remembers was made as of.
const ERASED_MS: &str = "erased_ms";
/// Re-reads of one membership row whose version moved while erasing it.
const MAX_MEMBERSHIP_REREADS: u32 = 25;

/// What a project item says of its erasures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureMarks {
    /// It has had one: its tombstones are worth checking.
    pub had_erasure: bool,
    /// The salt of its tombstones written before they were keyed, if any were.
    pub legacy_salt: Option<String>,
}

/// What erasing one membership row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowErased {
    /// The person was a member: the row left the segment and its count.
    MemberRemoved,
    /// The row (a former member) lost its identity and was advanced past the erasure.
    Scrubbed,
    /// There was no row: one that is not a member, at the erasure's version, now stands there,
    /// so a change sent before the erasure and applied after it is stale.
    Blocked,
    /// The row was erased already (a retry): nothing written.
    Unchanged,
}

impl Store {
    /// Whether the project has had erasures (so its tombstones are worth checking) and its
    /// legacy salt if it had some before tombstones were keyed. With `create`, marks it as
    /// having keyed tombstones first (before any is written, so a check that reads the mark
    /// after a tombstone landed always finds it).
    pub async fn erasure_marks(
        &self,
        region: Region,
        project_id: &str,
        create: bool,
    ) -> Result<ErasureMarks, StoreError> {
        let table = self.table(region, Table::Projects);
        let item = if create {
            self.client(region)
                .update_item()
                .table_name(table)
                .key(projects::PROJECT_ID, s(project_id))
                .update_expression("SET #keyed = :yes")
                .condition_expression("attribute_exists(#pid)")
                .expression_attribute_names("#keyed", KEYED)
                .expression_attribute_names("#pid", projects::PROJECT_ID)
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .return_values(ReturnValue::AllNew)
                .send()
                .await?
                .attributes
        } else {
            self.client(region)
                .get_item()
                .table_name(table)
                .key(projects::PROJECT_ID, s(project_id))
                .projection_expression("#salt, #keyed")
                .expression_attribute_names("#salt", SALT)
                .expression_attribute_names("#keyed", KEYED)
                .consistent_read(true)
                .send()
                .await?
                .item
        };
        let item = item.unwrap_or_default();
        let legacy_salt = get_s(&item, SALT).map(str::to_owned);
        let keyed = matches!(item.get(KEYED), Some(AttributeValue::Bool(true)));
        Ok(ErasureMarks {
            had_erasure: keyed || legacy_salt.is_some(),
            legacy_salt,
        })
    }

    /// Remembers that `hash` was erased as of `erased_ms`; a later erasure of it wins.
    pub async fn write_tombstone(
        &self,
        region: Region,
        project_id: &str,
        hash: &str,
        erased_ms: i64,
    ) -> Result<(), StoreError> {
        let res = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Profiles))
            .key(keys::PK, s(pk::tombstone_pk(project_id, hash)))
            .update_expression("SET #e = :e")
            .condition_expression("attribute_not_exists(#e) OR #e < :e")
            .expression_attribute_names("#e", ERASED_MS)
            .expression_attribute_values(":e", n(erased_ms))
            .send()
            .await;
        // An older erasure's time never replaces a newer one's.
        conditional(res).map(|_| ())
    }

    /// The tombstones among these hashes: hash → erased as of (epoch ms).
    pub async fn tombstones(
        &self,
        region: Region,
        project_id: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let keys: Vec<Item> = hashes
            .iter()
            .map(|h| Item::from([(keys::PK.to_owned(), s(pk::tombstone_pk(project_id, h)))]))
            .collect();
        let prefix = pk::tombstone_pk(project_id, "");
        Ok(self
            .batch_get(region, Table::Profiles, keys)
            .await?
            .iter()
            .filter_map(|i| {
                let hash = get_s(i, keys::PK)?.strip_prefix(&prefix)?;
                Some((hash.to_owned(), get_n(i, ERASED_MS)?))
            })
            .collect())
    }

    /// Takes a person out of one segment: the row stops being a member, loses its identity and
    /// gets a version at least `erased_version` (so a change sent before the erasure is stale);
    /// a member is taken off a counter shard in the same transaction. Conditional on the row's
    /// version as read; a row that moved is read again.
    ///
    /// 1. Read the row. 2. Plan (`plan_scrub`, pure). 3. Write what the plan says.
    pub async fn erase_membership(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        now_ms: i64,
    ) -> Result<RowErased, StoreError> {
        let tables = self.region_tables(region);
        let audience_id = layout.audience_id;
        let key = membership_key(project_id, layout, clevertap_id);
        for attempt in 0..MAX_MEMBERSHIP_REREADS {
            // 1. The row as it is now.
            let row = self
                .get_item_by_key(region, Table::Memberships, key.clone())
                .await?
                .map(|item| erasable_row(&item));
            // 2. What erasing it takes.
            let (next, expected, leaving) = match plan_scrub(row.as_ref(), erased_version) {
                ScrubPlan::Unchanged => return Ok(RowErased::Unchanged),
                ScrubPlan::Block => {
                    let put = self.put_blocking_row(
                        region,
                        project_id,
                        layout,
                        clevertap_id,
                        erased_version,
                        now_ms,
                    );
                    if put.await? {
                        return Ok(RowErased::Blocked);
                    }
                    continue; // a row appeared meanwhile: erase it
                }
                ScrubPlan::Scrub {
                    next,
                    expected,
                    leaving,
                } => (next, expected, leaving),
            };
            // 3. The scrub, with the member leaving the counter in the same transaction.
            let scrub = scrub_update(&tables.memberships, key.clone(), &next, expected, now_ms);
            let items = members_leave(
                project_id,
                &tables,
                audience_id,
                vec![scrub],
                None,
                u64::from(leaving),
                now_ms,
            );
            match self.transact_write(region, items).await? {
                TxOutcome::Committed => {
                    return Ok(if leaving {
                        RowErased::MemberRemoved
                    } else {
                        RowErased::Scrubbed
                    });
                }
                TxOutcome::Cancelled(codes) => {
                    if let Some(CancellationReason::Other(code)) = codes
                        .iter()
                        .flatten()
                        .find(|c| matches!(c, CancellationReason::Other(_)))
                    {
                        return Err(StoreError::Rejected(format!(
                            "erasing a membership of audience {audience_id}: {code}"
                        )));
                    }
                    if codes.first() != Some(&Some(CancellationReason::ConditionFailed)) {
                        tokio::time::sleep(backoff(attempt.min(4) + 1)).await;
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "membership of audience {audience_id} kept changing while erasing it"
        )))
    }

    /// A non-member row at the erasure's version where there was none; false if one appeared.
    async fn put_blocking_row(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut item = membership_key(project_id, layout, clevertap_id);
        item.insert(row::MEMBER.into(), row::boolean(false));
        item.insert(row::VERSION.into(), s(erased_version));
        item.insert(row::CLEVERTAP_ID.into(), s(clevertap_id));
        item.insert(row::AUDIENCE_ID.into(), n(layout.audience_id));
        item.insert(row::ERASED_MS.into(), n(now_ms));
        item.insert("updated_ms".into(), n(now_ms));
        self.put_new(region, Table::Memberships, item).await
    }

    /// A PutItem that never overwrites: false if the item exists.
    async fn put_new(&self, region: Region, table: Table, item: Item) -> Result<bool, StoreError> {
        let res = self
            .client(region)
            .put_item()
            .table_name(self.table(region, table))
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        conditional(res)
    }

    /// Deletes every Partner Sync event of a profile; returns how many. If it has any, `notice`
    /// is written for the publisher first (they may have been published), so a retry after a
    /// failure finds the events still there until the notice is written.
    pub async fn delete_profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        notice: &FeedNotice,
    ) -> Result<u64, StoreError> {
        let table = self.table(region, Table::Events);
        let mut deleted = 0;
        let mut start = None;
        loop {
            let page = self
                .client(region)
                .query()
                .table_name(&table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(ek::pk(project_id, clevertap_id)))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            let keys = page.items.unwrap_or_default();
            if deleted == 0 && !keys.is_empty() {
                self.put_feed_notice(region, notice).await?;
            }
            deleted += keys.len() as u64;
            self.batch_delete(region, Table::Events, keys).await?;
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(deleted);
            }
        }
    }

    /// Deletes items by key, 25 a request, retrying unprocessed ones.
    async fn batch_delete(
        &self,
        region: Region,
        table: Table,
        keys: Vec<Item>,
    ) -> Result<(), StoreError> {
        let table_name = self.table(region, table);
        for chunk in keys.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    WriteRequest::builder()
                        .delete_request(
                            DeleteRequest::builder()
                                .set_key(Some(k.clone()))
                                .build()
                                .expect("key is set"),
                        )
                        .build()
                })
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let out = self
                    .client(region)
                    .batch_write_item()
                    .request_items(&table_name, pending)
                    .send()
                    .await?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&table_name))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt > MAX_UNPROCESSED_RETRIES {
                        return Err(StoreError::Unavailable(format!(
                            "{} deletes still unprocessed",
                            pending.len()
                        )));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Ok(())
    }

    /// Deletes an identity claim if it names this profile; returns whether one went.
    pub async fn delete_claim(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
        clevertap_id: &str,
    ) -> Result<bool, StoreError> {
        self.delete_if(
            region,
            Table::Profiles,
            identity_key(project_id, identity),
            "clevertap_id = :ct",
            clevertap_id,
        )
        .await
    }

    /// Deletes a profile item; returns whether there was one.
    pub async fn delete_profile(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<bool, StoreError> {
        self.delete_if(
            region,
            Table::Profiles,
            super::profiles::profile_key(project_id, clevertap_id),
            "clevertap_id = :ct",
            clevertap_id,
        )
        .await
    }

    /// A DeleteItem conditional on `condition` (with `:ct`); false if the condition did not hold.
    async fn delete_if(
        &self,
        region: Region,
        table: Table,
        key: Item,
        condition: &str,
        clevertap_id: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .client(region)
            .delete_item()
            .table_name(self.table(region, table))
            .set_key(Some(key))
            .condition_expression(condition)
            .expression_attribute_values(":ct", s(clevertap_id))
            .send()
            .await;
        conditional(res)
    }

    /// Records an erasure's audit row unless one exists for its request; returns whether this
    /// call wrote it. The row holds ids, times and counts, never an identity.
    pub async fn put_erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        audit: &ErasureAudit,
    ) -> Result<bool, StoreError> {
        let mut row: Item = serde_dynamo::to_item(audit)?;
        row.insert(keys::PK.to_owned(), s(sk::erasure_pk(project_id)));
        row.insert(keys::SK.to_owned(), s(sk::erasure_sk(&audit.request_id)));
        self.put_new(region, Table::Segments, row).await
    }

    /// The audit row of one erasure request, if it was carried out.
    pub async fn erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> Result<Option<ErasureAudit>, StoreError> {
        let key = Item::from([
            (keys::PK.to_owned(), s(sk::erasure_pk(project_id))),
            (keys::SK.to_owned(), s(sk::erasure_sk(request_id))),
        ]);
        Ok(self
            .get_item_by_key(region, Table::Segments, key)
            .await?
            .map(serde_dynamo::from_item)
            .transpose()?)
    }

    /// Every erasure audit row of a project, the latest completed first.
    pub async fn erasure_audits(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<ErasureAudit>, StoreError> {
        erasure_audits_of(
            self.query_partition(region, Table::Segments, &sk::erasure_pk(project_id), None)
                .await?,
        )
    }
}

/// Audit rows as [`ErasureAudit`]s, the latest completed first.
pub(super) fn erasure_audits_of(rows: Vec<Item>) -> Result<Vec<ErasureAudit>, StoreError> {
    let mut audits: Vec<ErasureAudit> = rows
        .into_iter()
        .map(serde_dynamo::from_item)
        .collect::<Result<_, _>>()?;
    audits.sort_by_key(|a| std::cmp::Reverse(a.completed_ms));
    Ok(audits)
}

/// The erasures of a project as one chunk sees them (`domain::erasure`), for resolve,
/// materialize and the preview. A project that never
/// had one costs one read per chunk (and never reads the tombstone keys); otherwise each check
/// is one BatchGetItem of tombstones.
pub struct Erasures {
    project: String,
    marks: ErasureMarks,
    /// Read once the project is known to have had an erasure.
    keys: Option<Arc<TombstoneKeys>>,
}

impl Erasures {
    pub async fn of(store: &Store, region: Region, project: &str) -> Result<Self, StoreError> {
        let marks = store.erasure_marks(region, project, false).await?;
        let keys = match marks.had_erasure {
            true => Some(store.tombstone_keys().await?),
            false => None,
        };
        Ok(Self {
            project: project.to_owned(),
            marks,
            keys,
        })
    }

    /// The erasures as they stand now, for the check after writing: a project that had none when
    /// the chunk began may have had its first meanwhile (it is marked before any tombstone is
    /// written), so the mark is read again; a mark once made stays, so one that was there stays.
    pub async fn again(
        self,
        store: &Store,
        region: Region,
        project: &str,
    ) -> Result<Self, StoreError> {
        match self.marks.had_erasure {
            true => Ok(self),
            false => Self::of(store, region, project).await,
        }
    }

    /// How this project's tombstones are keyed; `None` if it never had an erasure.
    fn hasher(&self) -> Option<TombstoneHasher<'_>> {
        Some(TombstoneHasher {
            keys: self.keys.as_deref()?,
            project: &self.project,
            legacy_salt: self.marks.legacy_salt.as_deref(),
        })
    }

    /// The time of the newest erasure of each of these CleverTap IDs, for those erased (a
    /// CleverTap ID is tombstoned once an erasure found its profile).
    pub async fn of_clevertap_ids(
        &self,
        store: &Store,
        region: Region,
        project: &str,
        clevertap_ids: &BTreeSet<&str>,
    ) -> Result<HashMap<String, i64>, StoreError> {
        let Some(hasher) = self.hasher() else {
            return Ok(HashMap::new());
        };
        let hashes: HashMap<String, &str> = clevertap_ids
            .iter()
            .flat_map(|ct| {
                (hasher.checked(TombstoneKind::CleverTapId, ct).into_iter()).map(move |h| (h, *ct))
            })
            .collect();
        let all: Vec<String> = hashes.keys().cloned().collect();
        let mut newest: HashMap<String, i64> = HashMap::new();
        for (h, erased_ms) in store.tombstones(region, project, &all).await? {
            if let Some(ct) = hashes.get(&h) {
                let at = newest.entry(ct.to_string()).or_insert(erased_ms);
                *at = (*at).max(erased_ms);
            }
        }
        Ok(newest)
    }

    /// For each of `users`, the time of the newest erasure made after `message_ts` that covers it
    /// (by ladder key, email or phone); `None` if none does.
    pub async fn covering(
        &self,
        store: &Store,
        region: Region,
        project: &str,
        message_ts: i64,
        users: &[Resolved<'_>],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let Some(hasher) = self.hasher() else {
            return Ok(vec![None; users.len()]);
        };
        let per_user: Vec<Vec<String>> = users
            .iter()
            .map(|r| match r.resolution.outcome {
                Ok(_) => hasher.of_resolution(&r.resolution),
                Err(_) => Vec::new(),
            })
            .collect();
        let all: BTreeSet<&String> = per_user.iter().flatten().collect();
        let all: Vec<String> = all.into_iter().cloned().collect();
        let tombstones = store.tombstones(region, project, &all).await?;
        Ok(per_user
            .iter()
            .map(|hashes| {
                hashes
                    .iter()
                    .filter_map(|h| tombstones.get(h).copied())
                    .filter(|&erased_ms| is_before_erasure(message_ts, erased_ms))
                    .max()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERASED: &str = "0001700000000000";

    fn row(member: bool, version: Option<&str>, holds_person: bool) -> ErasableRow {
        ErasableRow {
            member,
            version: version.map(str::to_owned),
            holds_person,
        }
    }

    #[test]
    fn no_row_is_blocked_and_a_scrubbed_row_is_left_alone() {
        assert_eq!(plan_scrub(None, ERASED), ScrubPlan::Block);
        assert_eq!(
            plan_scrub(Some(&row(false, Some(ERASED), false)), ERASED),
            ScrubPlan::Unchanged
        );
    }

    #[test]
    fn a_member_leaves_and_the_version_never_goes_back() {
        let older = "0001600000000000#m#000001#0000";
        assert_eq!(
            plan_scrub(Some(&row(true, Some(older), true)), ERASED),
            ScrubPlan::Scrub {
                next: ERASED.to_owned(),
                expected: Some(older.to_owned()),
                leaving: true,
            }
        );
        // A row newer than the erasure (a batch sent after it) keeps its version, but is
        // scrubbed of the person all the same.
        let newer = "0001800000000000#m#000001#0000";
        assert_eq!(
            plan_scrub(Some(&row(false, Some(newer), true)), ERASED),
            ScrubPlan::Scrub {
                next: newer.to_owned(),
                expected: Some(newer.to_owned()),
                leaving: false,
            }
        );
        // A row without a version is scrubbed on the condition that it still has none.
        assert_eq!(
            plan_scrub(Some(&row(false, None, false)), ERASED),
            ScrubPlan::Scrub {
                next: ERASED.to_owned(),
                expected: None,
                leaving: false,
            }
        );
    }
}
