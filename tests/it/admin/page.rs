//! The live status page in headless Chromium, driven over WebDriver
//! (fantoccini).

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use hyper_util::client::legacy::connect::HttpConnector;

use super::*;

/// chromedriver and its browser session; chromedriver, and the Chromium it
/// started, end on drop whatever happens (they share a process group).
struct Browser {
    driver: std::process::Child,
    client: fantoccini::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        // Found on PATH, as a shell would (Debian: chromium, chromedriver;
        // elsewhere often chromium-browser or google-chrome).
        let on_path = |names: &[&str]| -> PathBuf {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    panic!(
                        "none of {names:?} is on PATH: this test needs Chromium and ChromeDriver (scripts/test installs them)"
                    )
                })
        };
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = on_path(&["chromedriver"]);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let mut builder = fantoccini::ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver refuses connections until it listens.
        let client = poll(LIMIT, "a WebDriver session", || async {
            builder.connect(&url).await.ok()
        })
        .await;
        Browser {
            driver,
            client,
            _profile: profile,
        }
    }

    async fn script(&self, js: &str) -> Value {
        self.client
            .execute(js, Vec::new())
            .await
            .expect("script runs")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.driver.id();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium and anything else chromedriver started is in its group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
    }
}

/// State and text of the primary's row in the regions table, and of its chip
/// on the service card.
const PRIMARY_ROW_JS: &str = r#"
const row = document.querySelector('#regions tr[data-region="primary"]');
const chip = document.querySelector('.card .chip[data-region="primary"]');
const card = document.querySelector('.card[data-service]');
return row ? {
  state: row.dataset.state,
  text: row.innerText,
  chip: chip ? chip.dataset.state : null,
  card: card ? card.className : null,
  answer: card ? card.querySelector('.answer').innerText : null,
  timeline: document.getElementById('timeline').innerText,
  live: document.getElementById('livetext').textContent,
} : null;
"#;

#[tokio::test]
async fn status_page_shows_a_region_going_down_live() {
    let mut rig = Rig::start(&FAST, None).await;
    rig.wait_healthy().await;
    let browser = Browser::start().await;
    let web = &browser.client;
    web.set_window_size(1400, 900).await.expect("window size");
    web.goto(&rig.url("/")).await.expect("open the page");
    assert_eq!(web.title().await.expect("title"), "gslb status");

    let row = poll(LIMIT, "the page shows the primary UP", || async {
        let row = browser.script(PRIMARY_ROW_JS).await;
        (row["state"] == "up" && row["text"].as_str().unwrap_or("").contains("UP")).then_some(row)
    })
    .await;
    assert_eq!(row["chip"], "up");
    assert!(row["text"].as_str().unwrap().contains(PRIMARY_IP), "{row}");

    // Down without reloading the page: the live feed must carry it.
    rig.primary.kill();
    let row = poll(LIMIT, "the page shows the primary DOWN", || async {
        let row = browser.script(PRIMARY_ROW_JS).await;
        (row["state"] == "down").then_some(row)
    })
    .await;
    let text = row["text"].as_str().unwrap();
    assert!(text.contains("DOWN"), "{row:#}");
    assert!(
        text.contains("connection refused"),
        "the reason shows: {row:#}"
    );
    assert_eq!(row["chip"], "down");
    assert!(
        row["card"].as_str().unwrap().contains("degraded"),
        "{row:#}"
    );
    assert!(
        row["answer"].as_str().unwrap().contains("secondary"),
        "{row:#}"
    );
    assert!(
        row["answer"].as_str().unwrap().contains(SECONDARY_IP),
        "{row:#}"
    );
    let row = poll(LIMIT, "the timeline lists the transition", || async {
        let row = browser.script(PRIMARY_ROW_JS).await;
        row["timeline"]
            .as_str()
            .unwrap_or("")
            .contains("up → down")
            .then_some(row)
    })
    .await;
    assert!(row["live"].as_str().unwrap().starts_with("live"), "{row:#}");

    let png = web.screenshot().await.expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let path = target_path("artifacts/status-page.png");
    std::fs::write(&path, &png).expect("write screenshot");
    println!("status page screenshot: {}", path.display());
}

