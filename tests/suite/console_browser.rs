//! The console in a real browser: headless Chromium, driven through chromedriver (WebDriver),
//! against the local server over DynamoDB Local holding known data. Screenshots of every page go
//! to `target/console-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (Debian): `scripts/test` installs them when missing and
//! runs this test with `--ignored`. `CHROMEDRIVER` and `CHROMIUM` override the binaries' paths.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::*;
use serde_json::{Value, json};

/// chromedriver on a free port of 127.0.0.1; stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): install chromium-driver or run scripts/test")
            });
        let driver = Self { child, port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not listen on {port}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=en-US"],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Waits (up to 20 s) until `main h1` (or `#login-title` for the sign-in) reads `title`.
async fn wait_for_title(c: &Client, title: &str) {
    for _ in 0..200 {
        let shown = c
            .execute(
                "const login = document.getElementById('login');
                 if (login && !login.hidden) return 'LOGIN:' + document.getElementById('login-error').textContent;
                 const h = document.querySelector('main h1');
                 return h && !document.querySelector('main').hasAttribute('aria-busy') ? h.textContent : null;",
                vec![],
            )
            .await
            .unwrap();
        if shown.as_str() == Some(title) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = c.source().await.unwrap_or_default();
    panic!("page never showed {title:?}:\n{source}");
}

async fn screenshot(c: &Client, name: &str) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The import progress bar's value and maximum, as the browser holds them.
async fn import_bar(c: &Client) -> (f64, f64) {
    let got = c
        .execute(
            "const p = document.querySelector('progress#import-progress'); return [p.value, p.max];",
            vec![],
        )
        .await
        .unwrap();
    (got[0].as_f64().unwrap(), got[1].as_f64().unwrap())
}

async fn sign_in(c: &Client, account: &str, passcode: &str) {
    c.find(Locator::Css("#account"))
        .await
        .unwrap()
        .send_keys(account)
        .await
        .unwrap();
    c.find(Locator::Css("#passcode"))
        .await
        .unwrap()
        .send_keys(passcode)
        .await
        .unwrap();
    c.find(Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Every form control has a label, and there is exactly one `h1` on screen.
async fn assert_accessible_basics(c: &Client) {
    let unlabelled = c
        .execute(
            "return [...document.querySelectorAll('input, select')]
                 .filter(e => e.offsetParent !== null && e.labels.length === 0).length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!(0));
    let headings = c
        .execute("return [...document.querySelectorAll('h1')].filter(h => h.offsetParent !== null).length", vec![])
        .await
        .unwrap();
    assert_eq!(headings, json!(1));
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver: scripts/test installs them and runs it"]
async fn a_person_signs_in_and_follows_a_segment_to_a_profile_and_the_sync_log() {
    let data = ConsoleData::new("console-browser").await;
    // An import of 12 into the segment waits for a bulk worker.
    data.queue_import("console-import", CONSOLE_SEGMENT, 12)
        .await;
    let segment = data.read(&format!("/v1/segments/{CONSOLE_SEGMENT}")).await;
    let driver = Driver::start().await;
    let c = browser(&driver).await;
    let base = format!("http://127.0.0.1:{}", data.port);

    // 1. The console asks for credentials; a wrong passcode shows the sign-in again.
    c.goto(&format!("{base}/console")).await.unwrap();
    wait_for_title(&c, "LOGIN:").await;
    assert_accessible_basics(&c).await;
    screenshot(&c, "1-sign-in").await;
    sign_in(&c, &data.stack.project.id, "not-the-passcode").await;
    wait_for_title(&c, "LOGIN:The Account ID or Passcode is wrong.").await;
    screenshot(&c, "2-wrong-passcode").await;
    let stored = c
        .execute(
            "return sessionStorage.length + localStorage.length + document.cookie.length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!(0), "a refused passcode is not kept anywhere");

    // 2. Signed in: the segment list; the credentials never reach the URL.
    sign_in(&c, &data.stack.project.id, &data.stack.project.passcode).await;
    wait_for_title(&c, "Segments").await;
    assert_accessible_basics(&c).await;
    assert!(
        !c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&data.stack.project.passcode)
    );
    let cookies = c
        .execute("return document.cookie + localStorage.length", vec![])
        .await
        .unwrap();
    assert_eq!(cookies, json!("0"), "no cookie, nothing in localStorage");
    screenshot(&c, "3-segments").await;

    // 3. Search, then open the segment from the list: its numbers are the read API's.
    c.find(Locator::Css("#q"))
        .await
        .unwrap()
        .send_keys("abandon")
        .await
        .unwrap();
    c.find(Locator::Css("form.search button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_title(&c, "Segments").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/console/segments?q=abandon")
    );
    let rows = c
        .find_all(Locator::Css("#segments tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "VIP is filtered out");
    c.find(Locator::LinkText(CONSOLE_SEGMENT_NAME))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_title(&c, CONSOLE_SEGMENT_NAME).await;
    for (stat, key) in [
        ("members", "member_count"),
        ("added", "added_total"),
        ("removed", "removed_total"),
    ] {
        assert_eq!(
            text_of(&c, &format!("[data-stat={stat}]")).await,
            segment[key].to_string(),
            "{stat}"
        );
    }
    let charts = c
        .find_all(Locator::Css("figure.chart svg[role=img]"))
        .await
        .unwrap();
    assert_eq!(charts.len(), 2);
    // The import waits: its bar at 0 of 12, nothing moving yet.
    assert_eq!(import_bar(&c).await, (0.0, 12.0));
    assert_eq!(
        text_of(&c, "[data-import=summary]").await,
        "0 % · 0 of 12 changes done"
    );
    assert_eq!(text_of(&c, "[data-stat=import-received]").await, "12");
    assert_eq!(
        text_of(&c, "[data-stat=import-left]").await,
        "waiting for a worker"
    );
    screenshot(&c, "4-segment").await;

    // The bulk worker imports it: the page refreshes the running import by itself (the bar
    // fills without a reload); then a reload shows the members counting it.
    data.stack
        .pipeline()
        .await
        .run_until_idle(50)
        .await
        .expect("pipeline");
    let mut bar = import_bar(&c).await;
    for _ in 0..40 {
        if bar == (12.0, 12.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        bar = import_bar(&c).await;
    }
    assert_eq!(bar, (12.0, 12.0), "the running import refreshed itself");
    c.refresh().await.unwrap();
    wait_for_title(&c, CONSOLE_SEGMENT_NAME).await;
    assert_eq!(import_bar(&c).await, (12.0, 12.0));
    assert_eq!(
        text_of(&c, "[data-import=summary]").await,
        "Complete · 12 of 12 changes done"
    );
    let imported = data.read(&format!("/v1/segments/{CONSOLE_SEGMENT}")).await;
    assert_eq!(imported["import"]["applied"], 12);
    assert_eq!(
        text_of(&c, "[data-stat=members]").await,
        imported["member_count"].to_string()
    );
    assert_eq!(
        imported["member_count"].as_i64(),
        segment["member_count"].as_i64().map(|n| n + 12)
    );
    screenshot(&c, "4b-segment-imported").await;
    c.set_window_size(390, 900).await.unwrap();
    screenshot(&c, "5-segment-phone-width").await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(true),
        "no sideways scrolling of the page at a phone width"
    );
    c.set_window_size(1280, 1000).await.unwrap();

    // 4. A member's profile shows the Partner Sync event with its five properties.
    let first_member = c.find(Locator::Css("#members tbody a")).await.unwrap();
    let ct = first_member.text().await.unwrap();
    first_member.click().await.unwrap();
    wait_for_title(&c, &format!("Profile {ct}")).await;
    let activity = text_of(&c, "#activity").await;
    for expected in [
        "Partner Sync",
        "Partner Segment Name",
        CONSOLE_SEGMENT_NAME,
        "Action",
        "Added",
        "Partner Segment ID",
        "CT Source",
        "Partner Name",
        "mParticle",
    ] {
        assert!(activity.contains(expected), "{expected:?} in {activity}");
    }
    screenshot(&c, "6-profile").await;

    // 5. Back returns to the segment; the sync log lists both requests.
    c.back().await.unwrap();
    wait_for_title(&c, CONSOLE_SEGMENT_NAME).await;
    c.find(Locator::LinkText("Syncs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_title(&c, "Syncs").await;
    let requests = c.find_all(Locator::Css("#syncs tbody tr")).await.unwrap();
    assert_eq!(requests.len(), 3);
    let syncs = text_of(&c, "#syncs").await;
    assert!(syncs.contains("console-m1") && syncs.contains("console-import"));
    screenshot(&c, "7-syncs").await;

    // 6. Signing out forgets the credentials: a reload shows the sign-in.
    c.find(Locator::Css("#sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.refresh().await.unwrap();
    wait_for_title(&c, "LOGIN:").await;
    c.close().await.unwrap();
}
