//! Reads for the read API: every one starts from a key that carries the project id.

use std::collections::HashMap;

use super::memberships::membership_key;
use super::profiles::{identity_key, profile_key};
use super::{Item, Store, StoreError, get_n, get_s, s};
use crate::keys::{self, events as ek, inbox as ik, profiles as pk, segments as sk};
use crate::region::Region;
use crate::tables::Table;

/// One page of items and where the next page starts (`None`: this was the last page).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

impl Store {
    /// Every segment of a project (there are tens, not millions), oldest id first, with its
    /// counters summed over their shards.
    pub async fn list_segments(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = self
            .query_partition(
                region,
                Table::Segments,
                &sk::pk(project_id),
                Some(sk::SEGMENT_PREFIX),
            )
            .await?;
        let ids: Vec<i64> = out
            .iter()
            .filter_map(|i| get_n(i, "partner_segment_id"))
            .collect();
        let counts = self.segment_counts(region, project_id, &ids).await?;
        for item in &mut out {
            if let Some(aud) = get_n(item, "partner_segment_id") {
                counts
                    .get(&aud)
                    .copied()
                    .unwrap_or_default()
                    .merge_into(item);
            }
        }
        Ok(out)
    }

    /// The audience ids of every segment of a project (no counters read).
    pub async fn segment_ids(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .query_partition(
                region,
                Table::Segments,
                &sk::pk(project_id),
                Some(sk::SEGMENT_PREFIX),
            )
            .await?
            .iter()
            .filter_map(|s| get_n(s, "partner_segment_id"))
            .collect())
    }

    /// Every item of one partition (`pk`), those whose `sk` begins with `sk_prefix` if given,
    /// page after page.
    pub async fn query_partition(
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

    pub async fn get_item_by_key(
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
    ) -> Result<Option<Item>, StoreError> {
        self.segment_with_counts(region, project_id, audience_id)
            .await
    }

    /// Current members of a segment, in CleverTap ID order, `limit` per page.
    pub async fn segment_members(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page, StoreError> {
        let mut items = Vec::new();
        let mut start = after.map(|ct| membership_key(project_id, audience_id, ct));
        loop {
            let page = self
                .member_rows(region, project_id, audience_id, start, limit as i32)
                .send()
                .await?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if items.len() >= limit || start.is_none() {
                break;
            }
        }
        let had_more = items.len() > limit || start.is_some();
        items.truncate(limit);
        let next = if had_more {
            items
                .last()
                .and_then(|i| get_s(i, keys::SK))
                .map(str::to_owned)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// A profile's events, newest first.
    pub async fn profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page, StoreError> {
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
        let items = page.items.unwrap_or_default();
        let next = page
            .last_evaluated_key
            .and_then(|k| k.get(keys::SK).and_then(|v| v.as_s().ok()).cloned());
        Ok(Page { items, next })
    }

    /// Find People: CleverTap IDs with a Partner Sync event for a segment (optionally of one
    /// action), each once, in CleverTap ID order.
    pub async fn find_people(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        action: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let mut found: Vec<String> = Vec::new();
        // Past every key of the cursor's profile: '~' sorts after the digits that follow '#'.
        let mut from = after.map(|ct| format!("{ct}#~")).unwrap_or_default();
        let mut more = true;
        while found.len() < limit && more {
            let mut q = self
                .client(region)
                .query()
                .table_name(self.table(region, Table::Events))
                .index_name(ek::BY_SEGMENT)
                .expression_attribute_names("#seg", ek::SEGMENT_KEY)
                .expression_attribute_values(":seg", s(ek::segment_key(project_id, audience_id)))
                .limit(500);
            q = if from.is_empty() {
                q.key_condition_expression("#seg = :seg")
            } else {
                q.key_condition_expression("#seg = :seg AND #pk > :from")
                    .expression_attribute_names("#pk", ek::PROFILE_KEY)
                    .expression_attribute_values(":from", s(from.clone()))
            };
            if let Some(a) = action {
                q = q
                    .filter_expression("#action = :action")
                    .expression_attribute_names("#action", ek::ACTION)
                    .expression_attribute_values(":action", s(a));
            }
            let page = q.send().await?;
            more = page.last_evaluated_key.is_some();
            let last_key = page
                .last_evaluated_key
                .as_ref()
                .and_then(|k| k.get(ek::PROFILE_KEY))
                .and_then(|v| v.as_s().ok())
                .cloned();
            for item in page.items.unwrap_or_default() {
                // The CleverTap ID from its attribute: ids and message ids may contain '#'.
                let Some(ct) = get_s(&item, ek::CLEVERTAP_ID).map(str::to_owned) else {
                    continue;
                };
                if found.last() != Some(&ct) {
                    if found.len() == limit {
                        return Ok((found.clone(), found.last().cloned()));
                    }
                    found.push(ct);
                }
            }
            match last_key {
                Some(k) => from = k,
                None => more = false,
            }
        }
        let next = (found.len() == limit && more)
            .then(|| found.last().cloned())
            .flatten();
        Ok((found, next))
    }

    /// Profiles by CleverTap ID, in bulk.
    pub async fn get_profiles(
        &self,
        region: Region,
        project_id: &str,
        clevertap_ids: &[String],
    ) -> Result<Vec<Item>, StoreError> {
        let keys = clevertap_ids
            .iter()
            .map(|ct| profile_key(project_id, ct))
            .collect();
        self.batch_get(region, Table::Profiles, keys).await
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

    /// CleverTap IDs of the profiles with this email (`by_email`) or phone (`by_phone`).
    pub async fn clevertap_ids_by(
        &self,
        region: Region,
        project_id: &str,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let (index, attr, value) = match (email, phone) {
            (Some(e), _) => (pk::BY_EMAIL, pk::EMAIL_KEY, pk::email_key(project_id, e)),
            (None, Some(p)) => (pk::BY_PHONE, pk::PHONE_KEY, pk::phone_key(project_id, p)),
            (None, None) => return Ok(Vec::new()),
        };
        let prefix = pk::profile_pk(project_id, "");
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client(region)
                .query()
                .table_name(self.table(region, Table::Profiles))
                .index_name(index)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", attr)
                .expression_attribute_values(":v", s(value.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await?;
            out.extend(page.items.unwrap_or_default().iter().filter_map(|i| {
                get_s(i, keys::PK)
                    .and_then(|p| p.strip_prefix(&prefix))
                    .map(str::to_owned)
            }));
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Membership rows of these profiles in these segments, in bulk: (audience id, CleverTap ID) → member.
    pub async fn memberships_of(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
        clevertap_ids: &[String],
    ) -> Result<HashMap<(i64, String), bool>, StoreError> {
        let keys: Vec<Item> = audience_ids
            .iter()
            .flat_map(|a| {
                clevertap_ids
                    .iter()
                    .map(move |ct| membership_key(project_id, *a, ct))
            })
            .collect();
        let mut out = HashMap::new();
        for item in self.batch_get(region, Table::Memberships, keys).await? {
            let aud = get_s(&item, keys::PK)
                .and_then(|p| p.rsplit('#').next())
                .and_then(|a| a.parse().ok());
            if let (Some(aud), Some(ct)) = (aud, get_s(&item, keys::SK)) {
                let member = item
                    .get("member")
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false);
                out.insert((aud, ct.to_owned()), member);
            }
        }
        Ok(out)
    }

    /// Sync-log rows (inbox chunks) of a project, newest first, below `before` (a time key).
    pub async fn sync_rows(
        &self,
        region: Region,
        project_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let mut q = self
            .client(region)
            .query()
            .table_name(self.table(region, Table::Inbox))
            .index_name(ik::BY_RECEIVED)
            .expression_attribute_names("#project", ik::PROJECT_ID)
            .expression_attribute_values(":pk", s(project_id))
            .scan_index_forward(false)
            .limit(limit as i32);
        q = match before {
            Some(b) => q
                .key_condition_expression("#project = :pk AND #rk < :before")
                .expression_attribute_names("#rk", ik::RECEIVED_KEY)
                .expression_attribute_values(":before", s(b)),
            None => q.key_condition_expression("#project = :pk"),
        };
        let page = q.send().await?;
        Ok((
            page.items.unwrap_or_default(),
            page.last_evaluated_key.is_some(),
        ))
    }
}
