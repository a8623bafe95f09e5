//! The read API (`GET /v1/...`, docs/contract.md §3): what the import did, per project.
//!
//! Authenticated like CleverTap's own API with `X-CleverTap-Account-Id` and
//! `X-CleverTap-Passcode`, checked against the project's hashed passcodes. Every read starts
//! from a key that carries the authenticated project id, so no route reaches another project.

pub mod console;
pub mod edge;
pub mod preview;

use crate::domain::records::HeldValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use serde_json::{Value, json};
use tracing::warn;

use crate::domain::auth;
use crate::domain::calendar::month_of;
use crate::domain::protocol::now_ms;
use crate::domain::records::{
    EventValue, InboxStatus, Profile, ProfileEvent, PropertyValue, Segment, SegmentHistory, SyncRow,
};
use crate::domain::region::Region;
use crate::domain::segment_state::SyncAction;
use crate::domain::views::{
    DayView, ErasuresView, EventView, EventsView, ImportView, MemberView, MembersView, PeopleView,
    ProfileView, ProfilesView, SegmentRef, SegmentView, SegmentsView, SyncView, SyncsView,
    UsageView,
};
use crate::ports::profiles::Profiles as _;
use crate::ports::projects::ProjectCache;
use crate::stages::http::{HttpReply, storage_failure};
use crate::stages::metrics::Metrics;
use crate::stages::query::preview::preview_input;
use crate::store::reads::BucketPosition;
use crate::store::segment_item::{SEGMENT_TYPE, SegmentKey, SegmentLayout};
use crate::store::{Store, StoreError};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// Segments a page: each costs one consistent read of its 16 counter shards.
pub const MAX_SEGMENTS_PAGE: usize = 100;
/// Profiles a page of an email or phone lookup: each costs a Query of its events.
pub const MAX_PROFILES_PAGE: usize = 100;
/// Profiles whose event keys a profile view reads at once.
const PROFILE_READS_AT_ONCE: usize = 8;
/// What a segments cursor holds: a segment's sort key.
const SEGMENT_CURSOR: &str = crate::store::keys::segments::SEGMENT_PREFIX;

pub struct QueryApi {
    store: Store,
    projects: ProjectCache<Store>,
    home_region: Region,
    /// Locally one server answers for every region: the `X-CleverTap-Region` header picks one.
    region_header: bool,
    metrics: Metrics,
}

/// A read API request, as the handler sees it.
pub struct ReadRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a HashMap<String, String>,
    /// Header names in lower case.
    pub headers: &'a HashMap<String, String>,
    /// The request body (only `POST /v1/preview` reads it).
    pub body: &'a [u8],
}

pub(crate) fn fail(status: u16, error: impl Into<String>) -> HttpReply {
    HttpReply::new(
        status,
        json!({"status": "fail", "error": error.into()}).to_string(),
    )
}

fn ok(body: impl serde::Serialize) -> HttpReply {
    HttpReply::new(
        200,
        serde_json::to_string(&body).expect("views serialize to JSON"),
    )
}

/// A storage error as the read API answers it: the same mapping as mParticle's endpoint
/// (`http::storage_failure`).
fn unavailable(e: &StoreError) -> HttpReply {
    let (status, message) = storage_failure(e, "answered");
    warn!(error = %e, status, "read API: storage failed the request");
    fail(status, message)
}

/// Cursors are opaque to clients: hex of the position they stand for.
/// Reads of the sync log's index per page (each reads every shard of the index once).
const MAX_SYNC_READS: usize = 8;

fn encode_cursor(position: Option<String>) -> Option<String> {
    position.map(hex::encode)
}

fn decode_cursor(query: &HashMap<String, String>) -> Result<Option<String>, HttpReply> {
    match query.get("cursor").filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => hex::decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| fail(400, "invalid cursor")),
    }
}

fn limit_of(query: &HashMap<String, String>) -> Result<usize, HttpReply> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(fail(
                400,
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            )),
        },
    }
}

