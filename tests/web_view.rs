//! The live web view in headless Chromium, driven through WebDriver
//! (chromedriver): the page loads from the admin server, a finding published
//! while it is open appears in the feed, and a filter hides it.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them and sets
//! `SEAMWATCH_REQUIRE_BROWSER=1`). Without them the test says so and does
//! not run. `SEAMWATCH_WEB_SCREENSHOT=FILE.png` saves a screenshot.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use seamwatch::admin::{AdminState, FindingsHub};
use seamwatch::detect::{Finding, Severity};

mod common;

fn finding(n: usize, severity: Severity, rule: &str, team: &str) -> Finding {
    common::finding(&format!("web-{n:04}"), n, severity, rule, team)
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// chromedriver on a free port, and the browser binary.
fn browser() -> Option<(Driver, u16, String)> {
    let chromium = which("chromium").or_else(|| which("chromium-browser"));
    let driver = which("chromedriver");
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        assert!(
            std::env::var_os("SEAMWATCH_REQUIRE_BROWSER").is_none(),
            "SEAMWATCH_REQUIRE_BROWSER is set but chromium or chromedriver is missing"
        );
        eprintln!(
            "NOTE: chromium and chromedriver not found; the web view test did not run (.ci/run runs it)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    common::wait_for(Duration::from_secs(20), "chromedriver", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((driver, port, chromium))
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_page_shows_a_new_finding_and_a_filter_hides_it() {
    let Some((_driver, port, chromium)) = browser() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hub = Arc::new(FindingsHub::new(100));
    let state = Arc::new(AdminState {
        hub: hub.clone(),
        metrics: Arc::default(),
        analyzer: None,
        outbox: None,
        sinks: Vec::new(),
        token: None,
        silent_after: Duration::from_secs(900),
    });
    let (addr, _) = runtime
        .block_on(seamwatch::admin::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            state,
            std::future::pending(),
        ))
        .unwrap();
    hub.publish([finding(
        1,
        Severity::Medium,
        "aws.network.sg_ingress_open_to_internet",
        "network",
    )]);

    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1400,900"]
            }),
        );
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        client.goto(&format!("http://{addr}/")).await.unwrap();
        // The page loads with the finding already published.
        wait_until("the first finding", || async {
            client.find(Locator::Id("finding-web-0001")).await.is_ok()
        })
        .await;
        wait_until("the live feed", || async {
            let state = client.find(Locator::Id("feed-state")).await.unwrap();
            state.text().await.unwrap() == "live"
        })
        .await;

        // Published while the page is open: it arrives over the stream.
        hub.publish([finding(
            2,
            Severity::Critical,
            "aws.logging.cloudtrail_stopped",
            "platform-security",
        )]);
        wait_until("the new finding", || async {
            client.find(Locator::Id("finding-web-0002")).await.is_ok()
        })
        .await;
        let row = client.find(Locator::Id("finding-web-0002")).await.unwrap();
        assert!(row.is_displayed().await.unwrap());
        let text = row.text().await.unwrap();
        assert!(text.contains("aws.logging.cloudtrail_stopped") && text.contains("user-2"), "{text}");

        // A filter that excludes it hides it, and keeps the other.
        let team = client.find(Locator::Id("f-team")).await.unwrap();
        team.send_keys("network").await.unwrap();
        wait_until("the filter to apply", || async {
            let row = client.find(Locator::Id("finding-web-0002")).await.unwrap();
            !row.is_displayed().await.unwrap()
        })
        .await;
        let other = client.find(Locator::Id("finding-web-0001")).await.unwrap();
        assert!(other.is_displayed().await.unwrap());
        let shown = client.find(Locator::Id("shown")).await.unwrap();
        assert_eq!(shown.text().await.unwrap(), "1");
        // The filter is in the address, so a reload keeps it.
        let url = client.current_url().await.unwrap();
        assert!(url.as_str().contains("team=network"), "{url}");

        // Health and the last hour's counts come from /api/overview.
        wait_until("the health pills", || async {
            let ready = client.find(Locator::Id("ready")).await.unwrap();
            ready.text().await.unwrap().contains("no partition assigned")
        })
        .await;
        // The counts refresh every 5 s.
        wait_until("the last hour's counts", || async {
            let by_severity = client.find(Locator::Id("by-severity")).await.unwrap();
            let counts = by_severity.text().await.unwrap();
            counts.contains("critical") && counts.contains("medium")
        })
        .await;

        if let Some(path) = std::env::var_os("SEAMWATCH_WEB_SCREENSHOT") {
            team.clear().await.unwrap();
            let png = client.screenshot().await.unwrap();
            std::fs::write(path, png).unwrap();
        }
        client.close().await.unwrap();
    });
}
