//! Reads for the read API: every one starts from a key that carries the project id.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::query::QueryOutput;

use super::memberships::{RowFilter, membership_key};
use super::rows::events::event_of;
use super::rows::profiles::identity_key;
use super::segment_item::{SegmentLayout, segment_of};
use super::{Item, Store, StoreError, get_s, s};
use crate::domain::records::{ProfileEvent, Segment, SyncRow};
use crate::domain::region::Region;
use crate::domain::segment_state::SyncAction;
use crate::store::keys::{self, events as ek, inbox as ik, segments as sk};
use crate::store::tables::Table;

/// Queries one page of a segment (members, Find People) may make: a page walks the segment's
/// buckets in order and stops here, answering a cursor (so every request is bounded). As many
/// as a new segment's buckets, so a small segment is listed in one request.
pub const MAX_PAGE_QUERIES: usize = 64;
/// Buckets read at once while paging (the Queries of one round run together).
pub const BUCKETS_AT_ONCE: usize = 16;

/// The Queries of one paging round, run together: the bucket of `from` from its position, then
/// the following buckets from their starts, at most `fan` of them. Answers each position with
/// its page, in bucket order.
async fn query_buckets<F, Fut, E>(
    from: &BucketPosition,
    buckets: u32,
    fan: usize,
    query: F,
) -> Result<Vec<(BucketPosition, QueryOutput)>, StoreError>
where
    F: Fn(&BucketPosition) -> Fut,
    Fut: std::future::Future<Output = Result<QueryOutput, E>>,
    StoreError: From<E>,
{
    let count = (buckets - from.bucket) as usize;
    let positions: Vec<BucketPosition> = std::iter::once(from.clone())
        .chain((from.bucket + 1..buckets).map(|bucket| BucketPosition {
            bucket,
            after: None,
        }))
        .take(count.min(fan).max(1))
        .collect();
    let pages = futures::future::try_join_all(positions.iter().map(&query))
        .await
        .map_err(StoreError::from)?;
    Ok(positions.into_iter().zip(pages).collect())
}

/// A current member of a segment, as the members list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub clevertap_id: String,
    pub identity: Option<String>,
}

/// One page of a segment's members and the cursor of the next (`None`: this was the last).
#[derive(Debug, Clone, Default)]
pub struct MemberList {
    pub members: Vec<Member>,
    pub next: Option<String>,
}

/// Where paging through a segment stands: a bucket, and the key after which it resumes in it
/// (`None`: the bucket's start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketPosition {
    pub bucket: u32,
    pub after: Option<String>,
}

impl BucketPosition {
    fn within(&self, after: &str) -> Self {
        Self {
            bucket: self.bucket,
            after: Some(after.to_owned()),
        }
    }

    fn next_bucket(&self) -> Self {
        Self {
            bucket: self.bucket + 1,
            after: None,
        }
    }

    /// The cursor text, `<bucket>:<key to resume after>` (opaque to clients).
    fn encode(&self) -> String {
        format!(
            "{}:{}",
            self.bucket,
            self.after.as_deref().unwrap_or_default()
        )
    }

    /// Reads a cursor of this segment; `None` if it is not one. A one-bucket segment also takes
    /// the cursors given before buckets existed (the key alone, `legacy`).
    fn parse(layout: SegmentLayout, cursor: &str, legacy: impl Fn(&str) -> String) -> Option<Self> {
        let position = cursor.split_once(':').and_then(|(bucket, after)| {
            Some(Self {
                bucket: bucket.parse().ok().filter(|b| *b < layout.buckets)?,
                after: (!after.is_empty()).then(|| after.to_owned()),
            })
        });
        match position {
            Some(p) => Some(p),
            None if layout.buckets <= 1 && !cursor.is_empty() => Some(Self {
                bucket: 0,
                after: Some(legacy(cursor)),
            }),
            None => None,
        }
    }

    /// Reads a members cursor of this segment; `None` if it is not one (its CleverTap ID must
    /// be of its bucket).
    pub fn parse_members(layout: SegmentLayout, cursor: &str) -> Option<Self> {
        Self::parse(layout, cursor, str::to_owned).filter(|p| {
            p.after
                .as_deref()
                .is_none_or(|ct| layout.bucket_of(ct) == p.bucket)
        })
    }