// Issue 19 item 2. Fails on the code before it: the drain button acted on
// one click, with no way to send a token (a server with one refused it).
#[tokio::test]
async fn the_page_asks_before_a_drain_and_sends_the_token() {
    let rig = Rig::start(&FAST, Some(TOKEN)).await;
    rig.wait_healthy().await;
    let browser = Browser::start().await;
    let web = &browser.client;
    web.goto(&rig.url("/")).await.expect("open the page");
    let button = r#"button[data-act][data-r="primary"]"#;
    // The page re-renders its table on every status: an element found
    // may be gone by the click, so find and click again until one lands.
    let click = || async {
        poll(LIMIT, "a click on the drain button", || async {
            let b = web.find(fantoccini::Locator::Css(button)).await.ok()?;
            b.click().await.ok()
        })
        .await;
    };
    // Asked, and dismissed: nothing happens.
    click().await;
    let asked = web.get_alert_text().await.expect("a confirmation");
    assert!(
        asked.contains("drain") && asked.contains("primary"),
        "{asked}"
    );
    web.dismiss_alert().await.expect("dismiss");
    // Accepted without the token: refused, and the page says why.
    click().await;
    web.accept_alert().await.expect("accept");
    let msg = poll(LIMIT, "the refusal shown", || async {
        let m = browser
            .script("return document.getElementById('msg').textContent")
            .await;
        m.as_str().filter(|m| !m.is_empty()).map(str::to_string)
    })
    .await;
    assert!(msg.contains("token"), "{msg}");
    assert_eq!(region(&rig.status().await, "primary")["override"], "auto");
    // With the token: drained.
    web.find(fantoccini::Locator::Id("token"))
        .await
        .expect("the token field")
        .send_keys(TOKEN)
        .await
        .expect("type");
    click().await;
    web.accept_alert().await.expect("accept");
    poll(LIMIT, "drained", || async {
        (region(&rig.status().await, "primary")["override"] == "down").then_some(())
    })
    .await;
    assert_eq!(rig.api().await, [SECONDARY_IP]);
}

/// The office row of the geo service's locations table.
const OFFICE_ROW_JS: &str = r#"
const card = document.querySelector('.card[data-service="api.gslb.example.com."]');
const row = card && card.querySelector('table.locations tr[data-location="office"]');
return row ? { text: row.innerText, degraded: !!row.querySelector('td.degraded'),
  rows: card.querySelectorAll('table.locations tr[data-location]').length } : null;
"#;

#[tokio::test]
async fn status_page_shows_each_locations_answer_of_a_geo_service() {
    let g = crate::geo::start_geo(|s| s.admin = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = g.ts.server.admin_addr.unwrap();
    let browser = Browser::start().await;
    let web = &browser.client;
    web.goto(&format!("http://{admin}/"))
        .await
        .expect("open the page");
    let row = poll(LIMIT, "the office location on eu", || async {
        let row = browser.script(OFFICE_ROW_JS).await;
        row["text"]
            .as_str()
            .is_some_and(|t| t.contains("→ eu"))
            .then_some(row)
    })
    .await;
    let text = row["text"].as_str().unwrap();
    assert!(text.contains("eu › us"), "the office's order: {row:#}");
    assert_eq!(row["degraded"], false);
    // office, continent:EU, country:IN and `*`.
    assert_eq!(row["rows"], 4, "{row:#}");
    // Its first region fails: the page follows, live.
    g.eu.set(Mode::Failing);
    let row = poll(LIMIT, "the office location on us", || async {
        let row = browser.script(OFFICE_ROW_JS).await;
        row["text"]
            .as_str()
            .is_some_and(|t| t.contains("→ us"))
            .then_some(row)
    })
    .await;
    assert_eq!(row["degraded"], true, "{row:#}");
}