/// Archiving segments are shown as archived: their members are on their way out.
fn segment_view(segment: &Segment) -> SegmentView {
    SegmentView {
        partner_segment_id: segment.audience_id,
        segment_id: segment.segment_id.clone(),
        name: segment.name.clone(),
        segment_type: SEGMENT_TYPE.to_owned(),
        status: segment.status.shown().to_owned(),
        member_count: segment.counts.member_count,
        created_ms: segment.created_ms,
        updated_ms: segment.updated_ms,
        added_total: segment.counts.added_total,
        removed_total: segment.counts.removed_total,
        last_sync_ms: segment.counts.last_sync_ms,
        freshness_ms: segment.counts.last_freshness_ms,
        history: None,
        import: None,
    }
}

/// A segment's days with activity, oldest first, each with the members at the day's end:
/// counted back from `member_count` (today's end) by each later day's added − removed − cleared,
/// so the line ends where the count is even for a segment synced before days were tallied.
fn history_view(days: &SegmentHistory, member_count: i64) -> Vec<DayView> {
    let mut members = member_count;
    let mut out: Vec<DayView> = days
        .iter()
        .rev()
        .map(|(day, c)| {
            let at_end = members;
            members -= c.added - c.removed - c.cleared;
            DayView {
                day: day.clone(),
                added: c.added,
                removed: c.removed,
                cleared: c.cleared,
                members: at_end,
            }
        })
        .collect();
    out.reverse();
    out
}

fn property_json(value: &PropertyValue) -> Value {
    match value {
        PropertyValue::Text(s) => Value::from(s.clone()),
        PropertyValue::List(l) => Value::from(l.clone()),
        PropertyValue::Tag => Value::from(true),
    }
}

fn profile_view(profile: &Profile, segments: Vec<SegmentRef>) -> ProfileView {
    ProfileView {
        clevertap_id: profile.clevertap_id.clone(),
        identity: profile.identity.clone(),
        email: profile.email.clone(),
        phone: profile.phone.clone(),
        attributes: profile
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), property_json(v)))
            .collect(),
        segments,
        created_ms: profile.created_ms,
        updated_ms: profile.updated_ms,
    }
}

fn event_view(event: &ProfileEvent) -> EventView {
    let properties = event
        .properties
        .iter()
        .map(|(k, v)| {
            let v = match v {
                EventValue::Text(s) => Value::from(s.clone()),
                EventValue::Number(n) => Value::from(*n),
            };
            (k.clone(), v)
        })
        .collect();
    EventView {
        event: event.name.clone(),
        ts_ms: event.ts_ms,
        properties,
    }
}

/// One request of the sync log from its chunks' rows: the least advanced chunk's status.
fn sync_view(request_id: &str, rows: &[SyncRow]) -> SyncView {
    let mut outcomes: BTreeMap<String, i64> = BTreeMap::new();
    let mut changes: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        for (k, v) in &r.outcomes {
            *outcomes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in r.handed_on.iter().chain(&r.applied) {
            *changes.entry(k.clone()).or_default() += v;
        }
    }
    let status = rows
        .iter()
        .map(|r| r.status)
        .min()
        .unwrap_or(InboxStatus::Materialized);
    // A request split into chunks is complete only when every chunk is stored.
    SyncView {
        request_id: request_id.to_owned(),
        received_ms: rows.first().and_then(|r| r.received_ms),
        status: status.as_str().to_owned(),
        chunks: rows.first().map_or(1, |r| r.chunk_count),
        profiles: rows.iter().map(|r| r.profile_count).sum(),
        outcomes,
        changes,
        failures: rows.iter().filter_map(|r| r.failure.clone()).collect(),
    }
}

impl QueryApi {
    pub fn new(
        store: Store,
        home_region: Region,
        cache_ttl: Duration,
        region_header: bool,
    ) -> Self {
        Self {
            projects: ProjectCache::new(store.clone(), cache_ttl),
            store,
            home_region,
            region_header,
            metrics: Metrics::new(None, "query", home_region),
        }
    }

