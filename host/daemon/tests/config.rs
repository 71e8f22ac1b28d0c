//! `switchyard check`, `secret` and `invoke` on configuration directories.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn switchyard(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .env(
            "SWITCHYARD_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
        )
        .env_remove("SWITCHYARD_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // A command that fails before reading its input (an unknown tenant)
    // may exit before this write: its status and output are what counts.
    if let Err(e) = pipe.write_all(stdin.unwrap_or("").as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SERVER: &str = "listen = \"127.0.0.1:9090\"\ndata_dir = \"data\"\n";

const GOOD_TENANT: &str = r#"[roles]
"ITIL Agent" = ["operator"]

[[instance]]
id = "echo-1"
plugin = "echo"
egress = ["https://api.example.com"]

[instance.config]
greeting = "hej"

[instance.credentials.upstream]
kind = "bearer"
hosts = ["https://api.example.com"]
token = "secret:echo-token"

[instance.jobs.tick]
interval = 600
"#;

fn config_dir(server: &str, tenants: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), server).unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    for (name, body) in tenants {
        std::fs::write(
            dir.path().join("tenants").join(format!("{name}.toml")),
            body,
        )
        .unwrap();
    }
    dir
}

fn check(dir: &Path) -> (bool, String) {
    let out = switchyard(&["check", "--config", dir.to_str().unwrap()], None, &[]);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn a_good_configuration_passes_with_a_summary() {
    let dir = config_dir(SERVER, &[("acme", GOOD_TENANT)]);
    let cfg = dir.path().to_str().unwrap();
    let out = switchyard(
        &["secret", "--config", cfg, "set", "acme", "echo-token"],
        Some("tok-value\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, out) = check(dir.path());
    assert!(ok, "{out}");
    assert!(
        out.contains("acme/echo-1: plugin echo, 1 role mapping(s), jobs: tick every 600 s"),
        "{out}"
    );
    assert!(
        out.contains("OK (1 tenant(s), 1 instance(s); listen 127.0.0.1:9090, production mode)"),
        "{out}"
    );
}

#[test]
fn check_resolves_every_secret_and_env_reference_without_printing_values() {
    let tenant = format!(
        "{GOOD_TENANT}
[instance.webhooks.inbound]
hmac_secret = \"env:SY_CHECK_HOOK_SECRET\"
"
    );
    let dir = config_dir(SERVER, &[("acme", &tenant)]);
    let cfg = dir.path().to_str().unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = switchyard(&["check", "--config", cfg], None, env);
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };

    // No data directory yet: nothing is created, and both references are
    // reported where they are.
    let (ok, out) = run(&[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "tenants/acme.toml:12: instance[0].credentials.upstream.token: secret `echo-token` \
             cannot be read: there is no state database at"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "tenants/acme.toml:20: instance[0].webhooks.inbound.hmac_secret: environment \
             variable `SY_CHECK_HOOK_SECRET` is not set"
        ),
        "{out}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "check created the data directory"
    );

    // Another secret of the tenant exists: the missing one is still named.
    let set = |name: &str, value: &str| {
        let out = switchyard(
            &["secret", "--config", cfg, "set", "acme", name],
            Some(value),
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    set("other", "x");
    let (ok, out) = run(&[("SY_CHECK_HOOK_SECRET", "hook-value")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "instance[0].credentials.upstream.token: secret `echo-token` is not in the secret store"
        ),
        "{out}"
    );
    assert!(!out.contains("SY_CHECK_HOOK_SECRET"), "{out}");

    // Both resolve: check passes and prints neither value.
    set("echo-token", "tok-value");
    let (ok, out) = run(&[("SY_CHECK_HOOK_SECRET", "hook-value")]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("tok-value") && !out.contains("hook-value"),
        "{out}"
    );
}

#[test]
fn broken_configurations_are_reported_with_file_line_and_field() {
    /// (what, switchyard.toml, tenant files, expected lines or fragments)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "server syntax error",
            "listen = \"127.0.0.1:9090\"\ndata_dir = [\n",
            &[],
            &["switchyard.toml:2: (file): "],
        ),
        (
            "bad listen address",
            "listen = \"localhost\"\n",
            &[],
            &["switchyard.toml:1: listen: `localhost` is not an address like 127.0.0.1:8080"],
        ),
        (
            "PostgreSQL storage settings",
            "data_dir = \"data\"\n\n[storage]\nbackend = \"postgres\"\n\
             url = \"postgres://sy:hunter2@db.internal/sy\"\npassword = \"hunter3\"\n\
             pool_size = 0\nschema = \"1x; drop\"\ntls = \"off\"\nca_file = \"ca.pem\"\n",
            &[],
            &[
                "switchyard.toml:3: storage.ca_file: is for verifying the server's certificate, but `tls = \"off\"`",
                "switchyard.toml:3: storage.pool_size: must be at least 1",
                "switchyard.toml:3: storage.schema: ",
                "switchyard.toml:3: storage.url: holds a password, which production mode does not allow in a file",
                "switchyard.toml:3: storage.password: a literal password is not allowed in production mode",
            ],
        ),
        (
            "an unknown TLS mode",
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://sy@db.internal/sy\"\ntls = \"maybe\"\n",
            &[],
            &[
                "switchyard.toml:1: storage.tls: `maybe` is not a TLS mode: use \"verify\" (encrypted, certificate checked) or \"off\"",
            ],
        ),
        (
            "unknown field",
            SERVER,
            &[(
                "acme",
                "[[instance]]\nid = \"e\"\nplugin = \"echo\"\negres = []\n",
            )],
            &["tenants/acme.toml:", "egres", "unknown field"],
        ),
        (
            "unknown config key, interval out of range, literal secret",
            SERVER,
            &[(
                "acme",
                "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n\n[instance.config]\ncolour = \"red\"\n\n\
                 [instance.credentials.upstream]\nkind = \"bearer\"\nhosts = [\"https://a.example.com\"]\ntoken = \"hunter2\"\n\n\
                 [instance.jobs.tick]\ninterval = 30\n",
            )],
            &[
                "tenants/acme.toml:6: instance[0].config.colour: plugin `echo` has no config key `colour`",
                "tenants/acme.toml:8: instance[0].credentials.upstream.token: literal secrets are not allowed in production mode",
            ],
        ),
        (
            "manifest checks",
            SERVER,
            &[(
                "acme",
                "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n\n[instance.config]\ncolour = \"red\"\n\n\
                 [instance.jobs.tick]\ninterval = 30\n\n[instance.jobs.nightly]\ninterval = 600\n\n\
                 [[instance]]\nid = \"x\"\nplugin = \"nope\"\n",
            )],
            &[
                "tenants/acme.toml:6: instance[0].config.colour: plugin `echo` has no config key `colour`",
                "tenants/acme.toml:9: instance[0].jobs.tick.interval: 30 s is outside the allowed range 60..=3600 s",
                "instance[0].jobs.nightly: plugin `echo` has no job `nightly`",
                // The list names every installed plugin, echo among them.
                "tenants/acme.toml:16: instance[1].plugin: no plugin `nope` is installed (available: access-tickets, app-approval, echo, mtd-tagging, ",
            ],
        ),
        (
            "values the plugins' settings schemas refuse",
            SERVER,
            &[(
                "acme",
                "[[instance]]\nid = \"s\"\nplugin = \"session-import\"\n\n[instance.config]\n\
                 site_url = \"https://support.acme.example\"\nservicenow_url = \"ftp://acme\"\n\
                 events_to_import = \"Chat Message; Coffee Break\"\nwindow_minutes = \"0\"\n\n\
                 [[instance]]\nid = \"m\"\nplugin = \"mtd-tagging\"\n\n[instance.config]\n\
                 api_url = \"https://uem.example\"\nmtd_url = \"https://mtd.example\"\n\
                 deletion_threshold_pct = \"150\"\nimport_pii = \"maybe\"\n\n\
                 [instance.jobs.device-sync]\ninterval = 900\n",
            )],
            &[
                "tenants/acme.toml:7: instance[0].config.servicenow_url: `ftp://acme` is not an http(s) URL such as https://host.example.com",
                "tenants/acme.toml:8: instance[0].config.events_to_import: `Coffee Break` is not one of: all, none, Session Start, Session End, ",
                "tenants/acme.toml:9: instance[0].config.window_minutes: 0 is less than the minimum of 1",
                "tenants/acme.toml:18: instance[1].config.deletion_threshold_pct: 150 is greater than the maximum of 100",
                "tenants/acme.toml:19: instance[1].config.import_pii: `maybe` is not `true` or `false`",
                "tenants/acme.toml:22: instance[1].jobs.device-sync.interval: 900 s is not allowed: 900 is not a multiple of 600",
            ],
        ),
        (
            "egress, duplicate id, bad tenant name",
            SERVER,
            &[
                (
                    "acme",
                    "[[instance]]\nid = \"e\"\nplugin = \"echo\"\negress = [\"ftp://x.example.com\"]\n\n\
                     [[instance]]\nid = \"e\"\nplugin = \"echo\"\n",
                ),
                ("Bad Name", ""),
            ],
            &[
                "tenants/acme.toml:4: instance[0].egress[0]: egress entry `ftp://x.example.com`: scheme must be http or https",
                "tenants/acme.toml:7: instance[1].id: `e` is already used by instance[0]",
                "tenants/Bad Name.toml:1: (file name): tenant id `Bad Name`",
            ],
        ),
        (
            "storage backend and job concurrency",
            "data_dir = \"data\"\n[storage]\nbackend = \"mysql\"\n\n[jobs]\nper_tenant = 0\n",
            &[("acme", "max_concurrent_jobs = 0\n")],
            &[
                // The value is left out: it could be a secret pasted in the wrong place.
                "switchyard.toml:3: (file): unknown variant, expected `sqlite` or `postgres`",
                "tenants/acme.toml:1: max_concurrent_jobs: must be at least 1",
            ],
        ),
        (
            "secret-url on several hosts",
            SERVER,
            &[(
                "acme",
                "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n\n\
                 [instance.credentials.upstream]\nkind = \"secret-url\"\n\
                 hosts = [\"https://hooks.slack.com\", \"https://*.slack.com\"]\nurl = \"secret:hook\"\n",
            )],
            &[
                "tenants/acme.toml:5: instance[0].credentials.upstream.hosts: a secret-url credential takes exactly one host",
            ],
        ),
        (
            "zero workers",
            "[jobs]\nworkers = 0\n",
            &[],
            &["switchyard.toml:1: jobs.workers: must be at least 1"],
        ),
        (
            "a lease too short to renew",
            "[jobs]\nlease_secs = 2\n",
            &[],
            &[
                "switchyard.toml:1: jobs.lease_secs: must be at least 3: a running job renews its lease every third of it",
            ],
        ),
    ];
    for (what, server, tenants, needles) in cases {
        let dir = config_dir(server, tenants);
        let (ok, out) = check(dir.path());
        assert!(!ok, "{what}: check passed:\n{out}");
        for needle in *needles {
            assert!(
                out.contains(needle),
                "{what}: missing `{needle}` in:\n{out}"
            );
        }
        assert!(
            !out.contains("hunter2"),
            "{what}: a literal secret was echoed:\n{out}"
        );
    }
}

#[test]
fn secrets_feed_configured_instances() {
    let dir = config_dir(SERVER, &[("acme", GOOD_TENANT)]);
    let cfg = dir.path().to_str().unwrap();

    // Before the secret exists, invoking says which one is missing.
    let out = switchyard(
        &["invoke", "--config", cfg, "acme", "echo-1", "credentials"],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("secret `echo-token` is not in the secret store"),
        "{}",
        text(&out.stderr)
    );

    let out = switchyard(
        &["secret", "--config", cfg, "set", "acme", "echo-token"],
        Some("tok-value\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = dir.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let db = std::fs::read(dir.path().join("data/switchyard.db")).unwrap();
    assert!(
        !db.windows(9).any(|w| w == b"tok-value"),
        "the secret is stored in plain text"
    );

    let out = switchyard(&["secret", "--config", cfg, "list", "acme"], None, &[]);
    assert!(
        text(&out.stdout).starts_with("echo-token\t"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("tok-value"));

    let out = switchyard(
        &["invoke", "--config", cfg, "acme", "echo-1", "config"],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["greeting"], "hej");

    let out = switchyard(
        &["invoke", "--config", cfg, "acme", "echo-1", "credentials"],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["credentials"][0]["name"], "upstream");
    assert!(!text(&out.stdout).contains("tok-value"));

    // Another tenant cannot be addressed, and deletion works once.
    let out = switchyard(
        &["secret", "--config", cfg, "set", "globex", "x"],
        Some("v"),
        &[],
    );
    assert!(text(&out.stderr).contains("no tenant `globex`"));
    let out = switchyard(
        &["secret", "--config", cfg, "delete", "acme", "echo-token"],
        None,
        &[],
    );
    assert!(out.status.success());
    let out = switchyard(
        &["secret", "--config", cfg, "delete", "acme", "echo-token"],
        None,
        &[],
    );
    assert!(text(&out.stderr).contains("has no secret `echo-token`"));
}