    /// Reads a Find People cursor of this segment; `None` if it is not one.
    pub fn parse_people(layout: SegmentLayout, cursor: &str) -> Option<Self> {
        if layout.buckets > 1 {
            // A bucketed segment pages its rows, as its members list does.
            return Self::parse_members(layout, cursor);
        }
        // A one-bucket segment pages its events' index keys; past every key of the profile.
        Self::parse(layout, cursor, |ct| format!("{ct}#~"))
    }
}

/// Whether `key` is a `by_segment` profile key of `clevertap_id`'s events
/// (`<CleverTap ID>#<13-digit time>#<change id>`; CleverTap IDs may contain `#`).
fn is_profile_key_of(key: &str, clevertap_id: &str) -> bool {
    key.strip_prefix(clevertap_id)
        .and_then(|rest| rest.strip_prefix('#'))
        .is_some_and(|rest| {
            rest.len() > 14
                && rest.as_bytes()[..13].iter().all(u8::is_ascii_digit)
                && rest.as_bytes()[13] == b'#'
        })
}

/// One page of items and where the next page starts (`None`: this was the last page).
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<ProfileEvent>,
    pub next: Option<String>,
}

impl Store {
    /// Every segment of a project (there are tens, not millions), oldest id first, with its
    /// counters summed over their shards.
    pub async fn list_segments(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<Segment>, StoreError> {
        let segments = self.segments_without_counts(region, project_id).await?;
        let ids: Vec<i64> = segments.iter().map(|s| s.audience_id).collect();
        let counts = self.segment_counts(region, project_id, &ids).await?;
        Ok(segments
            .into_iter()
            .map(|s| {
                let c = counts.get(&s.audience_id).copied().unwrap_or_default();
                s.with_counts(c)
            })
            .collect())
    }

    /// Every segment of a project, counters not read (no shard is touched).
    pub async fn segments_without_counts(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<Segment>, StoreError> {
        self.query_partition(
            region,
            Table::Segments,
            &sk::pk(project_id),
            Some(sk::SEGMENT_PREFIX),
        )
        .await?
        .iter()
        .filter_map(|item| Some((audience_id_of(item)?, item)))
        .map(|(aud, item)| segment_of(aud, item))
        .collect()
    }

    /// Some segments of a project by audience id (those that exist), counters not read:
    /// eventually consistent, one BatchGetItem.
    pub async fn segments_by_id(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: impl IntoIterator<Item = i64>,
    ) -> Result<HashMap<i64, Segment>, StoreError> {
        let keys = audience_ids
            .into_iter()
            .map(|aud| {
                Item::from([
                    (keys::PK.to_owned(), s(sk::pk(project_id))),
                    (keys::SK.to_owned(), s(sk::segment_sk(aud))),
                ])
            })
            .collect();
        self.batch_get(region, Table::Segments, keys)
            .await?
            .iter()
            .filter_map(|item| Some((audience_id_of(item)?, item)))
            .map(|(aud, item)| Ok((aud, segment_of(aud, item)?)))
            .collect()
    }

    /// Every item of one partition (`pk`), those whose `sk` begins with `sk_prefix` if given,
    /// page after page.
    pub(super) async fn query_partition(
        &self,
        region: Region,
        table: Table,
        pk_value: &str,
        sk_prefix: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut q = self
                .client(region)
                .query()
                .table_name(self.table(region, table))
                .expression_attribute_values(":pk", s(pk_value))
                .set_exclusive_start_key(start);
            q = match sk_prefix {
                Some(prefix) => q
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
                None => q.key_condition_expression("pk = :pk"),
            };
            let page = q.send().await?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// One page of a partition: at most `limit` items whose `sk` begins with `sk_prefix`, after
    /// the item whose `sk` is `after`; one Query. Answers the `sk` to go on from, if more follow.
    pub(super) async fn query_page(
        &self,
        region: Region,
        table: Table,
        pk_value: &str,
        sk_prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let start = after.map(|sk| {
            Item::from([
                (keys::PK.to_owned(), s(pk_value)),
                (keys::SK.to_owned(), s(sk)),
            ])
        });
        let page = self
            .client(region)
            .query()
            .table_name(self.table(region, table))
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk_value))
            .expression_attribute_values(":prefix", s(sk_prefix))
            .limit(limit as i32)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        let next = (page.last_evaluated_key.as_ref())
            .and_then(|k| get_s(k, keys::SK))
            .map(str::to_owned);
        Ok((page.items.unwrap_or_default(), next))
    }

    /// One page of a project's segments in audience-id key order, with their counters: one
    /// Query, then one consistent read of each segment's shards (at most `limit`).
    pub async fn segments_page(
        &self,
        region: Region,
        project_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Segment>, Option<String>), StoreError> {
        let (items, next) = self
            .query_page(
                region,
                Table::Segments,
                &sk::pk(project_id),
                sk::SEGMENT_PREFIX,
                limit,
                after,
            )
            .await?;
        let segments: Vec<Segment> = (items.iter())
            .filter_map(|item| Some((audience_id_of(item)?, item)))
            .map(|(aud, item)| segment_of(aud, item))
            .collect::<Result<_, _>>()?;
        let ids: Vec<i64> = segments.iter().map(|s| s.audience_id).collect();
        let counts = self.segment_counts(region, project_id, &ids).await?;
        let segments = (segments.into_iter())
            .map(|s| {
                let c = counts.get(&s.audience_id).copied().unwrap_or_default();
                s.with_counts(c)
            })
            .collect();
        Ok((segments, next))
    }

    pub(super) async fn get_item_by_key(
        &self,
        region: Region,
        table: Table,
        key: Item,
    ) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client(region)
            .get_item()
            .table_name(self.table(region, table))
            .set_key(Some(key))
            .send()
            .await?
            .item)
    }

    /// A segment with its counters summed over their shards, as of one point in time.
    pub async fn get_segment(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
    ) -> Result<Option<Segment>, StoreError> {
        self.segment_with_counts(region, project_id, audience_id)
            .await
    }

    /// Current members of a segment, `limit` per page at most, bucket after bucket and in
    /// CleverTap ID order within a bucket (one bucket: CleverTap ID order), from `after`. Buckets
    /// are read [`BUCKETS_AT_ONCE`] at a time, at most [`MAX_PAGE_QUERIES`] Queries per page: a
    /// page may hold fewer members (even none) and still have a next one. A member present for
    /// the whole paging is listed exactly once: a profile's bucket never changes.
    pub async fn segment_members(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        limit: usize,
        after: Option<&BucketPosition>,
    ) -> Result<MemberList, StoreError> {
        let (rows, next) = self
            .walk_rows(region, project_id, layout, limit, after, RowFilter::Members)
            .await?;
        let members = rows
            .iter()
            .filter_map(|i| {
                Some(Member {
                    clevertap_id: get_s(i, keys::SK)?.to_owned(),
                    identity: get_s(i, "identity").map(str::to_owned),
                })
            })
            .collect();
        Ok(MemberList { members, next })
    }

    /// Up to `limit` of a segment's rows that `filter` keeps, bucket after bucket from `after`,
    /// and the cursor of what follows (`None`: nothing).
    async fn walk_rows(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        limit: usize,
        after: Option<&BucketPosition>,
        filter: RowFilter,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let mut rows: Vec<Item> = Vec::new();
        let mut at = after.cloned().unwrap_or_default();
        let mut queries = 0;
        // One bucket at a time while buckets fill the page (a big segment: one Query a page),
        // twice as many each round that empties all it read (a small one: few rounds).
        let mut fan = 1;
        'rounds: while at.bucket < layout.buckets
            && rows.len() < limit
            && queries < MAX_PAGE_QUERIES
        {
            let wanted = (limit - rows.len()) as i32;
            let round_fan = fan.min(MAX_PAGE_QUERIES - queries);
            fan = (fan * 2).min(BUCKETS_AT_ONCE);
            let round = query_buckets(&at, layout.buckets, round_fan, |pos| {
                let start = pos
                    .after
                    .as_deref()
                    .map(|ct| membership_key(project_id, layout, ct));
                self.rows_where(
                    region, project_id, layout, pos.bucket, start, wanted, filter,
                )
                .send()
            })
            .await?;
            queries += round.len();
            for (pos, page) in round {
                let page_rows = page.items.unwrap_or_default();
                let room = limit - rows.len();
                if page_rows.len() > room {
                    rows.extend(page_rows.into_iter().take(room));
                    let last = rows
                        .last()
                        .and_then(|i| get_s(i, keys::SK))
                        .unwrap_or_default();
                    at = pos.within(last);
                    break 'rounds;
                }
                rows.extend(page_rows);
                match page
                    .last_evaluated_key
                    .as_ref()
                    .and_then(|k| get_s(k, keys::SK))
                {
                    // The rest of this bucket is unread: the next round starts there, alone.
                    Some(ct) => {
                        at = pos.within(ct);
                        fan = 1;
                        continue 'rounds;
                    }
                    None => at = pos.next_bucket(),
                }
                if rows.len() == limit {
                    break 'rounds;
                }
            }
        }
        let next = (at.bucket < layout.buckets).then(|| at.encode());
        Ok((rows, next))
    }

    /// A profile's events, newest first.
    pub async fn profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<EventPage, StoreError> {
        let pk_value = ek::pk(project_id, clevertap_id);
        let start = after.map(|sk_value| {
            Item::from([
                (keys::PK.to_owned(), s(pk_value.clone())),
                (keys::SK.to_owned(), s(sk_value)),
            ])
        });
        let page = self
            .client(region)
            .query()
            .table_name(self.table(region, Table::Events))
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk_value.clone()))
            .scan_index_forward(false)
            .set_exclusive_start_key(start)
            .limit(limit as i32)
            .send()
            .await?;
        let events = page.items().iter().map(event_of).collect();
        let next = page
            .last_evaluated_key
            .and_then(|k| k.get(keys::SK).and_then(|v| v.as_s().ok()).cloned());
        Ok(EventPage { events, next })
    }

    /// Find People: CleverTap IDs with a Partner Sync event for a segment (optionally of one
    /// action), each once, bucket after bucket and in CleverTap ID order within a bucket, from
    /// `after`; buckets are read as [`Store::segment_members`] reads them, so a page may hold
    /// fewer, even none, and still have a next one.
    ///
    /// A bucketed segment answers from its rows' history (`memberships::SyncHistory`); a one-bucket
    /// segment (created before buckets) from the `by_segment` index of its events.
    pub async fn find_people(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        action: Option<SyncAction>,
        limit: usize,
        after: Option<&BucketPosition>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        if layout.buckets > 1 {
            let (rows, next) = self
                .walk_rows(
                    region,
                    project_id,
                    layout,
                    limit,
                    after,
                    RowFilter::Raised(action),
                )
                .await?;
            let found = rows
                .iter()
                .filter_map(|i| get_s(i, keys::SK).map(str::to_owned))
                .collect();
            return Ok((found, next));
        }
        let action = action.map(SyncAction::as_str);
        let mut found: Vec<String> = Vec::new();
        let mut at = after.cloned().unwrap_or_default();
        let mut queries = 0;
        'rounds: while at.bucket < layout.buckets
            && found.len() < limit
            && queries < MAX_PAGE_QUERIES
        {
            let round = query_buckets(&at, layout.buckets, MAX_PAGE_QUERIES - queries, |pos| {
                self.people_query(region, project_id, layout, pos, action)
                    .send()
            })
            .await?;
            queries += round.len();
            for (pos, page) in round {
                let mut full = false;
                for item in page.items.unwrap_or_default() {
                    // The CleverTap ID from its attribute: ids and message ids may contain '#'.
                    let Some(ct) = get_s(&item, ek::CLEVERTAP_ID) else {
                        continue;
                    };
                    if found.last().map(String::as_str) != Some(ct) {
                        if found.len() == limit {
                            full = true;
                            break;
                        }
                        found.push(ct.to_owned());
                    }
                }
                let last_key = page
                    .last_evaluated_key
                    .as_ref()
                    .and_then(|k| get_s(k, ek::PROFILE_KEY));
                // Resume past every key of the last profile listed (so it is never listed
                // twice), else after the last key read.
                let past = |ct: &str| pos.within(&format!("{ct}#~"));
                match (full, last_key, found.last()) {
                    (true, _, last) => {
                        at = past(last.map(String::as_str).unwrap_or_default());
                        break 'rounds;
                    }
                    (false, Some(k), last) => {
                        at = match last {
                            Some(ct) if is_profile_key_of(k, ct) => past(ct),
                            _ => pos.within(k),
                        };
                        continue 'rounds;
                    }
                    (false, None, _) => at = pos.next_bucket(),
                }
                if found.len() == limit {
                    break 'rounds;
                }
            }
        }
        let next = (at.bucket < layout.buckets).then(|| at.encode());
        Ok((found, next))
    }

    /// One Query of Find People: a bucket's `by_segment` entries from a position, 500 rows read.
    fn people_query(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        pos: &BucketPosition,
        action: Option<&str>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let segment_key =
            ek::segment_key(project_id, layout.audience_id, layout.buckets, pos.bucket);
        let mut q = self
            .client(region)
            .query()
            .table_name(self.table(region, Table::Events))
            .index_name(ek::BY_SEGMENT)
            .expression_attribute_names("#seg", ek::SEGMENT_KEY)
            .expression_attribute_values(":seg", s(segment_key))
            .limit(500);
        q = match &pos.after {
            None => q.key_condition_expression("#seg = :seg"),
            Some(from) => q
                .key_condition_expression("#seg = :seg AND #pk > :from")
                .expression_attribute_names("#pk", ek::PROFILE_KEY)
                .expression_attribute_values(":from", s(from.clone())),
        };
        if let Some(a) = action {
            q = q
                .filter_expression("#action = :action")
                .expression_attribute_names("#action", ek::ACTION)
                .expression_attribute_values(":action", s(a));
        }
        q
    }

    /// The CleverTap ID an Identity belongs to.
    pub async fn clevertap_id_of_identity(
        &self,
        region: Region,
        project_id: &str,
        identity: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_item_by_key(region, Table::Profiles, identity_key(project_id, identity))
            .await?
            .and_then(|i| get_s(&i, "clevertap_id").map(str::to_owned)))
    }

    /// One page of the profiles that were given this email or phone (its holders item, read
    /// strongly consistent; former holders included, the caller keeps those holding it now): at
    /// most `limit`, after the profile `after`, in CleverTap ID order; one GetItem.
    pub async fn holders_page(
        &self,
        region: Region,
        project_id: &str,
        kind: crate::domain::records::HeldValue,
        value: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let key = crate::store::rows::profiles::holders_key(project_id, kind, value);
        let mut holders = (self.get_item_by_key(region, Table::Profiles, key).await?)
            .as_ref()
            .map(crate::store::rows::profiles::holders_of)
            .unwrap_or_default();
        holders.sort();
        Ok(page_after(holders, limit, after))
    }

    /// Sync-log rows (inbox chunks) of a project, newest first, below `before` (a time key):
    /// each of the project's index keys is read (one Query each, at once) and the rows merged by
    /// time key, so the order is the same as one key would give. Answers whether more follow.
    pub async fn sync_rows(
        &self,
        region: Region,
        project_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<SyncRow>, bool), StoreError> {
        // Rows spread evenly over the keys: each is asked for a share of the page, with room.
        let per_shard = (limit / ik::RECEIVED_SHARDS as usize + 1) * 2;
        let shards = (0..ik::RECEIVED_SHARDS).map(|shard| {
            let mut q = self
                .client(region)
                .query()
                .table_name(self.table(region, Table::Inbox))
                .index_name(ik::BY_RECEIVED)
                .expression_attribute_names("#shard", ik::RECEIVED_SHARD)
                .expression_attribute_values(":shard", s(ik::received_shard_key(project_id, shard)))
                .scan_index_forward(false)
                .limit(per_shard as i32);
            q = match before {
                Some(b) => q
                    .key_condition_expression("#shard = :shard AND #rk < :before")
                    .expression_attribute_names("#rk", ik::RECEIVED_KEY)
                    .expression_attribute_values(":before", s(b)),
                None => q.key_condition_expression("#shard = :shard"),
            };
            q.send()
        });
        let pages = futures::future::try_join_all(shards).await?;
        // A key with more rows than it gave may hold rows older than its last but newer than
        // other keys' rows: only what is at least as new as every such key's last row is sure to
        // be the newest (never empty: that key's own rows qualify).
        let cut: Option<String> = pages
            .iter()
            .filter(|p| p.last_evaluated_key.is_some())
            .filter_map(|p| p.items().last().and_then(|i| get_s(i, ik::RECEIVED_KEY)))
            .max()
            .map(str::to_owned);
        let mut more = cut.is_some();
        let mut rows: Vec<Item> = pages
            .into_iter()
            .flat_map(|p| p.items.unwrap_or_default())
            .filter(|r| {
                cut.as_deref()
                    .is_none_or(|c| get_s(r, ik::RECEIVED_KEY).is_some_and(|k| k >= c))
            })
            .collect();
        rows.sort_by(|a, b| get_s(b, ik::RECEIVED_KEY).cmp(&get_s(a, ik::RECEIVED_KEY)));
        if rows.len() > limit {
            rows.truncate(limit);
            more = true;
        }
        let rows = rows
            .iter()
            .map(super::rows::inbox::sync_row)
            .collect::<Result<_, _>>()?;
        Ok((rows, more))
    }
}