    /// Emits each request's metrics through `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub async fn handle(&self, req: &ReadRequest<'_>) -> HttpReply {
        // Every route is a GET but the preview, a POST that writes nothing either.
        let is_preview = req.path.trim_end_matches('/') == "/v1/preview";
        match (is_preview, req.method.to_ascii_uppercase().as_str()) {
            (false, "GET") | (true, "POST") => {}
            (false, _) => return fail(405, "only GET is accepted"),
            (true, _) => return fail(405, "only POST is accepted"),
        }
        let ctx = match self.authenticate(req.headers).await {
            Ok(ctx) => ctx,
            Err(reply) => return reply,
        };
        let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
        let not_found = |what: &str| Ok(Err(fail(404, what)));
        match segments.as_slice() {
            ["v1", "segments"] => reply_of(ctx.segments(req.query).await),
            ["v1", "segments", id] => match id.parse::<i64>() {
                Ok(id) => reply_of(ctx.segment(id).await),
                Err(_) => reply_of::<()>(not_found("segment not found")),
            },
            ["v1", "segments", id, "members"] => match id.parse::<i64>() {
                Ok(id) => reply_of(ctx.members(id, req.query).await),
                Err(_) => reply_of::<()>(not_found("segment not found")),
            },
            ["v1", "profiles"] => reply_of(ctx.profiles_by(req.query).await),
            ["v1", "profiles", ct] => reply_of(ctx.profile(&percent_decode(ct)).await),
            ["v1", "profiles", ct, "events"] => {
                reply_of(ctx.events(&percent_decode(ct), req.query).await)
            }
            ["v1", "people"] => reply_of(ctx.people(req.query).await),
            ["v1", "syncs"] => reply_of(ctx.syncs(req.query).await),
            ["v1", "usage"] => reply_of(ctx.usage(req.query).await),
            ["v1", "erasures"] => reply_of(ctx.erasures(req.query).await),
            ["v1", "preview"] => reply_of(ctx.preview(req.body).await),
            _ => reply_of::<()>(not_found("no such route")),
        }
    }

    /// Whether one server answers for every region (locally), so the console asks for one.
    pub(crate) fn serves_every_region(&self) -> bool {
        self.region_header
    }

    /// The project the credentials headers name, if its passcode is right: 401 otherwise.
    pub(crate) async fn authenticate(
        &self,
        headers: &HashMap<String, String>,
    ) -> Result<Ctx<'_>, HttpReply> {
        let region = match (self.region_header, headers.get("x-clevertap-region")) {
            (true, Some(r)) => match Region::parse(r) {
                Some(r) => r,
                None => return Err(fail(400, format!("unknown region {r:?}"))),
            },
            _ => self.home_region,
        };
        let (Some(account), Some(passcode)) = (
            headers.get("x-clevertap-account-id"),
            headers.get("x-clevertap-passcode"),
        ) else {
            return Err(fail(
                401,
                "X-CleverTap-Account-Id and X-CleverTap-Passcode are required",
            ));
        };
        let account = account.trim().to_owned();
        if !auth::valid_project_id(&account) {
            return Err(fail(401, "invalid credentials"));
        }
        let project = match self.projects.get(region, &account).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(fail(401, "invalid credentials")),
            Err(e) => return Err(unavailable(&e)),
        };
        if project.status != auth::ProjectStatus::Active
            || auth::check_passcode(&project, passcode.trim(), now_ms()).is_err()
        {
            return Err(fail(401, "invalid credentials"));
        }
        Ok(Ctx {
            store: &self.store,
            region,
            project: account,
        })
    }
}

/// The HTTP answer of a route's result.
pub(crate) fn reply_of<T: serde::Serialize>(result: Reply<T>) -> HttpReply {
    match result {
        Ok(Ok(view)) => ok(view),
        Ok(Err(refusal)) => refusal,
        Err(e) => unavailable(&e),
    }
}

/// Decodes `%XX` escapes (CleverTap IDs in paths may hold characters that need them).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = hex {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An authenticated read: one project in one region.
pub(crate) struct Ctx<'a> {
    store: &'a Store,
    region: Region,
    project: String,
}

/// What a route answers: its view (`domain::views`), or a refusal (400, 404) as the read API
/// words it.
pub(crate) type Answer<T = Value> = Result<T, HttpReply>;
pub(crate) type Reply<T = Value> = Result<Answer<T>, StoreError>;

macro_rules! try_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return Ok(Err(reply)),
        }
    };
}

