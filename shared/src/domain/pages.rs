//! The console's pages, rendered from the read API's views (`views`, docs/contract.md §3.3),
//! the same types the API serializes, so a page shows exactly what the API answers. Pure: views
//! in, HTML out.
//!
//! The server answers a browser's navigation with the [`shell`] (sign-in form, navigation,
//! script); the script then asks for the page itself with the credentials as headers and puts
//! the [`Page`] it gets into `<main>`.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::domain::calendar::{day_of, days_ending, minute_of};
use crate::domain::chart::{Series, bar_chart, line_chart};
use crate::domain::region::Region;
use crate::domain::views::{
    DayView, EventView, EventsView, ImportView, MembersView, PeopleView, ProfileView, ProfilesView,
    SegmentView, SegmentsView, SyncView, SyncsView,
};

/// Where the console lives, under the API's base URL.
pub const BASE: &str = "/console";
/// Days the segment and sync charts show, ending today.
pub const CHART_DAYS: u32 = 30;

const ADDED: &str = "#1a7f37";
const REMOVED: &str = "#cf222e";
const NEUTRAL: &str = "#57606a";
const BLUE: &str = "#0969da";
const PURPLE: &str = "#8250df";
const AMBER: &str = "#9a6700";

/// One page: its title (the `<h1>` and the tab's title) and its content.
pub struct Page {
    pub title: String,
    pub body: Markup,
}

impl Page {
    /// What `<main>` holds.
    pub fn into_html(self) -> String {
        html! {
            h1 tabindex="-1" { (self.title) }
            (self.body)
        }
        .into_string()
    }
}

/// The document every console URL answers a browser with: nothing of the project in it.
pub fn shell(regions: Option<&[Region]>) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Audience Import console" }
                link rel="stylesheet" href={ (BASE) "/assets/console.css" };
                script src={ (BASE) "/assets/console.js" } defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "Audience Import" }
                    nav #nav aria-label="Console" hidden {
                        a href={ (BASE) "/segments" } { "Segments" }
                        a href={ (BASE) "/profiles" } { "Profiles" }
                        a href={ (BASE) "/syncs" } { "Syncs" }
                        button #sign-out type="button" { "Sign out" }
                    }
                }
                section #login hidden aria-labelledby="login-title" {
                    h1 #login-title tabindex="-1" { "Sign in" }
                    p #login-error role="alert" {}
                    form #login-form {
                        label for="account" { "Account ID" }
                        input #account name="account" autocomplete="username" required;
                        label for="passcode" { "Passcode" }
                        input #passcode name="passcode" type="password" autocomplete="current-password" required;
                        @if let Some(regions) = regions {
                            label for="region" { "Region" }
                            select #region name="region" {
                                @for r in regions { option value=(r.as_str()) { (r.as_str()) } }
                            }
                        }
                        button type="submit" { "Sign in" }
                    }
                    p.hint {
                        "The Account ID and Passcode of your project, as for the read API. They are kept "
                        "in this tab until you sign out or close it, and sent only as request headers."
                    }
                }
                main #main tabindex="-1" {}
                noscript {
                    p { "The console sends your Account ID and Passcode as request headers, which needs JavaScript." }
                }
            }
        }
    }
    .into_string()
}

/// A path segment or query value with everything but unreserved characters percent-encoded.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn profile_href(clevertap_id: &str) -> String {
    format!("{BASE}/profiles/{}", percent_encode(clevertap_id))
}

fn segment_href(id: i64) -> String {
    format!("{BASE}/segments/{id}")
}

fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// A time, or a dash for never.
fn when(v: Option<i64>) -> String {
    v.map(minute_of).unwrap_or_else(|| "—".to_owned())
}

