//! Plugins written in Python and JavaScript run unmodified beside Rust.
//!
//! The example plugin `incident-watch` (plugins/examples) exists three
//! times: in Python (built here with componentize-py), in JavaScript (built
//! with ComponentizeJS) and in Rust (the SDK). Each is built from source,
//! put in the daemon's `plugin_dir` and driven through the real daemon
//! against the ServiceNow and Slack simulators: every entry point, a
//! credential the plugin never sees, an egress denial, a storage quota and
//! a deadline, the same for the three. A JavaScript build that keeps
//! `wasi:http` is refused at load, naming the import.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};
use switchyard_sim::common::{Fault, FaultKind};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_sim::slack::{Slack, SlackConfig};

/// The three builds: (instance prefix, plugin id).
const LANGS: [(&str, &str); 3] = [
    ("py", "py-incident-watch"),
    ("js", "js-incident-watch"),
    ("rs", "rs-incident-watch"),
];

fn built_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples")
}

/// Runs `plugins/examples/build.sh LANG OUT` (which installs the pinned
/// compiler on first use) and panics with its output if it fails.
fn build_example(lang: &str, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples/build.sh");
    let run = Command::new("bash")
        .arg(&script)
        .arg(lang)
        .arg(out)
        .output()
        .expect("running plugins/examples/build.sh");
    assert!(
        run.status.success(),
        "building the {lang} example failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A plugin directory with the three builds as `<id>.wasm`, made once per
/// test binary (the Python and JavaScript builds take seconds each).
fn plugin_files() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = built_dir().join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        build_example("python", &dir.join("py-incident-watch.wasm"));
        build_example("javascript", &dir.join("js-incident-watch.wasm"));
        std::fs::copy(
            switchyard_tests::guests::EXAMPLE_RUST_INCIDENT_WATCH,
            dir.join("rs-incident-watch.wasm"),
        )
        .unwrap();
        dir
    })
}

/// `[[instance]]` of `plugin` against `sn` and `slack` (its `channel`),
/// with `extra` appended to the instance's table (e.g. limits).
fn instance(
    id: &str,
    plugin: &str,
    sn: &ServiceNow,
    servicenow_url: &str,
    slack: &Slack,
    channel: &str,
    extra: &str,
) -> String {
    format!(
        r#"[[instance]]
id = "{id}"
plugin = "{plugin}"
egress = ["{sn}", "{slack}"]
{extra}
[instance.config]
servicenow_url = "{servicenow_url}"

[instance.credentials.servicenow]
kind = "basic"
hosts = ["{sn}"]
username = "{user}"
password = "secret:sn-password"

[instance.credentials.slack]
kind = "secret-url"
hosts = ["{slack}"]
url = "secret:slack-{channel}"

[instance.webhooks.incident]
token = "secret:hook-token"

"#,
        sn = sn.url(),
        slack = slack.url(),
        user = sn.config().username,
    )
}

struct Env {
    sn: ServiceNow,
    slow: ServiceNow,
    slack: Slack,
    _dir: tempfile::TempDir,
    d: Daemon,
    token: String,
    stderr: PathBuf,
}