impl Ctx<'_> {
    /// `POST /v1/preview`: what importing the body would do (`stages::query::preview`).
    async fn preview(&self, body: &[u8]) -> Reply {
        let (profiles, message_ts, message_id) = match preview_input(body) {
            Ok(input) => input,
            Err(e) => return Ok(Err(fail(400, e.to_string()))),
        };
        let answer = crate::stages::query::preview::preview(
            self.store,
            self.region,
            &self.project,
            &profiles,
            message_ts,
            &message_id,
        )
        .await?;
        Ok(Ok(answer))
    }

    /// A page of segments: one Query and one read of each segment's counter shards, so at most
    /// [`MAX_SEGMENTS_PAGE`] + 1 calls whatever the project's size.
    pub(crate) async fn segments(&self, query: &HashMap<String, String>) -> Reply<SegmentsView> {
        let limit = try_reply!(limit_of(query)).min(MAX_SEGMENTS_PAGE);
        let cursor = try_reply!(decode_cursor(query));
        if cursor
            .as_deref()
            .is_some_and(|c| !c.starts_with(SEGMENT_CURSOR))
        {
            return Ok(Err(fail(400, "invalid cursor")));
        }
        let (segments, next) = self
            .store
            .segments_page(self.region, &self.project, limit, cursor.as_deref())
            .await?;
        Ok(Ok(SegmentsView {
            segments: segments.iter().map(segment_view).collect(),
            next_cursor: encode_cursor(next),
        }))
    }

    pub(crate) async fn segment(&self, id: i64) -> Reply<SegmentView> {
        let found = self
            .store
            .segment_with_history(self.region, &self.project, id)
            .await?;
        let Some((segment, days)) = found else {
            return Ok(Err(fail(404, "segment not found")));
        };
        let now = now_ms();
        let reading = crate::ports::inbox::Inbox::import_progress(
            self.store,
            self.region,
            &self.project,
            id,
            now,
        )
        .await?;
        Ok(Ok(SegmentView {
            history: Some(history_view(&days, segment.counts.member_count)),
            import: crate::domain::progress::import_progress(&reading, now)
                .as_ref()
                .map(ImportView::of),
            ..segment_view(&segment)
        }))
    }

    pub(crate) async fn members(
        &self,
        id: i64,
        query: &HashMap<String, String>,
    ) -> Reply<MembersView> {
        let limit = try_reply!(limit_of(query));
        let cursor = try_reply!(decode_cursor(query));
        let Some(layout) = self.segment_layout(id).await? else {
            return Ok(Err(fail(404, "segment not found")));
        };
        let after = match cursor.as_deref() {
            None => None,
            Some(c) => match BucketPosition::parse_members(layout, c) {
                Some(p) => Some(p),
                None => return Ok(Err(fail(400, "invalid cursor"))),
            },
        };
        let page = self
            .store
            .segment_members(self.region, &self.project, layout, limit, after.as_ref())
            .await?;
        let members = page
            .members
            .into_iter()
            .map(|m| MemberView {
                clevertap_id: m.clevertap_id,
                identity: m.identity,
            })
            .collect();
        Ok(Ok(MembersView {
            members,
            next_cursor: encode_cursor(page.next),
        }))
    }

    /// The layout of one of the project's segments, `None` if there is no such segment.
    async fn segment_layout(&self, audience_id: i64) -> Result<Option<SegmentLayout>, StoreError> {
        self.store
            .segment_layout(&SegmentKey {
                region: self.region,
                project_id: &self.project,
                audience_id,
            })
            .await
    }

    /// Full profile views for these CleverTap IDs, with the segments each is a member of now.
    /// A profile's segments are those its Partner Sync events name (a member row always came
    /// with an Added event), so the calls are one BatchGetItem of profiles, one Query of each
    /// profile's event keys, one BatchGetItem of those segments and one of those rows: they grow
    /// with the profiles asked for, never with the project's segments.
    async fn profile_views(&self, ids: &[String]) -> Result<Vec<ProfileView>, StoreError> {
        use crate::ports::erasures::ErasedRows;
        use crate::ports::memberships::Memberships;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let profiles = self.store.profiles(self.region, &self.project, ids).await?;
        // One Query of event keys per profile, a few at once (a Find People page holds up to
        // 500 profiles).
        let cts: Vec<String> = profiles.iter().map(|p| p.clevertap_id.clone()).collect();
        let (store, region, project) = (self.store, self.region, self.project.clone());
        let per_profile: Vec<Vec<(i64, String)>> = futures::stream::iter(cts)
            .map(|ct| {
                let project = project.clone();
                async move {
                    let segments = store.segments_of_events(region, &project, &ct).await?;
                    Ok::<_, StoreError>(segments.into_iter().map(|aud| (aud, ct.clone())).collect())
                }
            })
            .buffered(PROFILE_READS_AT_ONCE)
            .try_collect()
            .await?;
        let theirs: Vec<(i64, String)> = per_profile.into_iter().flatten().collect();
        let audience_ids: BTreeSet<i64> = theirs.iter().map(|(aud, _)| *aud).collect();
        // Names and layouts only: the counters (16 shard reads a segment) are not needed here.
        let segments = self
            .store
            .segments_by_id(self.region, &self.project, audience_ids)
            .await?;
        let active: Vec<&Segment> = (segments.values()).filter(|s| s.is_active()).collect();
        let pairs: Vec<(SegmentLayout, &str)> = (theirs.iter())
            .filter_map(|(aud, ct)| {
                let s = segments.get(aud).filter(|s| s.is_active())?;
                Some((SegmentLayout::of_segment(s), ct.as_str()))
            })
            .collect();
        let rows = Memberships::pair_states(self.store, self.region, &self.project, &pairs).await?;
        let memberships: HashMap<(i64, String), bool> = (rows.into_iter())
            .map(|(pair, row)| (pair, row.state.member))
            .collect();
        let mut active = active;
        active.sort_by_key(|s| s.audience_id);
        let by_id: HashMap<&str, &Profile> = profiles
            .iter()
            .map(|p| (p.clevertap_id.as_str(), p))
            .collect();
        Ok(ids
            .iter()
            .filter_map(|ct| by_id.get(ct.as_str()))
            .map(|profile| {
                let segs = active
                    .iter()
                    .filter(|s| {
                        memberships
                            .get(&(s.audience_id, profile.clevertap_id.clone()))
                            .copied()
                            .unwrap_or(false)
                    })
                    .map(|s| SegmentRef {
                        partner_segment_id: s.audience_id,
                        name: s.name.clone(),
                    })
                    .collect();
                profile_view(profile, segs)
            })
            .collect())
    }

    pub(crate) async fn profile(&self, ct: &str) -> Reply<ProfileView> {
        let views = self.profile_views(&[ct.to_owned()]).await?;
        Ok(match views.into_iter().next() {
            Some(v) => Ok(v),
            None => Err(fail(404, "profile not found")),
        })
    }

    pub(crate) async fn profiles_by(&self, query: &HashMap<String, String>) -> Reply<ProfilesView> {
        let ids: Vec<String> = if let Some(identity) = query.get("identity") {
            self.store
                .clevertap_id_of_identity(self.region, &self.project, identity.trim())
                .await?
                .into_iter()
                .collect()
        } else if let Some(email) = query.get("email") {
            let Some(email) = crate::domain::identity::normalize_email(email) else {
                return Ok(Ok(ProfilesView::default()));
            };
            return self.profiles_holding(HeldValue::Email, &email, query).await;
        } else if let Some(phone) = query.get("phone") {
            let Some(phone) = crate::domain::identity::normalize_phone(phone) else {
                return Ok(Ok(ProfilesView::default()));
            };
            return self.profiles_holding(HeldValue::Phone, &phone, query).await;
        } else {
            return Ok(Err(fail(
                400,
                "one of identity, email or phone is required",
            )));
        };
        Ok(Ok(ProfilesView {
            profiles: self.profile_views(&ids).await?,
            next_cursor: None,
        }))
    }

    /// A page of the profiles holding an email or phone (a shared one may be held by thousands):
    /// `limit` at most, [`MAX_PROFILES_PAGE`] whatever is asked; a page may hold fewer (former
    /// holders are left out) and still have a next cursor.
    async fn profiles_holding(
        &self,
        kind: HeldValue,
        value: &str,
        query: &HashMap<String, String>,
    ) -> Reply<ProfilesView> {
        let limit = try_reply!(limit_of(query)).min(MAX_PROFILES_PAGE);
        let cursor = try_reply!(decode_cursor(query));
        let (ids, next) = self
            .store
            .holders_page(
                self.region,
                &self.project,
                kind,
                value,
                limit,
                cursor.as_deref(),
            )
            .await?;
        // Holders are every profile that was given the value: keep those holding it now.
        let mut profiles = self.profile_views(&ids).await?;
        profiles.retain(|p| match kind {
            HeldValue::Email => p.email.as_deref() == Some(value),
            HeldValue::Phone => p.phone.as_deref() == Some(value),
        });
        Ok(Ok(ProfilesView {
            profiles,
            next_cursor: encode_cursor(next),
        }))
    }

    pub(crate) async fn events(
        &self,
        ct: &str,
        query: &HashMap<String, String>,
    ) -> Reply<EventsView> {
        let limit = try_reply!(limit_of(query));
        let cursor = try_reply!(decode_cursor(query));
        let page = self
            .store
            .profile_events(self.region, &self.project, ct, limit, cursor.as_deref())
            .await?;
        if page.events.is_empty()
            && cursor.is_none()
            && self.profile_views(&[ct.to_owned()]).await?.is_empty()
        {
            return Ok(Err(fail(404, "profile not found")));
        }
        Ok(Ok(EventsView {
            events: page.events.iter().map(event_view).collect(),
            next_cursor: encode_cursor(page.next),
        }))
    }

    pub(crate) async fn people(&self, query: &HashMap<String, String>) -> Reply<PeopleView> {
        if query.get("event").map(String::as_str) != Some(crate::store::memberships::PARTNER_SYNC) {
            return Ok(Err(fail(400, "event must be \"Partner Sync\"")));
        }
        let Some(segment) = query.get("segment").and_then(|s| s.parse::<i64>().ok()) else {
            return Ok(Err(fail(400, "segment (a Partner Segment ID) is required")));
        };
        let action = match query.get("action").map(String::as_str) {
            None => None,
            Some("Added") => Some(SyncAction::Added),
            Some("Removed") => Some(SyncAction::Removed),
            Some(_) => return Ok(Err(fail(400, "action must be Added or Removed"))),
        };
        let limit = try_reply!(limit_of(query));
        let cursor = try_reply!(decode_cursor(query));
        let Some(layout) = self.segment_layout(segment).await? else {
            return Ok(Err(fail(404, "segment not found")));
        };
        let after = match cursor.as_deref() {
            None => None,
            Some(c) => match BucketPosition::parse_people(layout, c) {
                Some(p) => Some(p),
                None => return Ok(Err(fail(400, "invalid cursor"))),
            },
        };
        let (ids, next) = self
            .store
            .find_people(
                self.region,
                &self.project,
                layout,
                action,
                limit,
                after.as_ref(),
            )
            .await?;
        Ok(Ok(PeopleView {
            profiles: self.profile_views(&ids).await?,
            next_cursor: encode_cursor(next),
        }))
    }

    /// The sync log, `limit` requests a page: rows are read 100 at a time, at most
    /// [`MAX_SYNC_READS`] times a page (a request of many chunks may end a page early; the
    /// cursor goes on from the last row read).
    pub(crate) async fn syncs(&self, query: &HashMap<String, String>) -> Reply<SyncsView> {
        let limit = try_reply!(limit_of(query));
        let mut before = try_reply!(decode_cursor(query));
        // Group chunk rows into requests; a request's chunks are adjacent in time-key order.
        let mut groups: Vec<(String, Vec<SyncRow>)> = Vec::new();
        let mut last_key: Option<String> = None;
        let mut exhausted = false;
        let mut reads = 0;
        while groups.len() <= limit && !exhausted && reads < MAX_SYNC_READS {
            reads += 1;
            let (rows, more) = self
                .store
                .sync_rows(self.region, &self.project, 100, before.as_deref())
                .await?;
            exhausted = !more;
            for row in rows {
                let key = row.position.clone();
                before = Some(key.clone());
                match groups.last_mut() {
                    Some((gid, rows)) if *gid == row.message_id => rows.push(row),
                    _ => {
                        if groups.len() == limit {
                            exhausted = false;
                            break;
                        }
                        groups.push((row.message_id.clone(), vec![row]));
                    }
                }
                last_key = Some(key);
            }
            if groups.len() == limit {
                break;
            }
        }
        let more = (groups.len() == limit || reads == MAX_SYNC_READS) && !exhausted;
        let syncs: Vec<SyncView> = groups
            .iter()
            .map(|(id, rows)| sync_view(id, rows))
            .collect();
        let next = if more { last_key } else { None };
        Ok(Ok(SyncsView {
            syncs,
            next_cursor: encode_cursor(next),
        }))
    }

    /// `/v1/erasures`: a page of the project's erasure audit rows, in request-id order (one
    /// Query).
    pub(crate) async fn erasures(&self, query: &HashMap<String, String>) -> Reply<ErasuresView> {
        let limit = try_reply!(limit_of(query));
        let cursor = try_reply!(decode_cursor(query));
        let (erasures, next) = self
            .store
            .erasure_audits_page(self.region, &self.project, limit, cursor.as_deref())
            .await?;
        Ok(Ok(ErasuresView {
            erasures,
            next_cursor: encode_cursor(next),
        }))
    }

    pub(crate) async fn usage(&self, query: &HashMap<String, String>) -> Reply<UsageView> {
        let month = query
            .get("month")
            .cloned()
            .unwrap_or_else(|| month_of(now_ms()));
        let valid = month.len() == 7
            && month.as_bytes()[4] == b'-'
            && month[..4].parse::<u16>().is_ok()
            && month[5..]
                .parse::<u8>()
                .is_ok_and(|m| (1..=12).contains(&m));
        if !valid {
            return Ok(Err(fail(400, "month must be YYYY-MM")));
        }
        let count = self
            .store
            .usage_events(self.region, &self.project, &month)
            .await?;
        Ok(Ok(UsageView {
            month,
            partner_sync_events: count,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::DayCounts;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let q: HashMap<String, String> = [("cursor".to_owned(), hex::encode("__abc#1"))].into();
        assert_eq!(decode_cursor(&q).unwrap().as_deref(), Some("__abc#1"));
        let bad: HashMap<String, String> = [("cursor".to_owned(), "zz".to_owned())].into();
        assert_eq!(decode_cursor(&bad).unwrap_err().status, 400);
        assert_eq!(encode_cursor(None), None);
    }

    #[test]
    fn limits_are_bounded() {
        let q = |v: &str| HashMap::from([("limit".to_owned(), v.to_owned())]);
        assert_eq!(limit_of(&HashMap::new()).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit_of(&q("10")).unwrap(), 10);
        assert!(limit_of(&q("0")).is_err());
        assert!(limit_of(&q("100000")).is_err());
        assert!(limit_of(&q("x")).is_err());
    }

    #[test]
    fn a_request_shows_its_least_advanced_chunk_and_sums_the_rest() {
        let row = |status, failure: Option<&str>| SyncRow {
            position: "k".into(),
            message_id: "m".into(),
            status,
            failure: failure.map(str::to_owned),
            profile_count: 10,
            chunk_count: 2,
            received_ms: Some(5),
            outcomes: BTreeMap::from([("resolved".to_owned(), 10)]),
            handed_on: BTreeMap::from([("add".to_owned(), 3)]),
            applied: BTreeMap::from([("added".to_owned(), 2)]),
        };
        let done = sync_view(
            "m",
            &[
                row(InboxStatus::Materialized, None),
                row(InboxStatus::Resolved, None),
            ],
        );
        assert_eq!(done.status, "resolved");
        assert_eq!(done.profiles, 20);
        assert_eq!(done.changes["add"], 6);
        assert_eq!(done.changes["added"], 4);
        assert_eq!(done.chunks, 2);
        assert!(done.failures.is_empty());
        let failed = sync_view(
            "m",
            &[
                row(InboxStatus::Materialized, None),
                row(InboxStatus::Failed, Some("why")),
            ],
        );
        assert_eq!(failed.status, "failed");
        assert_eq!(failed.failures, ["why"]);
    }

    #[test]
    fn history_counts_back_from_the_member_count() {
        let day = |added, removed, cleared| DayCounts {
            added,
            removed,
            cleared,
        };
        let days = BTreeMap::from([
            ("2026-11-01".to_owned(), day(3, 0, 0)),
            ("2026-11-02".to_owned(), day(1, 2, 0)),
        ]);
        let h = history_view(&days, 2);
        assert_eq!((h[0].members, h[1].members), (3, 2));
        // Ten members from before days were tallied: the line is lifted, not negative.
        let h = history_view(&days, 12);
        assert_eq!((h[0].members, h[1].members), (13, 12));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("-h%2Fab"), "-h/ab");
        assert_eq!(percent_decode("__abc"), "__abc");
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }
}
