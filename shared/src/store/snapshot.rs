//! Everything one project holds in one region, typed: what tests and the reliability check
//! compare, without naming a key or an attribute. A full Scan of every table: for tests and
//! local tools only, never on a request path.

use std::collections::BTreeMap;

use super::rows::events::event_of;
use super::rows::inbox::{row as inbox_row, sync_row};
use super::rows::profiles::profile_of;
use super::{Item, Store, StoreError, get_n, get_s};
use crate::domain::erasure::ErasureAudit;
use crate::domain::records::{
    IdentityClaim, MembershipRow, PartnerSyncEvent, Profile, Segment, SyncRow,
};
use crate::domain::region::Region;
use crate::ports::inbox::InboxRow;
use crate::store::keys::{self, events as ek, profiles as pk, segments as sk};
use crate::store::tables::Table;

/// What a project holds in one region, each list in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectSnapshot {
    /// By CleverTap ID.
    pub profiles: Vec<Profile>,
    /// By Identity.
    pub claims: Vec<IdentityClaim>,
    /// Tombstones of erased people (salted hashes: only their number says anything).
    pub tombstones: usize,
    /// By audience, then CleverTap ID.
    pub memberships: Vec<MembershipRow>,
    /// By audience id, with their counters.
    pub segments: Vec<Segment>,
    /// By CleverTap ID, then time, audience and change.
    pub events: Vec<PartnerSyncEvent>,
    /// Partner Sync events counted per month (`YYYY-MM`).
    pub usage: BTreeMap<String, i64>,
    /// The inbox's rows, newest first (the sync log's order).
    pub inbox: Vec<SyncRow>,
    /// Erasure audit rows, latest completed first.
    pub erasures: Vec<ErasureAudit>,
}

impl ProjectSnapshot {
    pub fn segment(&self, audience_id: i64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.audience_id == audience_id)
    }

    pub fn profile(&self, clevertap_id: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.clevertap_id == clevertap_id)
    }

    /// The rows of one segment.
    pub fn rows_of(&self, audience_id: i64) -> impl Iterator<Item = &MembershipRow> {
        self.memberships
            .iter()
            .filter(move |m| m.audience_id == audience_id)
    }

    /// The Partner Sync events of one segment.
    pub fn events_of(&self, audience_id: i64) -> impl Iterator<Item = &PartnerSyncEvent> {
        self.events
            .iter()
            .filter(move |e| e.audience_id == audience_id)
    }
}

fn membership_row_of(item: &Item) -> Option<MembershipRow> {
    use super::rows::memberships as row;
    let history = row::history(Some(item));
    Some(MembershipRow {
        audience_id: get_n(item, row::AUDIENCE_ID)?,
        clevertap_id: get_s(item, keys::SK)?.to_owned(),
        member: row::is_member(item),
        version: row::version(item).unwrap_or_default().to_owned(),
        identity: get_s(item, row::IDENTITY).map(str::to_owned),
        ever_added: history.added,
        ever_removed: history.removed,
        cleared: item.contains_key(row::CLEARED_MS),
        erased: item.contains_key(row::ERASED_MS),
    })
}

fn partner_sync_event_of(item: &Item) -> Option<PartnerSyncEvent> {
    let event = event_of(item);
    let audience_id = match event.properties.get("Partner Segment ID") {
        Some(crate::domain::records::EventValue::Number(n)) => *n,
        _ => return None,
    };
    Some(PartnerSyncEvent {
        clevertap_id: get_s(item, ek::CLEVERTAP_ID)?.to_owned(),
        audience_id,
        action: get_s(item, ek::ACTION).unwrap_or_default().to_owned(),
        change_id: get_s(item, "change_id").unwrap_or_default().to_owned(),
        event,
    })
}

impl Store {
    /// Every item of one table of a region (a full Scan, page after page).
    async fn scan_table(&self, region: Region, table: Table) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client(region)
                .scan()
                .table_name(self.table(region, table))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// How many items one table of a region holds (tests and local tools: a full Scan).
    pub async fn count_items(&self, region: Region, table: Table) -> Result<usize, StoreError> {
        Ok(self.scan_table(region, table).await?.len())
    }

    /// Every stored chunk of a project, as the pipeline's stages read them (a full Scan).
    pub async fn stored_chunks(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let own = format!("{project_id}#");
        self.scan_table(region, Table::Inbox)
            .await?
            .into_iter()
            .filter(|item| get_s(item, keys::PK).is_some_and(|pk| pk.starts_with(&own)))
            .map(inbox_row)
            .collect()
    }

    /// Everything `project_id` holds in `region` (tests and local tools: full Scans).
    pub async fn project_snapshot(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<ProjectSnapshot, StoreError> {
        let pk_of = |item: &Item| get_s(item, keys::PK).unwrap_or_default().to_owned();
        let own = format!("{project_id}#");
        let mut snapshot = ProjectSnapshot::default();

        for item in self.scan_table(region, Table::Profiles).await? {
            let key = pk_of(&item);
            if key.starts_with(&pk::profile_pk(project_id, "")) {
                snapshot.profiles.extend(profile_of(&item));
            } else if let Some(identity) = key.strip_prefix(&pk::identity_pk(project_id, "")) {
                snapshot.claims.push(IdentityClaim {
                    identity: identity.to_owned(),
                    clevertap_id: get_s(&item, "clevertap_id").unwrap_or_default().to_owned(),
                });
            } else if key.starts_with(&pk::tombstone_pk(project_id, "")) {
                snapshot.tombstones += 1;
            }
        }
        snapshot
            .profiles
            .sort_by(|a, b| a.clevertap_id.cmp(&b.clevertap_id));
        snapshot.claims.sort();

        for item in self.scan_table(region, Table::Memberships).await? {
            if pk_of(&item).starts_with(&own) {
                snapshot.memberships.extend(membership_row_of(&item));
            }
        }
        snapshot.memberships.sort();

        let mut events: Vec<(String, PartnerSyncEvent)> = Vec::new();
        for item in self.scan_table(region, Table::Events).await? {
            if pk_of(&item).starts_with(&own) {
                let sort = get_s(&item, keys::SK).unwrap_or_default().to_owned();
                events.extend(partner_sync_event_of(&item).map(|e| (sort, e)));
            }
        }
        events
            .sort_by(|(a_sk, a), (b_sk, b)| (&a.clevertap_id, a_sk).cmp(&(&b.clevertap_id, b_sk)));
        snapshot.events = events.into_iter().map(|(_, e)| e).collect();

        let mut segments = self.list_segments(region, project_id).await?;
        segments.sort_by_key(|s| s.audience_id);
        snapshot.segments = segments;
        let usage_prefix = sk::usage_pk_prefix(project_id);
        for item in self.scan_table(region, Table::Segments).await? {
            let key = pk_of(&item);
            if let Some(rest) = key.strip_prefix(&usage_prefix) {
                let month = rest.split('#').next().unwrap_or_default().to_owned();
                *snapshot.usage.entry(month).or_default() +=
                    get_n(&item, "partner_sync_events").unwrap_or(0);
            }
        }
        snapshot.erasures = self.erasure_audits(region, project_id).await?;

        let mut inbox = Vec::new();
        for item in self.scan_table(region, Table::Inbox).await? {
            if pk_of(&item).starts_with(&own) {
                inbox.push(sync_row(&item)?);
            }
        }
        inbox.sort_by(|a, b| b.position.cmp(&a.position));
        snapshot.inbox = inbox;
        Ok(snapshot)
    }
}