/// Per language `<lang>`: the instance `<lang>` (the happy path), `<lang>-
/// denied` (its ServiceNow URL is outside the egress allowlist),
/// `<lang>-quota` (at most two storage keys), `<lang>-slow` (a ServiceNow
/// that answers after 5 s, a 1 s deadline) and `<lang>-paced` (three
/// outbound requests per call).
async fn setup() -> Env {
    let plugins = plugin_files();
    let sn = ServiceNow::start(ServiceNowConfig::default(), 1, 2, 0)
        .await
        .unwrap();
    let slow = ServiceNow::start(ServiceNowConfig::default(), 2, 2, 0)
        .await
        .unwrap();
    slow.control().inject(Fault::on(
        "/api/now/table",
        FaultKind::SlowAnswer { ms: 5_000 },
    ));
    let channels: Vec<String> = LANGS
        .iter()
        .flat_map(|(l, _)| [(*l).to_owned(), format!("{l}-other"), format!("{l}-paced")])
        .collect();
    let slack = Slack::start(SlackConfig {
        channels: channels.clone(),
        archived: Vec::new(),
        burst: 100,
        per_second: 100.0,
    })
    .await
    .unwrap();
    let mut tenant = String::new();
    for (lang, plugin) in LANGS {
        let other = format!("{lang}-other");
        tenant += &instance(lang, plugin, &sn, &sn.url(), &slack, lang, "");
        tenant += &instance(
            &format!("{lang}-denied"),
            plugin,
            &sn,
            "http://198.51.100.7",
            &slack,
            &other,
            "",
        );
        tenant += &instance(
            &format!("{lang}-quota"),
            plugin,
            &sn,
            &sn.url(),
            &slack,
            &other,
            "limits = { storage_keys = 2 }\n",
        );
        tenant += &instance(
            &format!("{lang}-slow"),
            plugin,
            &slow,
            &slow.url(),
            &slack,
            &other,
            "limits = { deadline = 1000 }\n",
        );
        tenant += &instance(
            &format!("{lang}-paced"),
            plugin,
            &sn,
            &sn.url(),
            &slack,
            &format!("{lang}-paced"),
            "limits = { http_requests = 3 }\n",
        );
    }
    let mut secrets = vec![
        ("sn-password", sn.config().password.clone()),
        ("hook-token", "hook-t0ken".to_owned()),
    ];
    let names: Vec<String> = channels.iter().map(|c| format!("slack-{c}")).collect();
    for (c, name) in channels.iter().zip(&names) {
        secrets.push((name.as_str(), slack.webhook_url(c)));
    }
    let server = format!(
        "data_dir = \"data\"\nplugin_dir = \"{}\"\n",
        plugins.display()
    );
    let (dir, token) = acme_with_server(&server, &tenant, &secrets);
    // The daemon's log, read at the end: no secret may be in it.
    let stderr = dir.path().join("daemon.log");
    let d = start_logging_to(dir.path(), &stderr);
    Env {
        sn,
        slow,
        slack,
        _dir: dir,
        d,
        token,
        stderr,
    }
}

/// Starts `serve` with its standard error (the log) in `log`.
fn start_logging_to(cfg: &Path, log: &Path) -> Daemon {
    let child = bin()
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen"])
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    listening(child)
}

impl Env {
    async fn announce(&self, instance: &str, number: &str) -> (u16, Value) {
        let path = format!("/v1/tenants/acme/instances/{instance}/actions/announce");
        act(
            &self.d,
            &self.token,
            &path,
            &[],
            json!({ "number": number }),
        )
        .await
    }

    fn texts(&self, channel: &str) -> Vec<String> {
        self.slack
            .messages(channel)
            .into_iter()
            .filter_map(|m| m.text)
            .collect()
    }
}

fn base(instance: &str) -> String {
    format!("/v1/tenants/acme/instances/{instance}")
}

