//! The console (`GET /console/…`): the read API's views (`domain::views`) as HTML pages (`domain::pages`).
//!
//! A request without credentials headers (a browser navigating) gets the shell; the shell's script
//! asks again with `X-CleverTap-Account-Id` / `X-CleverTap-Passcode`, which are checked exactly as
//! for the read API, and gets the page. Refusals keep the read API's status and wording.

use std::collections::HashMap;

use serde_json::Value;

use crate::domain::calendar::months_ending;
use crate::domain::pages::{self, BASE, LOOKUP_KINDS, Page, percent_encode};
use crate::domain::protocol::now_ms;
use crate::domain::region::Region;
use crate::domain::views::{ProfilesView, UsageView};
use crate::stages::http::{BodyKind, HttpReply};
use crate::stages::query::{Answer, Ctx, QueryApi, ReadRequest, fail, percent_decode, reply_of};
use crate::store::StoreError;

/// Months of usage the sync page shows.
const USAGE_MONTHS: u32 = 6;

pub fn is_console_path(path: &str) -> bool {
    path == BASE || path.starts_with("/console/")
}

fn html(status: u16, body: String) -> HttpReply {
    HttpReply::of_kind(status, BodyKind::Html, body)
}

/// A refusal of the read API (its JSON `error`) as a console page with the same status.
fn problem(refusal: &HttpReply) -> HttpReply {
    let message = serde_json::from_str::<Value>(&refusal.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    html(
        refusal.status,
        pages::problem_page(refusal.status, &message).into_html(),
    )
}

pub async fn handle(api: &QueryApi, req: &ReadRequest<'_>) -> HttpReply {
    if !req.method.eq_ignore_ascii_case("GET") {
        return problem(&fail(405, "only GET is accepted"));
    }
    let path = req.path.trim_end_matches('/');
    if let Some(name) = path.strip_prefix("/console/assets/") {
        return match pages::asset(name) {
            Some((text, true)) => HttpReply::of_kind(200, BodyKind::Script, text.to_owned()),
            Some((text, false)) => HttpReply::of_kind(200, BodyKind::Stylesheet, text.to_owned()),
            None => problem(&fail(404, "no such file")),
        };
    }
    let signed_in = ["x-clevertap-account-id", "x-clevertap-passcode"]
        .iter()
        .any(|h| req.headers.contains_key(*h));
    if !signed_in {
        let regions = api.serves_every_region().then_some(&Region::ALL[..]);
        return html(200, pages::shell(regions));
    }
    let ctx = match api.authenticate(req.headers).await {
        Ok(ctx) => ctx,
        Err(refusal) => return problem(&refusal),
    };
    match page(&ctx, path, req.query).await {
        Ok(Ok(page)) => html(200, page.into_html()),
        Ok(Err(refusal)) => problem(&refusal),
        Err(e) => problem(&reply_of::<()>(Err(e))),
    }
}

type PageResult = Result<Result<Page, HttpReply>, StoreError>;

/// Unwraps a view, or returns the route's refusal as the page's.
macro_rules! view {
    ($answer:expr) => {
        match $answer? {
            Ok(view) => view,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

/// The path with its query parameters (without `cursor`), for paging links.
fn href(path: &str, params: &[(&str, Option<&String>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(v))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

async fn page(ctx: &Ctx<'_>, path: &str, query: &HashMap<String, String>) -> PageResult {
    let parts: Vec<&str> = path.split('/').skip(2).collect();
    match parts.as_slice() {
        [] | ["segments"] => {
            let view = view!(ctx.segments(query).await);
            Ok(Ok(pages::segments_page(
                &view,
                query.get("q").map(String::as_str),
            )))
        }
        ["segments", id] => {
            let Ok(id) = id.parse::<i64>() else {
                return Ok(Err(fail(404, "segment not found")));
            };
            let segment = view!(ctx.segment(id).await);
            let members = view!(ctx.members(id, query).await);
            let href = format!("{BASE}/segments/{id}");
            Ok(Ok(pages::segment_page(&segment, &members, &href, now_ms())))
        }
        ["people"] => people(ctx, query).await,
        ["profiles"] => lookup(ctx, query).await,
        ["profiles", ct] => {
            let ct = percent_decode(ct);
            let profile = view!(ctx.profile(&ct).await);
            let events = view!(ctx.events(&ct, query).await);
            let href = format!("{BASE}/profiles/{}", percent_encode(&ct));
            Ok(Ok(pages::profile_page(&profile, &events, &href)))
        }
        ["syncs"] => syncs(ctx, query).await,
        _ => Ok(Err(fail(404, "no such page"))),
    }
}

async fn people(ctx: &Ctx<'_>, query: &HashMap<String, String>) -> PageResult {
    let mut api_query = query.clone();
    api_query.insert("event".to_owned(), "Partner Sync".to_owned());
    let people = view!(ctx.people(&api_query).await);
    // `people` answered, so the segment id parsed and the segment exists.
    let id = query
        .get("segment")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_default();
    let segment = view!(ctx.segment(id).await);
    let action = query.get("action").map(String::as_str);
    let href = href(
        &format!("{BASE}/people"),
        &[
            ("segment", query.get("segment")),
            ("action", query.get("action")),
        ],
    );
    Ok(Ok(pages::people_page(&segment, &people, action, &href)))
}

async fn lookup(ctx: &Ctx<'_>, query: &HashMap<String, String>) -> PageResult {
    let searched = match (query.get("by"), query.get("value")) {
        (Some(by), Some(value)) if !value.trim().is_empty() => {
            match LOOKUP_KINDS.iter().find(|(kind, _)| kind == by) {
                Some((kind, _)) => Some((*kind, value.trim())),
                None => {
                    return Ok(Err(fail(400, "by must be identity, email or phone")));
                }
            }
        }
        _ => None,
    };
    let found: Option<ProfilesView> = match searched {
        Some((kind, value)) => {
            let mut api_query = HashMap::from([(kind.to_owned(), value.to_owned())]);
            if let Some(cursor) = query.get("cursor") {
                api_query.insert("cursor".to_owned(), cursor.clone());
            }
            Some(view!(ctx.profiles_by(&api_query).await))
        }
        None => None,
    };
    Ok(Ok(pages::lookup_page(searched, found.as_ref())))
}

async fn syncs(ctx: &Ctx<'_>, query: &HashMap<String, String>) -> PageResult {
    let now = now_ms();
    let log = view!(ctx.syncs(query).await);
    let mut usage = Vec::new();
    for month in months_ending(now, USAGE_MONTHS).into_iter().rev() {
        let answer: Answer<UsageView> = ctx
            .usage(&HashMap::from([("month".to_owned(), month.clone())]))
            .await?;
        let count = answer.ok().map(|v| v.partner_sync_events);
        usage.push((month, count.unwrap_or(0)));
    }
    Ok(Ok(pages::syncs_page(
        &log,
        &usage,
        &format!("{BASE}/syncs"),
        now,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths() {
        assert!(is_console_path("/console") && is_console_path("/console/segments/1"));
        assert!(!is_console_path("/consoles") && !is_console_path("/v1/console"));
    }

    #[test]
    fn paging_links_keep_their_parameters_encoded() {
        let a = "Added".to_owned();
        let s = "4 2".to_owned();
        assert_eq!(
            href(
                "/console/people",
                &[("segment", Some(&s)), ("action", Some(&a))]
            ),
            "/console/people?segment=4%202&action=Added"
        );
        assert_eq!(href("/console/syncs", &[("x", None)]), "/console/syncs");
    }
}
