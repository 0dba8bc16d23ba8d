//! The admin console at `/admin`: the static page and its headers, and one end-to-end run in
//! Debian's headless Chromium (`tests/js/admin-console-e2e.mjs`, driven through playwright-core)
//! against a real node: sign in, see the connection this test holds, see an event this test
//! publishes, change a mailbox limit in the form and read the change back from the admin API.
//! Needs `npm ci --prefix tests/js` and `/usr/bin/chromium` (scripts/test installs both).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::helpers::{
    admin, customer, operator, service, spawn_app, spawn_app_with, token, TestApp,
};

#[actix_web::test]
async fn the_console_is_served_with_its_content_types_and_a_strict_policy() {
    let app = spawn_app().await;

    let (status, content_type, csp, body) = get_text(&app, "/admin").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp:?}");
    }
    let port = app.port;
    assert!(
        csp.contains(&format!(
            "connect-src 'self' ws://127.0.0.1:{port} wss://127.0.0.1:{port}"
        )),
        "{csp:?}"
    );
    assert!(
        body.contains(r#"<script src="/admin/console.js""#),
        "{body}"
    );
    assert!(body.contains(r#"<link rel="stylesheet" href="/admin/console.css""#));

    let (status, content_type, csp, body) = get_text(&app, "/admin/console.js").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(csp.contains("default-src 'none'"));
    assert!(body.contains("/api/v1/admin/actors"));

    let (status, content_type, _, _) = get_text(&app, "/admin/console.css").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/css"), "{content_type}");

    // The trailing-slash form is the page too; anything else under /admin is a 404 problem.
    assert_eq!(get_text(&app, "/admin/").await.0, 200);
    let (status, content_type, _, body) = get_text(&app, "/admin/secrets.txt").await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert!(body.contains("secrets.txt"), "{body}");
    app.stop().await;
}

#[actix_web::test]
async fn an_operator_watches_a_tenant_and_retunes_a_mailbox_in_headless_chromium() {
    // Samples often enough that the charts move within a step.
    let app = spawn_app_with(|s| s.admin.sample_interval_ms = 200).await;
    let operator_token = token(&operator());
    // The connection the console must show: a customer of t1, held open for the whole test.
    let mut member = app.connect(&customer("t1", "guest-7", None)).await;
    member.ping().await;

    let mut browser = ConsoleDriver::start(
        &app,
        &[
            ("OPERATOR_TOKEN", operator_token.clone()),
            ("ADMIN_TOKEN", token(&admin("t1"))),
            ("TENANT", "t1".into()),
            ("MEMBER_USER", "guest-7".into()),
        ]
        .into_iter()
        .chain(screenshots_dir().map(|d| ("SCREENSHOTS_DIR", d)))
        .collect::<Vec<_>>(),
    )
    .await;
    browser.step("launched").await;

    let loaded = browser.step("loaded").await;
    assert_eq!(loaded["status"], 200, "{loaded}");
    assert_eq!(loaded["title"], "Switchyard admin console", "{loaded}");

    let signed_in = browser.step("signed_in").await;
    let whoami = signed_in["whoami"].as_str().unwrap_or_default();
    assert!(
        whoami.contains("ops") && whoami.contains("Operator"),
        "{signed_in}"
    );

    let listed = browser.step("tenant_listed").await;
    assert!(listed["connections"].as_u64() >= Some(1), "{listed}");
    assert!(listed["users"].as_u64() >= Some(1), "{listed}");

    member.ping().await;
    let online = browser.step("user_online").await;
    assert_eq!(online["tenant"], "t1", "{online}");
    assert_eq!(online["userId"], "guest-7", "{online}");
    assert_eq!(online["role"], "Customer", "{online}");
    assert_eq!(online["connections"], 1, "{online}");

    // The page is subscribed to the live activity of t1: connect someone else and publish, then
    // tell the page what to find.
    browser.step("watching").await;
    let mut late = app.connect(&customer("t1", "guest-8", None)).await;
    late.ping().await;
    let (status, published) = app
        .publish(
            &service(),
            "tenant:t1:broadcast",
            "NewOrder",
            json!({"orderId": "o-1", "total": 12.5}),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    let id = published["id"].as_str().expect("a published id").to_owned();
    browser.send(json!({"id": id, "user": "guest-8"})).await;

    let recent = browser.step("recent_event").await;
    assert_eq!(recent["event"], "NewOrder", "{recent}");
    assert_eq!(recent["channel"], "tenant:t1:broadcast", "{recent}");
    let live = browser.step("activity_event").await;
    let summary = live["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("NewOrder") && summary.contains("tenant:t1:broadcast"),
        "{live}"
    );

    let opened = browser.step("activity_connection").await;
    let summary = opened["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("guest-8 (Customer)") && summary.contains("native"),
        "{opened}"
    );

    // The form: session mailbox 77 with the drop policy, then a refused mailbox of 0.
    let saved = browser.step("mailbox_saved").await;
    assert_eq!(
        saved["message"], "saved; stored in the database, kept across restarts",
        "{saved}"
    );
    assert_eq!(saved["mailbox"], "77", "{saved}");
    assert_eq!(saved["policy"], "drop", "{saved}");
    let refused = browser.step("mailbox_refused").await;
    // The page shows the API's own reason: ask the API the same thing.
    let (status, problem) = app
        .put_json(
            "/api/v1/admin/actors/session",
            Some(&operator_token),
            &json!({"mailbox": 0}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "{problem}");
    assert_eq!(refused["message"], detail, "{refused}");

    // The change made in the browser is what the API now reports.
    let (status, body) = app.get("/api/v1/admin/actors", Some(&operator_token)).await;
    assert_eq!(status, 200, "{body}");
    let session = body["actors"]
        .as_array()
        .and_then(|a| a.iter().find(|k| k["kind"] == "session"))
        .unwrap_or_else(|| panic!("no session entry in {body}"));
    assert_eq!(session["mailbox"], 77, "{session}");
    assert_eq!(session["policy"], "drop", "{session}");

    // A broker shard has only a mailbox: the row offers nothing else. Its mailbox goes to 1, and
    // kinds that do not run in embedded mode on SQLite are marked.
    let set = browser.step("broker_limit_set").await;
    assert_eq!(
        (
            &set["policyEditable"],
            &set["bytesEditable"],
            &set["unused"]
        ),
        (&json!(false), &json!(false), &json!("not used")),
        "{set}"
    );
    assert_eq!(
        set["message"], "saved; stored in the database, kept across restarts",
        "{set}"
    );
    assert_eq!(
        set["notRunning"],
        json!(["redis_bridge", "pg_listener"]),
        "{set}"
    );

    // Load: concurrent publishes into the one-message broker mailbox until it was full.
    let broker = crate::admin::fill_broker_mailbox(&app, "tenant:t1:broadcast").await;
    assert!(broker["mailboxFull"].as_u64() > Some(0), "{broker}");
    browser.send(json!({"load": "done"})).await;
    let moved = browser.step("chart_moved").await;
    let charts = &moved["charts"];
    for chart in ["deliveredPerSecond", "publishedPerSecond", "mailboxFull"] {
        assert!(
            charts[chart]["max"].as_f64() > Some(0.0),
            "{chart}: {moved}"
        );
    }
    assert!(
        moved["legend"]
            .as_array()
            .is_some_and(|l| l.iter().any(|k| k == "broker")),
        "{moved}"
    );
    // Embedded mode: no Redis bridge runs here, so the charts leave it out.
    assert!(
        moved["legend"]
            .as_array()
            .is_some_and(|l| !l.iter().any(|k| k == "redis_bridge")),
        "{moved}"
    );

    // Back to the configured limits, from the page.
    let reset = browser.step("reset_to_default").await;
    let defaults = [
        ("broker", app.settings.actors.broker.mailbox),
        ("session", app.settings.actors.session.mailbox),
    ];
    for (kind, mailbox) in defaults {
        assert_eq!(reset[kind]["mailbox"], mailbox.to_string(), "{reset}");
        assert_eq!(reset[kind]["resetDisabled"], true, "{reset}");
        assert_eq!(reset[kind]["note"], "configured limits", "{reset}");
    }
    assert!(
        reset["persist"]
            .as_str()
            .is_some_and(|p| p.contains("survive a restart")),
        "{reset}"
    );
    let (_, body) = app.get("/api/v1/admin/actors", Some(&operator_token)).await;
    for (kind, mailbox) in defaults {
        let entry = body["actors"]
            .as_array()
            .and_then(|a| a.iter().find(|k| k["kind"] == kind))
            .unwrap_or_else(|| panic!("no {kind} entry in {body}"));
        assert_eq!(entry["mailbox"], mailbox, "{entry}");
        assert_eq!(entry["overridden"], false, "{entry}");
    }

    // A tenant quota, edited by the Operator on the tenant's panel.
    let quota = browser.step("quota_edited").await;
    assert!(
        quota["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("quotas saved")),
        "{quota}"
    );
    let (_, quotas) = app
        .get("/api/v1/admin/tenants/t1/quotas", Some(&operator_token))
        .await;
    assert_eq!(quotas["quotas"]["maxConnections"], 500, "{quotas}");
    assert_eq!(quotas["overridden"], true, "{quotas}");

    // A tenant's Admin sees its tenant but not the actor table.
    let admin_view = browser.step("operator_only").await;
    assert_eq!(
        admin_view["denied"], "Operator role required",
        "{admin_view}"
    );
    assert_eq!(admin_view["actorsTableVisible"], false, "{admin_view}");
    assert_eq!(admin_view["tenants"], json!(["t1"]), "{admin_view}");
    assert_eq!(
        (
            &admin_view["chartsVisible"],
            &admin_view["quotaFormVisible"]
        ),
        (&json!(false), &json!(false)),
        "{admin_view}"
    );
    // The Admin's console socket is open and watching, yet not the tenant's activity: t1 has the
    // test's two connections, and the Admin is not among its online users.
    let (_, t1) = app
        .get("/api/v1/admin/tenants/t1", Some(&operator_token))
        .await;
    assert_eq!(t1["connections"], 2, "{t1}");
    assert!(
        t1["users"]
            .as_array()
            .is_some_and(|u| u.iter().all(|u| u["userId"] != "admin-t1")),
        "{t1}"
    );

    let finished = browser.step("finished").await;
    assert_eq!(finished["pageErrors"], json!([]), "{finished}");
    browser.exited().await;

    member.ping().await;
    app.stop().await;
}

/// Where the browser script saves the screenshots in `docs/admin.md`: `docs/images` when the
/// test runs with `CONSOLE_SCREENSHOTS=1` (to refresh them), else nowhere.
fn screenshots_dir() -> Option<String> {
    std::env::var_os("CONSOLE_SCREENSHOTS").map(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/images")
            .display()
            .to_string()
    })
}

/// `GET path` → (status, content type, Content-Security-Policy, body text).
async fn get_text(app: &TestApp, path: &str) -> (u16, String, String, String) {
    let mut res = app.http.get(app.url(path)).send().await.expect("request");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (content_type, csp) = (header("content-type"), header("content-security-policy"));
    let body = res.body().await.expect("body");
    (
        res.status().as_u16(),
        content_type,
        csp,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// How long one step of the browser script may take, and how long this test waits for its
/// report (longer: the script reports its own timeouts with a screenshot).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const REPORT_TIMEOUT: Duration = Duration::from_secs(45);

/// `tests/js/admin-console-e2e.mjs`, run by Node against the app; one JSON report per step.
struct ConsoleDriver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ConsoleDriver {
    async fn start(app: &TestApp, env: &[(&str, String)]) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "run `npm ci --prefix tests/js` first (scripts/test does)"
        );
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/chromium".into());
        assert!(
            chromium.exists(),
            "{} is missing: `apt-get install chromium` (scripts/test does)",
            chromium.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("admin-console-e2e.mjs"))
            .arg(app.url(""))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CHROMIUM", &chromium)
            .env("STEP_TIMEOUT_MS", STEP_TIMEOUT.as_millis().to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next report, which must be the successful step `name`; returns it.
    async fn step(&mut self, name: &str) -> Value {
        let line = tokio::time::timeout(REPORT_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no report from the browser script for {name:?}"))
            .expect("reading the browser script")
            .unwrap_or_else(|| panic!("the browser script exited before step {name:?}"));
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("browser script printed {line:?}: {e}"));
        assert_eq!(report["step"], name, "unexpected report: {report}");
        assert_eq!(report["ok"], true, "step {name} failed: {report}");
        report
    }

    /// One JSON line to the script's stdin.
    async fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("browser script alive");
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the script to exit, and insists it succeeded.
    async fn exited(mut self) {
        let status = tokio::time::timeout(REPORT_TIMEOUT, self.child.wait())
            .await
            .expect("the browser script did not exit")
            .expect("waiting for the browser script");
        assert!(status.success(), "browser script exited with {status}");
    }
}