fn incident(sn: &ServiceNow, priority: &str, what: &str) -> Value {
    sn.insert(
        "incident",
        &[("priority", priority), ("short_description", what)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_language_serves_every_entry_point_alike() {
    let env = setup().await;
    let urgent = incident(&env.sn, "1", "Mail is down");
    let minor = incident(&env.sn, "4", "Printer jam");
    let number = urgent["number"].as_str().unwrap();
    let expected = format!("*{number}* (P1) Mail is down");

    let hooked = incident(&env.sn, "2", "VPN flapping");
    let hooked_text = format!("*{}* (P2) VPN flapping", hooked["number"].as_str().unwrap());

    for (lang, _) in LANGS {
        // The typed action: ServiceNow read with the host's credential,
        // Slack written through the secret URL, once.
        let (status, out) = env.announce(lang, number).await;
        assert_eq!(status, 200, "{lang}: {out}");
        assert_eq!(out["output"]["announced"], true, "{lang}: {out}");
        assert_eq!(out["output"]["sys_id"], urgent["sys_id"], "{lang}: {out}");
        assert_eq!(env.texts(lang), std::slice::from_ref(&expected), "{lang}");
        let (status, out) = env.announce(lang, number).await;
        assert_eq!(status, 200, "{lang}: {out}");
        assert_eq!(out["output"]["announced"], false, "{lang}: {out}");
        assert_eq!(env.texts(lang).len(), 1, "{lang}: announced twice");

        // Typed errors cross the boundary as the WIT variants: the input
        // schema refuses before the plugin runs, the plugin's `not-found`
        // is a 404.
        let (status, out) = env.announce(lang, "no such").await;
        assert_eq!(status, 422, "{lang}: {out}");
        assert!(out.to_string().contains("/number"), "{lang}: {out}");
        let (status, out) = env.announce(lang, "INC9999999").await;
        assert_eq!(status, 404, "{lang}: {out}");
        assert!(
            out.to_string().contains("no incident INC9999999"),
            "{lang}: {out}"
        );

        // The queued webhook: a business rule's post is announced.
        let (status, out) = post(
            &env.d,
            &format!("/hooks/acme/{lang}/incident"),
            None,
            &[("x-switchyard-token", "hook-t0ken")],
            &hooked.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{lang}: {out}");
        eventually(&format!("{lang}: the webhook's announcement"), || async {
            env.texts(lang).contains(&hooked_text).then_some(())
        })
        .await;

        // The job: of the incidents of priority 1 to `min_priority` (2),
        // both were announced already; the P4 one is left out.
        let job = run_job(&env.d, &env.token, &base(lang), "poll").await;
        assert_eq!(job["last_outcome"], "ok", "{lang}: {job}");
        let summary = job["last_summary"].as_str().unwrap();
        assert!(
            summary.starts_with("announced 0 of 2 incidents; cursor "),
            "{lang}: {summary}"
        );
    }

    // A new incident: the next run of each announces it, and only it (the
    // cursor kept from the last run; the markers keep an incident updated
    // in the cursor's second from being announced again).
    let fresh = incident(&env.sn, "1", "Disk full");
    let fresh_text = format!("*{}* (P1) Disk full", fresh["number"].as_str().unwrap());
    for (lang, _) in LANGS {
        let job = run_job(&env.d, &env.token, &base(lang), "poll").await;
        let summary = job["last_summary"].as_str().unwrap();
        assert!(summary.starts_with("announced 1 of "), "{lang}: {summary}");
        let texts = env.texts(lang);
        assert_eq!(
            texts,
            [expected.clone(), hooked_text.clone(), fresh_text.clone()],
            "{lang}"
        );
        assert!(
            !texts
                .iter()
                .any(|t| t.contains(minor["number"].as_str().unwrap())),
            "{lang}: a P4 incident was announced: {texts:?}"
        );
    }
    // The three did the same work: the same messages, in the same order.
    assert_eq!(env.texts("py"), env.texts("rs"));
    assert_eq!(env.texts("js"), env.texts("rs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_holds_for_each_language() {
    let env = setup().await;
    let a = incident(&env.sn, "1", "First");
    let b = incident(&env.sn, "1", "Second");
    let c = incident(&env.sn, "1", "Third");
    let slow = incident(&env.slow, "1", "Slow");
    let numbers = [&a, &b, &c].map(|i| i["number"].as_str().unwrap().to_owned());

    for (lang, _) in LANGS {
        // Egress: a ServiceNow URL outside the allowlist is refused by the
        // host, and the plugin reports it as an upstream error.
        let (status, out) = env.announce(&format!("{lang}-denied"), &numbers[0]).await;
        assert_eq!(status, 502, "{lang}: {out}");
        assert!(out.to_string().contains("egress denied"), "{lang}: {out}");

        // Storage quota: two keys; the third announcement's marker does not
        // fit, and the plugin maps `quota-exceeded` to `conflict` (409).
        for n in &numbers[..2] {
            let (status, out) = env.announce(&format!("{lang}-quota"), n).await;
            assert_eq!(status, 200, "{lang}: {out}");
        }
        let (status, out) = env.announce(&format!("{lang}-quota"), &numbers[2]).await;
        assert_eq!(status, 409, "{lang}: {out}");
        assert!(out.to_string().contains("storage"), "{lang}: {out}");

        // Deadline: ServiceNow answers after 5 s; the call ends at 1 s.
        let before = env.slow.control().requests().len();
        let (status, out) = env
            .announce(&format!("{lang}-slow"), slow["number"].as_str().unwrap())
            .await;
        assert_eq!(status, 504, "{lang}: {out}");
        assert!(
            env.slow.control().requests().len() > before,
            "{lang}: the request never reached ServiceNow"
        );
    }

    // The invocation interface: with three requests a call, a poll run
    // looks up and announces one incident, sees it has one request left,
    // and asks to run again; the runs it asked for announce the rest.
    for (lang, _) in LANGS {
        let paced = base(&format!("{lang}-paced"));
        let job = run_job(&env.d, &env.token, &paced, "poll").await;
        let summary = job["last_summary"].as_str().unwrap();
        assert!(
            summary.starts_with("announced 1 of 3 "),
            "{lang}: {summary}"
        );
        let channel = format!("{lang}-paced");
        eventually(&format!("{lang}: the runs asked for"), || async {
            (env.texts(&channel).len() == 3).then_some(())
        })
        .await;
        let runs = job_stats(&env.d, &env.token, &paced, "poll").await["runs"]
            .as_i64()
            .unwrap();
        assert!(runs >= 3, "{lang}: {runs} runs");
    }

    // The credentials: ServiceNow saw the Basic credential on every request
    // the plugins made, yet no output, message or log line holds it.
    let password = env.sn.config().password.clone();
    let requests = env.sn.control().requests();
    assert!(!requests.is_empty());
    for r in &requests {
        let auth = r
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        assert!(
            auth.is_some_and(|a| a.starts_with("Basic ")),
            "{} {}: {auth:?}",
            r.method,
            r.path
        );
    }
    let slack_secret = env.slack.webhook_url("py");
    let slack_path = slack_secret.rsplit('/').next().unwrap().to_owned();
    let (status, out) = env.announce("py", &numbers[1]).await;
    assert_eq!(status, 200, "{out}");
    let mut seen = out.to_string();
    for (lang, _) in LANGS {
        seen += &env.texts(lang).join("\n");
    }
    let log = std::fs::read_to_string(&env.stderr).unwrap();
    // The plugins' own records reached the daemon's log (with their fields).
    for (lang, _) in LANGS {
        assert!(
            log.lines()
                .any(|l| l.contains("announced") && l.contains(&format!("instance={lang}-quota "))),
            "no `announced` record of {lang} in the log:\n{log}"
        );
    }
    seen += &log;
    assert!(!seen.contains(&password), "the ServiceNow password leaked");
    assert!(
        !seen.contains(&slack_path),
        "the Slack webhook secret leaked"
    );
}

#[test]
fn a_component_importing_wasi_http_is_refused_naming_the_import() {
    // ComponentizeJS with its default features imports wasi:http (for
    // `fetch`); Switchyard does not provide it.
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples/js-incident-watch");
    plugin_files(); // installs the pinned ComponentizeJS
    let out = built_dir().join("js-with-http.wasm");
    let script = format!(
        "import {{ componentize }} from '@bytecodealliance/componentize-js';\n\
         import {{ writeFile }} from 'node:fs/promises';\n\
         const {{ component }} = await componentize({{ sourcePath: 'app.js', witPath: '../../../wit', \
         worldName: 'plugin-with-settings' }});\n\
         await writeFile({:?}, component);\n",
        out.display()
    );
    let run = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let inspect = bin()
        .args(["plugin", "inspect"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!inspect.status.success());
    let err = String::from_utf8_lossy(&inspect.stderr);
    assert!(
        err.contains("imports `wasi:http/") && err.contains("which Switchyard does not provide"),
        "{err}"
    );
}

/// With an empty compile cache, `serve` answers at once: the bundled
/// plugins and the 19 MB Python component compile in the background,
/// smallest first. Meanwhile another tenant's small plugin is served while
/// the Python instance answers 503 `plugin_compiling` with `Retry-After`,
/// its status says `compiling`, and `/readyz` is 200 (`?plugins=all`: 503);
/// then the Python instance is swapped in and serves, with nothing else
/// done.
#[tokio::test(flavor = "multi_thread")]
async fn a_cold_compile_does_not_hold_up_other_tenants() {
    let built = plugin_files();
    let sn = ServiceNow::start(ServiceNowConfig::default(), 3, 2, 0)
        .await
        .unwrap();
    let slack = Slack::start(SlackConfig {
        channels: vec!["py".into()],
        archived: Vec::new(),
        burst: 100,
        per_second: 100.0,
    })
    .await
    .unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        built.join("py-incident-watch.wasm"),
        plugins.path().join("py-incident-watch.wasm"),
    )
    .unwrap();
    let server = format!(
        "data_dir = \"data\"\nplugin_dir = \"{}\"\n",
        plugins.path().display()
    );
    let tenant = instance("py", "py-incident-watch", &sn, &sn.url(), &slack, "py", "");
    let secrets = [
        ("sn-password", sn.config().password.clone()),
        ("hook-token", "hook-t0ken".to_owned()),
        ("slack-py", slack.webhook_url("py")),
    ];
    let (dir, acme) = acme_with_server(&server, &tenant, &secrets);
    std::fs::write(
        dir.path().join("tenants/other.toml"),
        "[[instance]]\nid = \"echo\"\nplugin = \"echo\"\n",
    )
    .unwrap();
    let other = token(dir.path(), "other");
    let cache = tempfile::tempdir().unwrap();
    let child = bin()
        .args([
            "serve",
            "--config",
            dir.path().to_str().unwrap(),
            "--listen",
        ])
        .arg("127.0.0.1:0")
        .env("SWITCHYARD_CACHE_DIR", cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = listening_now(child);

    // The other tenant's echo (the smallest plugin, compiled first) serves.
    let echo = "/v1/tenants/other/instances/echo/actions/echo";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let (status, out) = act(&d, &other, echo, &[], json!({"hi": 1})).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{out}");
        assert_eq!(out["error"]["code"], "plugin_compiling", "{out}");
        assert!(std::time::Instant::now() < until, "echo never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ... while Python still compiles: its instance waits, visibly.
    let announce = format!("{}/actions/announce", base("py"));
    let resp = reqwest::Client::new()
        .post(format!("{}{announce}", d.base))
        .bearer_auth(&acme)
        .json(&json!({"input": {"number": "INC0000001"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["error"]["code"], "plugin_compiling", "{out}");
    assert!(
        out.to_string().contains("plugin `py-incident-watch` (")
            && out.to_string().contains("is being compiled"),
        "{out}"
    );
    let (_, status) = get(&d, &format!("{}/status", base("py")), Some(&acme)).await;
    assert_eq!(status["state"], "compiling", "{status}");
    // (Python and the bundled plugins larger than echo.)
    let (code, body) = get_blocking(&d.base, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("ready; compiling ") && body.ends_with(" plugin(s)"),
        "{body}"
    );
    assert_eq!(get_blocking(&d.base, "/readyz?plugins=all").0, 503);

    // Once compiled it is swapped in and serves, with nothing else done.
    let urgent = incident(&sn, "1", "Mail is down");
    let number = urgent["number"].as_str().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let out = loop {
        let (status, out) = act(&d, &acme, &announce, &[], json!({ "number": number })).await;
        if status != 503 {
            assert_eq!(status, 200, "{out}");
            break out;
        }
        assert_eq!(out["error"]["code"], "plugin_compiling", "{out}");
        assert!(std::time::Instant::now() < until, "Python never served");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(out["output"]["announced"], true, "{out}");
    assert_eq!(get_blocking(&d.base, "/readyz"), (200, "ready".to_owned()));
    assert_eq!(get_blocking(&d.base, "/readyz?plugins=all").0, 200);
    assert!(
        std::fs::read_dir(cache.path()).unwrap().count() >= 2,
        "the compiled plugins are in the cache"
    );
}
