//! The studio in a real browser: the `dit-serve` binary with the shipped checkpoint,
//! headless Chromium driven over WebDriver by chromedriver (Debian's `chromium` and
//! `chromium-driver`). The browser opens the page, is told about an unknown word, types a
//! prompt, clicks Generate, sees previews arrive, waits for the clip, opens the trace tab
//! and saves a screenshot; the clip it shows is judged from its pixels.
//!
//! Without Chromium the test says so and passes, unless `DIT_REQUIRE_BROWSER` is set (as
//! `.ci/run` does after installing it). `DIT_CHROMIUM` and `DIT_CHROMEDRIVER` name other
//! binaries; the screenshot goes to `DIT_STUDIO_SCREENSHOT` when set.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{client, get, judged_correct, post_json, start_studio};
use serde_json::{Value, json};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child process killed when dropped.
struct Process(Child);

impl Process {
    /// Sends SIGINT (Ctrl-C) and waits for the exit.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.0.id()).expect("a pid");
        // SAFETY: kill(2) with the pid of a child this test started and has not reaped.
        let sent = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(sent, 0, "SIGINT was not sent");
        self.0.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.is_file().then_some(path)
}

/// A WebDriver session.
struct Browser {
    agent: ureq::Agent,
    session: String,
}

impl Browser {
    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let answer = match method {
            "GET" => get(&self.agent, &url),
            "DELETE" => common::delete(&self.agent, &url),
            _ => post_json(&self.agent, &url, &body),
        };
        let value = answer.json()["value"].clone();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {value}");
        value
    }

    fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found[ELEMENT].as_str().expect("an element").to_string()
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.command("GET", &format!("/element/{id}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/clear"), json!({}));
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Polls `script` until it returns true; panics with `what` after `limit`.
    fn wait_for(&self, script: &str, limit: Duration, what: &str) {
        let start = Instant::now();
        while self.script(script) != json!(true) {
            let state = self.script("return document.body.dataset.state || ''");
            if state == "error" {
                panic!("the page shows an error: {}", self.text("#error"));
            }
            assert!(start.elapsed() < limit, "no {what} after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Headless Chromium under chromedriver, and what must live as long as the session; `None`
/// (after saying so) when they are not installed and `DIT_REQUIRE_BROWSER` is not set.
fn open_browser() -> Option<(Browser, Process, tempfile::TempDir)> {
    let (Some(chromium), Some(chromedriver)) = (
        binary("DIT_CHROMIUM", "/usr/bin/chromium"),
        binary("DIT_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) else {
        assert!(
            std::env::var_os("DIT_REQUIRE_BROWSER").is_none(),
            "DIT_REQUIRE_BROWSER is set but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: no chromium and chromedriver (apt-get install chromium chromium-driver)"
        );
        return None;
    };

    // chromedriver on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver_process = Process(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let driver = format!("http://127.0.0.1:{port}");
    let agent = client();
    let start = Instant::now();
    while agent
        .get(format!("{driver}/status"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "chromedriver is not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = tempfile::tempdir().unwrap();
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1000",
        &format!("--user-data-dir={}", profile.path().display()),
    ];
    let session = post_json(
        &agent,
        &format!("{driver}/session"),
        &json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}}),
    );
    assert_eq!(
        session.status,
        200,
        "{}",
        String::from_utf8_lossy(&session.body)
    );
    let id = session.json()["value"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let browser = Browser {
        agent: client(),
        session: format!("{driver}/session/{id}"),
    };

    Some((browser, driver_process, profile))
}

#[test]
fn a_browser_generates_a_clip_and_sees_its_previews_and_trace() {
    let Some((browser, _driver, _profile)) = open_browser() else {
        return;
    };
    // The studio, on a free port of 127.0.0.1 (it prints its address).
    let (server, address, lines) = start_studio(&[]);
    let base = format!("http://{address}");
    assert!(
        address.starts_with("127.0.0.1:"),
        "binds localhost by default: {address}"
    );
    let mut server = Process(server);
    let agent = client();

    browser.command("POST", "/url", json!({ "url": base }));
    browser.wait_for(
        "return document.body.dataset.ready === 'yes'",
        Duration::from_secs(10),
        "vocabulary",
    );

    // An unknown word is named before anything is sent.
    browser.type_into("#prompt", "a red blob moving right");
    let check = browser.text("#prompt-check");
    assert!(check.contains("blob"), "{check:?}");

    let caption = "a yellow triangle moving up";
    browser.type_into("#prompt", caption);
    assert_eq!(browser.text("#prompt-check"), "Every word is known.");
    browser.click("#generate");
    browser.wait_for(
        "return Number(document.body.dataset.previews || 0) >= 1",
        Duration::from_secs(30),
        "preview",
    );
    browser.wait_for(
        "return document.body.dataset.state === 'done' && document.getElementById('clip').complete \
         && document.getElementById('clip').naturalWidth > 0",
        Duration::from_secs(60),
        "clip",
    );
    let previews = browser.script("return Number(document.body.dataset.previews)");
    let first_ms = browser.script("return Number(document.body.dataset.firstPreviewMs)");
    let clip_ms = browser.script("return Number(document.body.dataset.clipMs)");
    eprintln!("previews shown: {previews}; first after {first_ms} ms; clip after {clip_ms} ms");
    assert!(previews.as_u64().unwrap() >= 1);
    assert_eq!(
        browser.script("return document.getElementById('clip').naturalWidth"),
        json!(128),
        "the clip is shown at 4× (32-pixel frames)"
    );

    // The clip the page shows is judged correct.
    let src = browser.script("return document.body.dataset.clip");
    let shown = get(&agent, &format!("{base}{}", src.as_str().unwrap()));
    assert_eq!(shown.status, 200);
    assert!(
        judged_correct(&shown.body, caption),
        "the shown clip is not {caption:?}"
    );

    let screenshot = browser.command("GET", "/screenshot", Value::Null);
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot.as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let path = std::env::var_os("DIT_STUDIO_SCREENSHOT").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("studio.png"),
        PathBuf::from,
    );
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // "How it was made": the trace of this generation, in the page.
    browser.click("#tab-trace");
    browser.wait_for(
        "return document.getElementById('trace-status').textContent.startsWith('Every step')",
        Duration::from_secs(60),
        "trace",
    );
    let sections = browser.script(
        "return document.getElementById('trace').contentDocument.querySelectorAll('h2').length",
    );
    assert!(sections.as_u64().unwrap() >= 11, "{sections}");

    browser.command("DELETE", "", Value::Null);

    // Ctrl-C stops the server cleanly.
    let exit = server.interrupt();
    assert!(exit.success(), "{exit}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

/// A model on the frozen all-MiniLM-L6-v2 (untrained: the page is what is tested): the page
/// names the encoder, takes words no caption has without flagging them, and generates.
/// Skipped without the weights unless `DIT_REQUIRE_MINILM` is set.
#[test]
fn a_browser_prompts_a_minilm_model_in_any_words() {
    let weights = dit_model::minilm::model_dir().join("model.safetensors");
    if !weights.is_file() && std::env::var_os("DIT_REQUIRE_MINILM").is_none() {
        eprintln!(
            "skipped: no {} (scripts/fetch-minilm.sh)",
            weights.display()
        );
        return;
    }
    let Some((browser, _driver, _profile)) = open_browser() else {
        return;
    };
    let run = common::minilm_run();
    let (server, address, _) = start_studio(&["--checkpoint", run.path().to_str().unwrap()]);
    let _server = Process(server);
    browser.command(
        "POST",
        "/url",
        json!({ "url": format!("http://{address}") }),
    );
    browser.wait_for(
        "return document.body.dataset.ready === 'yes'",
        Duration::from_secs(10),
        "vocabulary",
    );
    assert!(
        browser
            .text("#words")
            .starts_with("Text encoder: all-MiniLM-L6-v2 (frozen)"),
        "{}",
        browser.text("#words")
    );
    browser.type_into("#prompt", "sora is sky");
    assert_eq!(
        browser.text("#prompt-check"),
        "Read by all-MiniLM-L6-v2: any words work."
    );
    browser.type_into("#steps", "2");
    browser.click("#generate");
    browser.wait_for(
        "return document.body.dataset.state === 'done' && document.getElementById('clip').complete \
         && document.getElementById('clip').naturalWidth > 0",
        Duration::from_secs(60),
        "clip",
    );
    browser.command("DELETE", "", Value::Null);
}
