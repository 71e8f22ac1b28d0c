//! The `switchyard` binary, run as a user would.

use std::process::{Command, Output};

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env(
            "SWITCHYARD_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
        )
        .output()
        .expect("running switchyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn demo_runs_every_step() {
    let out = switchyard(&["demo", "--once"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for needle in [
        "greeting=\"welcome\"",
        "403: action `fetch` requires role `operator`",
        "\"authenticated\":true",
        "secret visible to the plugin or the caller: false",
        "\"denied\"",
        "first: 200",
        "again: 200",
        "duplicate=true",
        "wrong token: 401",
        "processed by the plugin 1 time(s)",
        "kind=\"webhook\",outcome=\"ok\"} 1",
        "kind=\"job\",outcome=\"ok\"} 1",
        "by external key",
        "pulled again: 0 new",
        "is fulfilled (ticket state closed_complete, comment \"Role granted\")",
        "\"CHKP_Status_Provisioned\", \"CHKP_Risk_High\"]",
        "All steps passed",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    // echo, fetch, fetch (denied inside), and one or more polls of the
    // webhook's count: as many as it took the worker.
    let actions = r#"instance="echo-1",plugin="echo",kind="action",outcome="ok"} "#;
    let n: u64 = stdout
        .lines()
        .find_map(|l| l.split_once(actions)?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("no echo action count in:\n{stdout}"));
    assert!(n >= 4, "{n} echo actions counted:\n{stdout}");
}

#[test]
fn inspect_prints_the_manifest_as_json() {
    let out = switchyard(&["plugin", "inspect", "bundled:echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["id"], "echo");
    assert_eq!(manifest["actions"][1]["required_role"], "operator");

    // The settings schema is read with the manifest and shown with it.
    let out = switchyard(&["plugin", "inspect", "bundled:mtd-tagging"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = |k: &str| {
        manifest["config"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == k)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        key("delete_after_syncs")["schema"],
        serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100})
    );
    assert_eq!(key("import_pii")["schema"]["type"], "boolean");
    assert_eq!(
        manifest["jobs"][0]["interval_schema"],
        serde_json::json!({"type": "integer", "multipleOf": 600})
    );
}

#[test]
fn run_prints_output_and_reports_errors_clearly() {
    let out = switchyard(&[
        "plugin",
        "run",
        "bundled:echo",
        "echo",
        "--input",
        r#"{"x":1}"#,
        "--role",
        "agent",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["input"]["x"], 1);
    assert_eq!(v["context"]["actor"]["roles"][0], "agent");

    let out = switchyard(&["plugin", "run", "bundled:echo", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has no action named `nope`"));

    let out = switchyard(&["plugin", "inspect", "/nonexistent.wasm"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read plugin /nonexistent.wasm"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"not wasm").unwrap();
    let out = switchyard(&["plugin", "inspect", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a valid wasm component"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 14: `plugin run` also delivers a webhook (body from standard
/// input, headers, method, query) and runs a job; storage persists across
/// runs with `--data-dir`; an action's required role is enforced as the
/// daemon enforces it.
#[test]
fn run_delivers_webhooks_runs_jobs_and_enforces_roles() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plugin", "run", "bundled:echo", "--webhook", "inbound"])
        .args(["--body", "-", "--header", "Content-Type: application/json"])
        .args(["--method", "PUT", "--query", "a=1"])
        .env(
            "SWITCHYARD_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"hello":"world"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], r#"{"hello":"world"}"#, "{answer}");
    assert_eq!(answer["headers"]["x-echo-method"], "PUT", "{answer}");

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    for n in 1..=2 {
        let out = switchyard(&[
            "plugin",
            "run",
            "bundled:echo",
            "--job",
            "tick",
            "--data-dir",
            dir,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), format!("tick run {n}"));
    }

    let out = switchyard(&["plugin", "run", "bundled:echo", "fetch", "--role", "agent"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "action `fetch` requires role `operator`; the actor's roles are [agent] (add --role operator)"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = switchyard(&["plugin", "run", "bundled:echo", "echo", "--header", "a: b"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("use them with --webhook ROUTE"));
    let out = switchyard(&["plugin", "run", "bundled:echo", "--job", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no job named `nope`"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 14: `plugin new` writes a plugin crate outside the workspace that
/// builds for wasm32-wasip2 against the SDK, and whose every entry point
/// runs.
#[test]
fn a_scaffolded_plugin_builds_outside_the_workspace_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-plugin");
    let out = switchyard(&[
        "plugin",
        "new",
        "hello-plugin",
        "--dir",
        dir.to_str().unwrap(),
        "--sdk-path",
        repo_root().join("sdk").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A second time into the same directory is refused.
    let again = switchyard(&[
        "plugin",
        "new",
        "hello-plugin",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists and is not empty"),
        "{}",
        text(&again.stderr)
    );
    let bad = switchyard(&[
        "plugin",
        "new",
        "Hello_Plugin",
        "--dir",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        text(&bad.stderr).contains("use lowercase letters, digits and `-`"),
        "{}",
        text(&bad.stderr)
    );

    let wasm = build_scaffolded(&dir, "hello_plugin");
    let wasm = wasm.to_str().unwrap();

    let manifest = inspect_scaffolded(wasm, "hello-plugin");
    // The typed action's schema was generated into the manifest, and the
    // host enforces it.
    assert_eq!(
        manifest["actions"][0]["input_schema"]["required"],
        serde_json::json!(["name"])
    );
    let wrong = switchyard(&["plugin", "run", wasm, "greet", "--input", r#"{"name": 7}"#]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("at `/name`"),
        "{}",
        text(&wrong.stderr)
    );

    greet_scaffolded(wasm, &dir);

    let data = tmp.path().join("data");
    let body = tmp.path().join("event.json");
    std::fs::write(&body, r#"{"id":"e-1"}"#).unwrap();
    let hook = switchyard(&[
        "plugin",
        "run",
        wasm,
        "--webhook",
        "events",
        "--body",
        body.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(hook.status.success(), "{}", text(&hook.stderr));
    assert!(
        text(&hook.stdout).contains("stored e-1"),
        "{}",
        text(&hook.stdout)
    );
    let job = switchyard(&[
        "plugin",
        "run",
        wasm,
        "--job",
        "count",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(job.status.success(), "{}", text(&job.stderr));
    assert_eq!(text(&job.stdout).trim(), "1 event(s) stored");
}

/// `plugin new --sdk-git URL --sdk-rev REV`: the plugin builds against the
/// SDK (and the shared service clients) as git dependencies, cargo resolving the SDK's workspace inheritance
/// and its `../wit` from the whole repository. The repository is a snapshot
/// of this checkout's work tree (so uncommitted changes are covered; in a
/// clean clone it is HEAD), fetched over a `file://` URL: no network.
#[test]
fn a_scaffolded_plugin_builds_with_the_sdk_as_a_git_dependency() {
    // A fixed place and fixed commit dates: the same files give the same
    // commit, so cargo reuses its checkout and the build stays incremental.
    let snapshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-git-snapshot");
    let rev = snapshot_repo(&snapshot);
    let url = format!("file://{}", snapshot.display());

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-git-plugin");
    let out = switchyard(&[
        "plugin",
        "new",
        "hello-git-plugin",
        "--dir",
        dir.to_str().unwrap(),
        "--sdk-git",
        &url,
        "--sdk-rev",
        &rev,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        cargo_toml.contains(&format!(
            "switchyard-sdk = {{ git = {url:?}, rev = {rev:?} }}"
        )),
        "{cargo_toml}"
    );

    // The shared service clients come the same way: a third party's
    // plugin can depend on them too.
    let sdk_line = format!("switchyard-sdk = {{ git = {url:?}, rev = {rev:?} }}");
    let clients = format!(
        "{sdk_line}\nswitchyard-servicenow = {{ git = {url:?}, rev = {rev:?} }}\n\
         switchyard-uem = {{ git = {url:?}, rev = {rev:?} }}"
    );
    std::fs::write(
        dir.join("Cargo.toml"),
        cargo_toml.replace(&sdk_line, &clients),
    )
    .unwrap();
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    // Referenced from a public function, so both clients are compiled and
    // linked into the component, not only resolved.
    std::fs::write(
        dir.join("src/lib.rs"),
        format!(
            "{lib}\n/// Proves the shared clients link.\npub fn clients_link() -> bool {{\n    \
             switchyard_servicenow::Query::new().eq(\"number\", \"INC1\").encode().is_ok()\n        \
             && switchyard_uem::OsFamily::detect(\"iOS 17\", \"Apple\").is_some()\n}}\n"
        ),
    )
    .unwrap();

    let wasm = build_scaffolded(&dir, "hello_git_plugin");
    let wasm = wasm.to_str().unwrap();
    inspect_scaffolded(wasm, "hello-git-plugin");
    greet_scaffolded(wasm, &dir);
}

/// This checkout: the root of the repository.
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Makes `into` (replacing what is there) a git repository of one commit
/// holding the repository's files as they are in the work tree: the tracked
/// ones (less those deleted there) and the new ones git does not ignore, so
/// that a module not yet added is there too; in a clean clone, HEAD. Returns
/// the commit's hash.
fn snapshot_repo(into: &std::path::Path) -> String {
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            // Whatever repository the tests were started from stays out.
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .env("GIT_AUTHOR_DATE", "2000-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2000-01-01T00:00:00Z")
            .output()
            .expect("running git");
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        out.stdout
    };
    let root = repo_root();
    let files = git(
        &root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    );
    if into.exists() {
        std::fs::remove_dir_all(into).unwrap();
    }
    for file in files.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let file = std::str::from_utf8(file).unwrap();
        let from = root.join(file);
        if !from.is_file() {
            continue;
        }
        let to = into.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        match std::fs::copy(&from, &to) {
            // Deleted since it was listed (another test's file, say).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => {
                r.unwrap_or_else(|e| panic!("copying {file}: {e}"));
            }
        }
    }
    git(into, &["init", "-q"]);
    git(into, &["add", "-A"]);
    git(
        into,
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--no-verify",
            "-m",
            "snapshot",
        ],
    );
    text(&git(into, &["rev-parse", "HEAD"])).trim().to_owned()
}

/// Builds the scaffolded plugin in `dir` as an author would, with the
/// toolchain file it was given (into a target directory kept between runs
/// and shared by the scaffold tests, so that only the first build is slow);
/// returns its component, `<crate_name>.wasm`.
fn build_scaffolded(dir: &std::path::Path, crate_name: &str) -> std::path::PathBuf {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let build = Command::new("cargo")
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    target
        .join("wasm32-wasip2/release")
        .join(format!("{crate_name}.wasm"))
}

/// `plugin inspect` of a scaffolded plugin: its manifest, whose id is `id`.
fn inspect_scaffolded(wasm: &str, id: &str) -> serde_json::Value {
    let manifest = switchyard(&["plugin", "inspect", wasm]);
    assert!(manifest.status.success(), "{}", text(&manifest.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["id"], id);
    manifest
}

/// Runs a scaffolded plugin's typed action `greet` with the `instance.json`
/// of its directory `dir`, whose greeting is "Hej".
fn greet_scaffolded(wasm: &str, dir: &std::path::Path) {
    let instance = dir.join("instance.json");
    let greet = switchyard(&[
        "plugin",
        "run",
        wasm,
        "greet",
        "--input",
        r#"{"name":"Ada"}"#,
        "--instance",
        instance.to_str().unwrap(),
    ]);
    assert!(greet.status.success(), "{}", text(&greet.stderr));
    assert!(
        text(&greet.stdout).contains("Hej, Ada"),
        "{}",
        text(&greet.stdout)
    );
}

/// `switchyard migrate --check` on the embedded SQLite database: pending
/// (exit 3) before the database exists, nothing created by the check;
/// `migrate` creates and migrates it; then the check passes.
#[test]
fn migrate_check_reports_pending_then_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    let cfg = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = switchyard(args);
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    };
    let (code, out) = run(&["migrate", "--config", cfg, "--check"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("is at schema version 0"), "{out}");
    assert!(
        !dir.path().join("data/switchyard.db").exists(),
        "a check changes nothing"
    );
    let (code, out) = run(&["migrate", "--config", cfg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("migrated to"), "{out}");
    assert!(
        !dir.path().join("data/master.key").exists(),
        "migrating makes no key"
    );
    let (code, out) = run(&["migrate", "--config", cfg, "--check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("up to date"), "{out}");
}
