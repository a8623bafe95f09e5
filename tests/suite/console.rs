//! The console over HTTP against DynamoDB Local: the shell holds nothing of a project, pages
//! show what the read API answers, and refusals keep the read API's status. The browser drives
//! the same pages in `console_browser.rs`.

use integration_tests::*;
use serde_json::Value;
use shared::domain::calendar::day_of;

/// The text of the element carrying `data-stat="<name>"`.
fn stat(html: &str, name: &str) -> String {
    let marker = format!("data-stat=\"{name}\">");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('<').next().unwrap().to_owned()
}

#[tokio::test]
async fn console_pages_show_the_read_apis_numbers_and_refuse_like_it() {
    let data = ConsoleData::new("console").await;
    let port = data.port;
    let headers = data.headers();

    // A browser's navigation: the shell, with no data, under a strict content security policy.
    let shell = http_text(port, "GET", "/console/segments/4242", &[], "").await;
    assert_eq!(shell.status, 200);
    assert_eq!(shell.headers["content-type"], "text/html; charset=utf-8");
    assert!(shell.headers["content-security-policy"].contains("script-src 'self'"));
    assert_eq!(shell.headers["cache-control"], "no-store");
    assert!(shell.body.contains("id=\"login-form\""));
    assert!(!shell.body.contains("Cart") && !shell.body.contains(&data.stack.project.id));

    // The segment page: the read API's numbers, the name escaped, both members listed.
    let api = data.read("/v1/segments/4242").await;
    let page = http_text(port, "GET", "/console/segments/4242", &headers, "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Cart &lt;Abandoners&gt; &amp; co"));
    assert!(!page.body.contains("<Abandoners>"));
    for (name, key) in [
        ("members", "member_count"),
        ("added", "added_total"),
        ("removed", "removed_total"),
    ] {
        assert_eq!(stat(&page.body, name), api[key].to_string(), "{name}");
    }
    assert_eq!(
        (
            api["member_count"].as_i64(),
            api["added_total"].as_i64(),
            api["removed_total"].as_i64()
        ),
        (Some(2), Some(3), Some(1))
    );
    let members = data.read("/v1/segments/4242/members").await;
    for m in members["members"].as_array().unwrap() {
        assert!(
            page.body.contains(m["clevertap_id"].as_str().unwrap()),
            "{m}"
        );
    }
    assert!(
        page.body
            .contains("/console/people?segment=4242&amp;action=Added")
    );

    // The history behind the charts: Partner Sync events per day of the event.
    let history = api["history"].as_array().unwrap();
    let yesterday = day_of(data.yesterday_ms);
    let today = day_of(data.today_ms);
    let day = |d: &str| {
        history
            .iter()
            .find(|h| h["day"] == d)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        (
            day(&yesterday)["added"].as_i64(),
            day(&yesterday)["members"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(
        (
            day(&today)["removed"].as_i64(),
            day(&today)["members"].as_i64()
        ),
        (Some(1), Some(2))
    );
    assert!(
        page.body.contains("2 members on"),
        "the members chart ends with today's count"
    );

    // A member's profile: its User activity lists the Partner Sync events, newest first.
    let found = data.read("/v1/profiles?identity=c-1").await;
    let ct = found["profiles"][0]["clevertap_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let profile = http_text(
        port,
        "GET",
        &format!("/console/profiles/{ct}"),
        &headers,
        "",
    )
    .await;
    assert_eq!(profile.status, 200);
    assert_eq!(stat(&profile.body, "email"), "ann@example.com");
    assert_eq!(
        profile.body.matches("<li class=\"event\">").count(),
        2,
        "one event per segment joined"
    );
    assert!(profile.body.contains("<dt>Action</dt><dd>Added</dd>"));
    assert!(
        profile
            .body
            .contains("<dt>CT Source</dt><dd>mParticle</dd>")
    );
    let lookup = http_text(
        port,
        "GET",
        "/console/profiles?by=email&value=ANN%40example.com",
        &headers,
        "",
    )
    .await;
    assert!(
        lookup.body.contains(&format!("/console/profiles/{ct}")),
        "email lookup normalises"
    );

    // The sync log: one row per request with the ladder outcomes; usage as the read API counts it.
    let syncs = http_text(port, "GET", "/console/syncs", &headers, "").await;
    assert_eq!(syncs.status, 200);
    assert!(syncs.body.contains("console-m1") && syncs.body.contains("console-m2"));
    assert!(syncs.body.contains("4 added") && syncs.body.contains("1 removed"));
    let usage = data.read("/v1/usage").await;
    let row = format!(
        "<th scope=\"row\">{}</th><td class=\"num\">{}</td>",
        usage["month"].as_str().unwrap(),
        usage["partner_sync_events"]
    );
    assert!(syncs.body.contains(&row), "{row}");

    // Find People: who was added.
    let people = http_text(
        port,
        "GET",
        "/console/people?segment=4242&action=Removed",
        &headers,
        "",
    )
    .await;
    assert_eq!(people.status, 200);
    assert_eq!(
        people.body.matches("/console/profiles/").count(),
        1,
        "c-3 only"
    );

    // Refusals: as the read API answers them, as pages.
    let wrong = http_text(
        port,
        "GET",
        "/console/segments",
        &[
            ("X-CleverTap-Account-Id", &data.stack.project.id),
            ("X-CleverTap-Passcode", "wrong"),
        ],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("invalid credentials") && !wrong.body.contains("Cart"));
    let missing = http_text(port, "GET", "/console/segments/999", &headers, "").await;
    assert_eq!(
        (missing.status, missing.body.contains("segment not found")),
        (404, true)
    );
    let unknown = http_text(port, "GET", "/console/nowhere", &headers, "").await;
    assert_eq!(unknown.status, 404);
    let bad = http_text(
        port,
        "GET",
        "/console/profiles?by=mpid&value=1",
        &headers,
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
    let post = http_text(port, "POST", "/console/segments", &headers, "").await;
    assert_eq!(
        post.status, 404,
        "the local server routes only GET to the console, as the template does"
    );

    // The assets the shell loads.
    let script = http_text(port, "GET", "/console/assets/console.js", &[], "").await;
    assert_eq!(
        (script.status, script.headers["content-type"].as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(script.body.contains("sessionStorage") && !script.body.contains("localStorage.set"));
    let css = http_text(port, "GET", "/console/assets/console.css", &[], "").await;
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn an_empty_project_shows_empty_states() {
    let stack = Stack::new("console-empty", shared::domain::region::Region::Eu1).await;
    let port = stack.serve_http().await;
    let headers = [
        ("X-CleverTap-Account-Id", stack.project.id.as_str()),
        ("X-CleverTap-Passcode", stack.project.passcode.as_str()),
    ];
    for (path, empty) in [
        ("/console", "No segments yet"),
        ("/console/syncs", "No membership batches yet"),
        (
            "/console/profiles?by=identity&value=nobody",
            "No profile has the identity",
        ),
    ] {
        let page = http_text(port, "GET", path, &headers, "").await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains(empty), "{path}: {}", page.body);
    }
    let profile = http_text(port, "GET", "/console/profiles/__nobody", &headers, "").await;
    assert_eq!(
        (profile.status, profile.body.contains("profile not found")),
        (404, true)
    );
}