/// A segment item's audience id, by its key: the item's own attributes may be incomplete.
fn audience_id_of(item: &Item) -> Option<i64> {
    get_s(item, keys::SK)?
        .strip_prefix(sk::SEGMENT_PREFIX)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: SegmentLayout = SegmentLayout {
        audience_id: 7,
        buckets: 1,
    };
    const MANY: SegmentLayout = SegmentLayout {
        audience_id: 7,
        buckets: 64,
    };

    #[test]
    fn cursors_round_trip_and_stay_in_the_segment() {
        let ct = "ct:with:colons#and#hashes";
        let at = BucketPosition {
            bucket: MANY.bucket_of(ct),
            after: Some(ct.into()),
        };
        assert_eq!(
            BucketPosition::parse_members(MANY, &at.encode()),
            Some(at.clone())
        );
        // A CleverTap ID in another bucket than the cursor names is no cursor of ours.
        let forged = format!("{}:{ct}", (at.bucket + 1) % 64);
        assert_eq!(BucketPosition::parse_members(MANY, &forged), None);
        let start = BucketPosition {
            bucket: 9,
            after: None,
        };
        assert_eq!(
            BucketPosition::parse_members(MANY, &start.encode()),
            Some(start)
        );
        // A bucket the segment does not have, or no bucket at all, is not a cursor of it.
        assert_eq!(BucketPosition::parse_members(MANY, "64:x"), None);
        assert_eq!(BucketPosition::parse_members(MANY, "x"), None);
    }

    #[test]
    fn one_bucket_segments_take_the_cursors_given_before_buckets() {
        let legacy = BucketPosition::parse_members(ONE, "__abc").unwrap();
        assert_eq!(legacy.after.as_deref(), Some("__abc"));
        let people = BucketPosition::parse_people(ONE, "__abc").unwrap();
        assert_eq!(
            people.after.as_deref(),
            Some("__abc#~"),
            "past every key of the profile"
        );
        assert_eq!(BucketPosition::parse_members(ONE, ""), None);
    }

    #[test]
    fn profile_keys_are_told_apart_from_ids_that_contain_hashes() {
        assert!(is_profile_key_of("ab#0000000000010#m#1", "ab"));
        assert!(
            !is_profile_key_of("ab#c#0000000000010#m", "ab"),
            "the profile ab#c"
        );
        assert!(is_profile_key_of("ab#c#0000000000010#m", "ab#c"));
        assert!(!is_profile_key_of("ab", "ab"));
    }
}

/// The ids after `after` (sorted `ids`), at most `limit`, and the last one's id when more follow.
fn page_after(
    ids: Vec<String>,
    limit: usize,
    after: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let rest: Vec<String> = (ids.into_iter())
        .filter(|id| after.is_none_or(|a| id.as_str() > a))
        .collect();
    let more = rest.len() > limit;
    let page: Vec<String> = rest.into_iter().take(limit).collect();
    let next = more.then(|| page.last().cloned()).flatten();
    (page, next)
}

#[cfg(test)]
mod page_tests {
    use super::page_after;

    #[test]
    fn pages_follow_each_other_and_the_last_has_no_next() {
        let ids: Vec<String> = ["a", "b", "c", "d", "e"].map(str::to_owned).into();
        let (first, next) = page_after(ids.clone(), 2, None);
        assert_eq!(
            (first, next.as_deref()),
            (vec!["a".into(), "b".into()], Some("b"))
        );
        let (second, next) = page_after(ids.clone(), 2, Some("b"));
        assert_eq!(
            (second, next.as_deref()),
            (vec!["c".into(), "d".into()], Some("d"))
        );
        let (last, next) = page_after(ids, 2, Some("d"));
        assert_eq!((last, next), (vec!["e".to_owned()], None));
    }
}