/// "Next page" when the view has a cursor; `href` is the page's URL with its other parameters.
fn next_page(next_cursor: Option<&str>, href: &str) -> Markup {
    let separator = if href.contains('?') { '&' } else { '?' };
    html! {
        @if let Some(cursor) = next_cursor {
            p.paging { a rel="next" href={ (href) (separator) "cursor=" (cursor) } { "Next page" } }
        }
    }
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

/// `GET /console/segments?q=`: a page of segments, filtered by name.
pub fn segments_page(view: &SegmentsView, query: Option<&str>) -> Page {
    let query = query.map(str::trim).filter(|q| !q.is_empty());
    let needle = query.map(str::to_lowercase);
    let all = &view.segments;
    let shown: Vec<&SegmentView> = all
        .iter()
        .filter(|s| {
            needle
                .as_ref()
                .is_none_or(|n| s.name.to_lowercase().contains(n))
        })
        .collect();
    let body = html! {
        form.search role="search" action={ (BASE) "/segments" } method="get" {
            label for="q" { "Search segments by name" }
            input #q type="search" name="q" value=(query.unwrap_or(""));
            button type="submit" { "Search" }
        }
        @if all.is_empty() {
            p.empty { "No segments yet. An audience appears here once mParticle connects it to this project." }
        } @else if shown.is_empty() {
            p.empty { "No segment name contains “" (query.unwrap_or("")) "”." }
        } @else {
            div.scroll {
                table #segments {
                    caption { (shown.len()) " of " (all.len()) " segments on this page" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Members" }
                        th scope="col" { "Status" } th scope="col" { "Last sync" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for s in &shown {
                            tr {
                                th scope="row" { a href=(segment_href(s.partner_segment_id)) { (s.name) } }
                                td { (s.segment_type) }
                                td.num { (s.member_count) }
                                td { (status_badge(&s.status)) }
                                td { (when(s.last_sync_ms)) }
                                td { (when(s.created_ms)) }
                            }
                        }
                    }
                }
            }
        }
    };
    let href = match query {
        Some(q) => format!("{BASE}/segments?q={}", percent_encode(q)),
        None => format!("{BASE}/segments"),
    };
    let body = html! { (body) (next_page(view.next_cursor.as_deref(), &href)) };
    Page {
        title: "Segments".to_owned(),
        body,
    }
}

/// Per day of the window: added, removed, cleared, and the members at each day's end.
struct Window {
    days: Vec<String>,
    added: Vec<i64>,
    removed: Vec<i64>,
    cleared: Vec<i64>,
    members: Vec<i64>,
}

/// The segment's history (days with activity, oldest first) over the `CHART_DAYS` ending today.
fn window(history: &[DayView], now_ms: i64) -> Window {
    let days = days_ending(now_ms, CHART_DAYS);
    let first = days.first().cloned().unwrap_or_default();
    let mut members = history
        .iter()
        .take_while(|h| h.day < first)
        .last()
        .map(|h| h.members)
        .unwrap_or(0);
    let mut w = Window {
        days: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        cleared: Vec::new(),
        members: Vec::new(),
    };
    for day in days {
        let h = history.iter().find(|h| h.day == day);
        if let Some(h) = h {
            members = h.members;
        }
        w.added.push(h.map_or(0, |h| h.added));
        w.removed.push(h.map_or(0, |h| h.removed));
        w.cleared.push(h.map_or(0, |h| h.cleared));
        w.members.push(members);
        w.days.push(day);
    }
    w
}

/// A freshness in milliseconds as people read it: `0.42 s`, `1 min 5 s`; `–` without one.
fn freshness(ms: Option<i64>) -> String {
    match ms {
        None => "–".to_owned(),
        Some(ms) if ms < 60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn stat(id: &str, label: &str, value: impl maud::Render) -> Markup {
    html! { div.stat { dt { (label) } dd data-stat=(id) { (value) } } }
}

/// Seconds as "about 2 min 10 s".
fn duration_s(s: u64) -> String {
    match s {
        0..60 => format!("about {s} s"),
        60..3600 => format!("about {} min {} s", s / 60, s % 60),
        _ => format!("about {} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A segment's import (what came the bulk way): a progress bar of done over received, its
/// counts, the rate of the last minute and the time left at that rate.
fn import_section(i: &ImportView) -> Markup {
    let done = i.applied + i.skipped + i.failed;
    let left = match (i.running, i.estimate_s) {
        (false, _) => "none (complete)".to_owned(),
        (true, Some(s)) => duration_s(s),
        (true, None) => "waiting for a worker".to_owned(),
    };
    html! {
        // `data-running`: the console refreshes this section while the import runs.
        section #import aria-labelledby="import-title" data-running[i.running] {
            h2 #import-title { "Import" }
            p.import-summary data-import="summary" aria-live="polite" {
                @if i.running {
                    (i.percent) " % · " (done) " of " (i.received) " changes done"
                } @else {
                    "Complete · " (done) " of " (i.received) " changes done"
                }
            }
            progress #import-progress value=(done) max=(i.received) aria-labelledby="import-title" {
                (i.percent) " %"
            }
            dl.stats {
                (stat("import-received", "Received", i.received))
                (stat("import-resolved", "Resolved", i.resolved))
                (stat("import-applied", "Applied", i.applied))
                (stat("import-skipped", "Skipped (anonymous or erased)", i.skipped))
                (stat("import-failed", "Failed", i.failed))
                (stat("import-rate", "Rate, last minute", format!("{:.1} changes/s", i.rate_per_s)))
                (stat("import-left", "Time left", left))
            }
        }
    }
}

/// `GET /console/segments/{id}`: statistics, charts, a page of members and Find People.
pub fn segment_page(
    segment: &SegmentView,
    members: &MembersView,
    members_href: &str,
    now_ms: i64,
) -> Page {
    let id = segment.partner_segment_id;
    let w = window(segment.history.as_deref().unwrap_or_default(), now_ms);
    let added: i64 = w.added.iter().sum();
    let removed: i64 = w.removed.iter().sum();
    let list = &members.members;
    let people = |action: Option<&str>| {
        let mut href = format!("{BASE}/people?segment={id}");
        if let Some(a) = action {
            href.push_str("&action=");
            href.push_str(a);
        }
        href
    };
    let body = html! {
        p.meta {
            "Partner Segment ID " (id) " · " (segment.segment_type) " · " (status_badge(&segment.status))
            " · created " (when(segment.created_ms))
        }
        dl.stats {
            (stat("members", "Members now", segment.member_count))
            (stat("added", "Added (total)", segment.added_total))
            (stat("removed", "Removed (total)", segment.removed_total))
            (stat("last-sync", "Last sync", when(segment.last_sync_ms)))
            (stat("freshness", "Latest change, receipt to count", freshness(segment.freshness_ms)))
        }
        @if let Some(import) = &segment.import {
            (import_section(import))
        }
        div.charts {
            (line_chart("members-chart", "Members at the end of each day (UTC), last 30 days",
                &format!("{} members on {}", w.members.last().copied().unwrap_or(0), day_of(now_ms)),
                &w.days, Series { name: "Members", colour: BLUE, values: w.members.clone() }))
            (bar_chart("changes-chart", "Partner Sync events per day (UTC), last 30 days",
                &format!("{added} added and {removed} removed in 30 days"),
                &w.days, &[
                    Series { name: "Added", colour: ADDED, values: w.added.clone() },
                    Series { name: "Removed", colour: REMOVED, values: w.removed.clone() },
                    Series { name: "Cleared (disconnect or erasure)", colour: NEUTRAL, values: w.cleared.clone() },
                ]))
        }
        h2 { "Find People" }
        ul.find-people {
            li { a href=(people(Some("Added"))) { "Who did Partner Sync with Action = Added" } }
            li { a href=(people(Some("Removed"))) { "Who did Partner Sync with Action = Removed" } }
            li { a href=(people(None)) { "Who did Partner Sync for this segment" } }
        }
        h2 { "Members" }
        @if list.is_empty() {
            p.empty { "No members." }
        } @else {
            div.scroll {
                table #members {
                    thead { tr { th scope="col" { "CleverTap ID" } th scope="col" { "Identity" } } }
                    tbody {
                        @for m in list {
                            tr {
                                td { a href=(profile_href(&m.clevertap_id)) { (m.clevertap_id) } }
                                td { (text(&m.identity)) }
                            }
                        }
                    }
                }
            }
            (next_page(members.next_cursor.as_deref(), members_href))
        }
    };
    Page {
        title: segment.name.clone(),
        body,
    }
}

fn profiles_table(profiles: &[ProfileView]) -> Markup {
    html! {
        div.scroll {
            table.profiles {
                thead { tr {
                    th scope="col" { "CleverTap ID" } th scope="col" { "Identity" }
                    th scope="col" { "Email" } th scope="col" { "Phone" }
                } }
                tbody {
                    @for p in profiles {
                        tr {
                            td { a href=(profile_href(&p.clevertap_id)) { (p.clevertap_id) } }
                            td { (text(&p.identity)) }
                            td { (text(&p.email)) }
                            td { (text(&p.phone)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/people?segment=&action=`: Find People for a segment's Partner Sync events.
pub fn people_page(
    segment: &SegmentView,
    people: &PeopleView,
    action: Option<&str>,
    href: &str,
) -> Page {
    let profiles = &people.profiles;
    let body = html! {
        p.meta {
            "Profiles who did " strong { "Partner Sync" } " for "
            a href=(segment_href(segment.partner_segment_id)) { (segment.name) }
            @if let Some(a) = action { " with Action = " strong { (a) } }
            "."
        }
        @if profiles.is_empty() {
            p.empty { "Nobody yet." }
        } @else {
            (profiles_table(profiles))
            (next_page(people.next_cursor.as_deref(), href))
        }
    };
    Page {
        title: "Find People".to_owned(),
        body,
    }
}

/// What the profile lookup searched by, as the read API names it.
pub const LOOKUP_KINDS: [(&str, &str); 3] = [
    ("identity", "Identity"),
    ("email", "Email"),
    ("phone", "Phone"),
];

/// `GET /console/profiles?identity=|email=|phone=`: the lookup form and what it found.
pub fn lookup_page(searched: Option<(&str, &str)>, found: Option<&ProfilesView>) -> Page {
    let profiles = found.map(|f| f.profiles.as_slice()).unwrap_or_default();
    let body = html! {
        form.search role="search" action={ (BASE) "/profiles" } method="get" {
            label for="by" { "Find a profile by" }
            select #by name="by" {
                @for (kind, label) in LOOKUP_KINDS {
                    option value=(kind) selected[searched.is_some_and(|(k, _)| k == kind)] { (label) }
                }
            }
            label for="value" { "Value" }
            input #value name="value" required value=(searched.map(|(_, v)| v).unwrap_or(""));
            button type="submit" { "Find" }
        }
        @if let Some((kind, value)) = searched {
            @if profiles.is_empty() {
                p.empty { "No profile has the " (kind) " “" (value) "”." }
            } @else {
                (profiles_table(profiles))
            }
            (next_page(
                found.and_then(|f| f.next_cursor.as_deref()),
                &format!("{BASE}/profiles?by={}&value={}", percent_encode(kind), percent_encode(value)),
            ))
        }
    };
    Page {
        title: "Profiles".to_owned(),
        body,
    }
}

/// The five Partner Sync properties first, in the product's order, then any others.
const EVENT_PROPERTIES: [&str; 5] = [
    "Partner Segment Name",
    "Action",
    "Partner Segment ID",
    "CT Source",
    "Partner Name",
];

fn property_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    }
}

fn event_item(event: &EventView) -> Markup {
    let properties = &event.properties;
    let mut ordered: Vec<(&str, &Value)> = EVENT_PROPERTIES
        .iter()
        .filter_map(|k| properties.get(*k).map(|v| (*k, v)))
        .collect();
    ordered.extend(
        properties
            .iter()
            .filter(|(k, _)| !EVENT_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v)),
    );
    html! {
        li.event {
            p { strong { (event.event) } " · " time { (when(Some(event.ts_ms))) } }
            dl.properties {
                @for (k, v) in ordered { div { dt { (k) } dd { (property_value(v)) } } }
            }
        }
    }
}

/// `GET /console/profiles/{id}`: the profile, its segments and its User activity.
pub fn profile_page(profile: &ProfileView, events: &EventsView, events_href: &str) -> Page {
    let attributes = &profile.attributes;
    let segments = &profile.segments;
    let list = &events.events;
    let body = html! {
        dl.stats {
            (stat("clevertap-id", "CleverTap ID", &profile.clevertap_id))
            (stat("identity", "Identity", text(&profile.identity)))
            (stat("email", "Email", text(&profile.email)))
            (stat("phone", "Phone", text(&profile.phone)))
        }
        h2 { "Properties" }
        @if attributes.is_empty() {
            p.empty { "No properties." }
        } @else {
            dl.properties {
                @for (k, v) in attributes { div { dt { (k) } dd { (property_value(v)) } } }
            }
        }
        h2 { "Segments" }
        @if segments.is_empty() {
            p.empty { "Not in any segment." }
        } @else {
            ul #profile-segments {
                @for s in segments { li { a href=(segment_href(s.partner_segment_id)) { (s.name) } } }
            }
        }
        h2 { "User activity" }
        @if list.is_empty() {
            p.empty { "No events." }
        } @else {
            ol #activity reversed {
                @for e in list { (event_item(e)) }
            }
            (next_page(events.next_cursor.as_deref(), events_href))
        }
    };
    Page {
        title: format!("Profile {}", profile.clevertap_id),
        body,
    }
}

/// The ladder outcomes of the sync log, as columns: key in the view, heading.
const OUTCOMES: [(&str, &str); 10] = [
    ("partner_id", "By partner ID"),
    ("identity", "By identity"),
    ("mpid", "By mpid"),
    ("created", "Created"),
    ("merged", "Merged"),
    ("anonymous", "Anonymous"),
    ("hashed_unusable", "Hashed, unusable"),
    ("invalid_email", "Invalid email"),
    ("invalid_phone", "Invalid phone"),
    ("erased", "Erased"),
];

/// Applied changes, in the order they are listed.
const CHANGES: [&str; 6] = ["added", "removed", "noop", "duplicate", "stale", "archived"];

/// Profiles skipped: every outcome that resolves nobody.
const SKIPS: [&str; 5] = [
    "anonymous",
    "hashed_unusable",
    "no_identity",
    "too_long",
    "erased",
];

/// A count of a view's map (0 when absent).
fn count_of(counts: &std::collections::BTreeMap<String, i64>, key: &str) -> i64 {
    counts.get(key).copied().unwrap_or(0)
}

fn changes_text(changes: &std::collections::BTreeMap<String, i64>) -> String {
    let parts: Vec<String> = CHANGES
        .iter()
        .filter_map(|k| {
            let n = count_of(changes, k);
            (n > 0).then(|| format!("{n} {k}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Ladder outcomes per day of receipt over the syncs listed.
fn outcomes_chart(syncs: &[SyncView], now_ms: i64) -> Markup {
    let days = days_ending(now_ms, CHART_DAYS);
    let per_day = |pick: &dyn Fn(&SyncView) -> i64| -> Vec<i64> {
        days.iter()
            .map(|d| {
                syncs
                    .iter()
                    .filter(|s| s.received_ms.map(day_of).as_deref() == Some(d.as_str()))
                    .map(pick)
                    .sum()
            })
            .collect()
    };
    let rung = |key: &'static str| move |s: &SyncView| count_of(&s.outcomes, key);
    let skipped = |s: &SyncView| SKIPS.iter().map(|k| count_of(&s.outcomes, k)).sum::<i64>();
    let series = [
        Series {
            name: "By partner ID",
            colour: BLUE,
            values: per_day(&rung("partner_id")),
        },
        Series {
            name: "By identity",
            colour: PURPLE,
            values: per_day(&rung("identity")),
        },
        Series {
            name: "By mpid",
            colour: AMBER,
            values: per_day(&rung("mpid")),
        },
        Series {
            name: "Skipped",
            colour: NEUTRAL,
            values: per_day(&skipped),
        },
    ];
    let total: i64 = series.iter().flat_map(|s| &s.values).sum();
    bar_chart(
        "outcomes-chart",
        "Profiles per day (UTC) by ladder outcome, requests on this page, last 30 days",
        &format!("{total} profiles from {} request(s)", syncs.len()),
        &days,
        &series,
    )
}

/// `GET /console/syncs`: the sync log with its ladder outcomes and changes, and usage.
pub fn syncs_page(syncs: &SyncsView, usage: &[(String, i64)], href: &str, now_ms: i64) -> Page {
    let list = &syncs.syncs;
    let body = html! {
        @if list.is_empty() {
            p.empty { "No membership batches yet." }
        } @else {
            (outcomes_chart(list, now_ms))
            div.scroll {
                table #syncs {
                    caption { "One row per mParticle request, newest first" }
                    thead { tr {
                        th scope="col" { "Received" } th scope="col" { "Request" } th scope="col" { "Status" }
                        th scope="col" { "Profiles" }
                        @for (_, heading) in OUTCOMES { th scope="col" { (heading) } }
                        th scope="col" { "Changes" }
                    } }
                    tbody {
                        @for s in list {
                            tr {
                                td { (when(s.received_ms)) }
                                th scope="row" { code { (s.request_id) } }
                                td { (status_badge(&s.status)) }
                                td.num { (s.profiles) }
                                @for (key, _) in OUTCOMES { td.num { (count_of(&s.outcomes, key)) } }
                                td { (changes_text(&s.changes)) }
                            }
                        }
                    }
                }
            }
            (next_page(syncs.next_cursor.as_deref(), href))
        }
        h2 { "Usage" }
        div.scroll {
            table #usage {
                caption { "Partner Sync data points per month (UTC)" }
                thead { tr { th scope="col" { "Month" } th scope="col" { "Partner Sync events" } } }
                tbody {
                    @for (month, n) in usage { tr { th scope="row" { (month) } td.num { (n) } } }
                }
            }
        }
    };
    Page {
        title: "Syncs".to_owned(),
        body,
    }
}

/// A refusal or failure, worded as the read API words it.
pub fn problem_page(status: u16, message: &str) -> Page {
    let title = match status {
        404 => "Not found",
        400 => "Cannot show this",
        401 => "Sign in again",
        _ => "Storage unavailable",
    };
    Page {
        title: title.to_owned(),
        body: html! {
            p.problem data-status=(status) { (message) }
            p { a href={ (BASE) "/segments" } { "Back to the segments" } }
        },
    }
}

/// The script and stylesheet the shell loads.
pub fn asset(name: &str) -> Option<(&'static str, bool)> {
    match name {
        "console.js" => Some((include_str!("../../assets/console.js"), true)),
        "console.css" => Some((include_str!("../../assets/console.css"), false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEC_1: i64 = 1_796_083_200_000;

    /// A view from the JSON the read API answers (the same type, read back).
    fn from<T: serde::de::DeserializeOwned>(json: Value) -> T {
        serde_json::from_value(json).expect("a view")
    }

    #[test]
    fn a_running_import_shows_a_bar_of_done_over_received_its_rate_and_the_time_left() {
        let mut segment: SegmentView = from(json!({"partner_segment_id": 7, "name": "Big",
            "import": {"received": 20000, "resolved": 9000, "applied": 8000, "skipped": 500,
                       "failed": 0, "remaining": 11500, "percent": 42.5, "rate_per_s": 400.0,
                       "estimate_s": 29, "running": true}}));
        let members: MembersView = from(json!({"members": []}));
        let html = segment_page(&segment, &members, "/x", DEC_1)
            .body
            .into_string();
        assert!(
            html.contains(r#"<progress id="import-progress" value="8500" max="20000""#),
            "{html}"
        );
        assert!(
            html.contains("42.5 % · 8500 of 20000 changes done"),
            "{html}"
        );
        assert!(html.contains("400.0 changes/s") && html.contains("about 29 s"));

        segment.import.as_mut().unwrap().estimate_s = None;
        let html = segment_page(&segment, &members, "/x", DEC_1)
            .body
            .into_string();
        assert!(html.contains("waiting for a worker"));

        let import = segment.import.as_mut().unwrap();
        (
            import.applied,
            import.remaining,
            import.running,
            import.percent,
        ) = (19_500, 0, false, 100.0);
        let html = segment_page(&segment, &members, "/x", DEC_1)
            .body
            .into_string();
        assert!(
            html.contains("Complete · 20000 of 20000 changes done"),
            "{html}"
        );

        segment.import = None;
        let html = segment_page(&segment, &members, "/x", DEC_1)
            .body
            .into_string();
        assert!(
            !html.contains("import-progress"),
            "nothing came the bulk way: no import shown"
        );
    }

    #[test]
    fn the_shell_holds_no_data_and_asks_for_a_region_only_locally() {
        let aws = shell(None);
        assert!(aws.starts_with("<!DOCTYPE html>"));
        assert!(aws.contains("id=\"login-form\"") && !aws.contains("id=\"region\""));
        assert!(shell(Some(&Region::ALL)).contains("<option value=\"eu1\">"));
    }

    #[test]
    fn segments_are_listed_and_searched_by_name() {
        let view: SegmentsView = from(json!({"segments": [
            {"partner_segment_id": 1, "name": "Cart Abandoners", "type": "Partner - mParticle",
             "status": "active", "member_count": 2, "last_sync_ms": DEC_1, "created_ms": DEC_1},
            {"partner_segment_id": 2, "name": "<b>VIP</b>", "type": "Partner - mParticle",
             "status": "archived", "member_count": 0, "last_sync_ms": null, "created_ms": DEC_1}]}));
        let all = segments_page(&view, None).into_html();
        assert!(all.contains("href=\"/console/segments/1\"") && all.contains("&lt;b&gt;VIP"));
        assert!(all.contains("2026-12-01 00:00 UTC") && all.contains("—"));
        let found = segments_page(&view, Some(" cart ")).into_html();
        assert!(found.contains("1 of 2 segments") && !found.contains("VIP"));
        let none = segments_page(&view, Some("zzz")).into_html();
        assert!(none.contains("No segment name contains “zzz”"));
        assert!(!all.contains("rel=\"next\""), "one page: no link");
        let paged = SegmentsView {
            next_cursor: Some("5323".into()),
            ..view.clone()
        };
        let first = segments_page(&paged, Some("cart ab")).into_html();
        assert!(
            first.contains("href=\"/console/segments?q=cart%20ab&amp;cursor=5323\""),
            "{first}"
        );
        assert!(
            segments_page(&SegmentsView::default(), None)
                .into_html()
                .contains("No segments yet")
        );
    }

    #[test]
    fn the_window_carries_members_over_days_without_activity() {
        let day = |d: i64| day_of(DEC_1 + d * 86_400_000);
        let history: Vec<DayView> = from(json!([
            {"day": "2020-01-01", "added": 5, "removed": 0, "cleared": 0, "members": 5},
            {"day": day(-2), "added": 2, "removed": 1, "cleared": 0, "members": 6},
            {"day": day(0), "added": 0, "removed": 0, "cleared": 6, "members": 0},
        ]));
        let w = window(&history, DEC_1);
        assert_eq!(w.days.len(), CHART_DAYS as usize);
        assert_eq!(w.days.last().unwrap(), &day(0));
        assert_eq!(w.members[0], 5, "members before the window carry in");
        assert_eq!(&w.members[27..], &[6, 6, 0]);
        assert_eq!(&w.added[27..], &[2, 0, 0]);
        assert_eq!(w.cleared[29], 6);
    }

    #[test]
    fn profile_ids_are_encoded_in_links() {
        assert_eq!(profile_href("-h/a b"), "/console/profiles/-h%2Fa%20b");
    }

    #[test]
    fn activity_lists_the_five_properties_first() {
        let profile: ProfileView = from(
            json!({"clevertap_id": "__x", "identity": "u1", "email": null, "phone": null,
                             "attributes": {}, "segments": []}),
        );
        let events: EventsView = from(
            json!({"events": [{"event": "Partner Sync", "ts_ms": DEC_1, "properties": {
            "Partner Name": "mParticle", "Action": "Added", "CT Source": "mParticle",
            "Partner Segment ID": 7, "Partner Segment Name": "S"}}], "next_cursor": "ab"}),
        );
        let html = profile_page(&profile, &events, "/console/profiles/__x").into_html();
        let order: Vec<usize> = EVENT_PROPERTIES
            .iter()
            .map(|p| html.find(p).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(html.contains("href=\"/console/profiles/__x?cursor=ab\""));
        assert!(html.contains("Not in any segment."));
    }

    #[test]
    fn the_sync_log_shows_outcomes_and_changes() {
        let syncs: SyncsView = from(
            json!({"syncs": [{"request_id": "m1", "received_ms": DEC_1, "status": "materialized",
            "profiles": 3, "outcomes": {"partner_id": 1, "identity": 1, "anonymous": 1},
            "changes": {"added": 2, "stale": 1}}], "next_cursor": null}),
        );
        let html = syncs_page(
            &syncs,
            &[("2026-12".to_owned(), 2)],
            "/console/syncs",
            DEC_1,
        )
        .into_html();
        assert!(html.contains("2 added, 1 stale"));
        assert!(
            html.contains("3 profiles from 1 request(s)"),
            "partner id, identity and a skip"
        );
        assert!(!html.contains("rel=\"next\""));
        assert!(html.contains("<th scope=\"row\">2026-12</th><td class=\"num\">2</td>"));
    }

    #[test]
    fn a_freshness_reads_in_seconds_or_minutes() {
        assert_eq!(super::freshness(Some(420)), "0.42 s");
        assert_eq!(super::freshness(Some(65_000)), "1 min 5 s");
        assert_eq!(super::freshness(None), "–");
    }
}
