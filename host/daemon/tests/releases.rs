//! Signed plugin releases through the real binary: keygen, sign and
//! verify; every refusal named; the daemon loads only verified files and
//! runs for each tenant only what that tenant trusts; a compiled-cache
//! entry never stands in for changed bytes.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::json;
use switchyard::release::{KeyPair, Release, SignedRelease, sha256_hex};

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `verify` of `file` against `acme.pub` in `dir` fails naming `reason`.
fn refused(dir: &Path, file: &Path, reason: &str) {
    let out = run(&[
        "plugin",
        "verify",
        s(file),
        "--key",
        s(&dir.join("acme.pub")),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("refused") && t.contains(reason),
        "expected `{reason}` in:\n{t}"
    );
}

#[test]
fn a_release_is_signed_and_verified_and_each_refusal_names_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(&["plugin", "keygen", "acme", "--dir", s(d)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ed25519:"));
    assert!(text(&out).contains("[trust.publishers]\n  acme = \"ed25519:"));
    // A second keygen under the same name refuses to overwrite.
    assert!(
        !run(&["plugin", "keygen", "acme", "--dir", s(d)])
            .status
            .success()
    );

    let notes = d.join("notes.wasm");
    std::fs::write(&notes, claiming("notes", "1.0.0")).unwrap();
    let out = run(&["plugin", "sign", s(&notes), "--key", s(&d.join("acme.key"))]);
    assert!(out.status.success(), "{}", text(&out));
    let sig = d.join("notes.wasm.sig");
    let signed = SignedRelease::read(&sig).unwrap();
    assert_eq!(
        (
            signed.release.plugin.as_str(),
            signed.release.version.as_str()
        ),
        ("notes", "1.0.0")
    );
    assert!(
        signed
            .release
            .world
            .starts_with("switchyard:plugin/plugin-with-migration@0.1."),
        "{:?}",
        signed.release
    );
    let out = run(&[
        "plugin",
        "verify",
        s(&notes),
        "--key",
        s(&d.join("acme.pub")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("notes 1.0.0 (switchyard:plugin/plugin-with-migration@0.1.")
            && text(&out).contains("signed by `acme`"),
        "{}",
        text(&out)
    );

    // A tampered component.
    let tampered = d.join("tampered.wasm");
    let changed = claiming("notes", "1.0.1");
    std::fs::write(&tampered, &changed).unwrap();
    std::fs::copy(&sig, d.join("tampered.wasm.sig")).unwrap();
    refused(d, &tampered, "the file was changed after it was signed");

    // The signed digest edited to match the new bytes: the signature is
    // over the old digest.
    let mut moved = signed.clone();
    moved.release.sha256 = sha256_hex(&changed);
    std::fs::write(d.join("tampered.wasm.sig"), moved.to_json()).unwrap();
    refused(d, &tampered, "the signature does not verify");

    // A good signature by a key nobody trusts.
    run(&["plugin", "keygen", "mallory", "--dir", s(d)]);
    let out = run(&[
        "plugin",
        "sign",
        s(&notes),
        "--key",
        s(&d.join("mallory.key")),
        "--out",
        s(&d.join("mallory.sig")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&[
        "plugin",
        "verify",
        s(&notes),
        "--signature",
        s(&d.join("mallory.sig")),
        "--key",
        s(&d.join("acme.pub")),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("which is not a trusted publisher key"),
        "{}",
        text(&out)
    );

    // A correctly signed release that names another version or plugin
    // than the component declares.
    let acme = KeyPair::read(&d.join("acme.key")).unwrap();
    for (plugin, version, reason) in [
        (
            "notes",
            "2.0.0",
            "signed for version `2.0.0`, but the component declares `1.0.0`",
        ),
        (
            "other",
            "1.0.0",
            "signed for plugin id `other`, but the component declares `notes`",
        ),
    ] {
        let lie = acme.sign(Release {
            plugin: plugin.into(),
            version: version.into(),
            ..signed.release.clone()
        });
        std::fs::write(&sig, lie.to_json()).unwrap();
        refused(d, &notes, reason);
    }

    // Nothing to trust: a clear error, not a pass.
    let out = run(&["plugin", "verify", s(&notes)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("say whose signatures to trust"));
}

/// A publisher's key pair in `dir`, and its public key as text.
fn publisher(dir: &Path, name: &str) -> String {
    let out = run(&["plugin", "keygen", name, "--dir", s(dir)]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes `plugins/<rel>` with `bytes`, signed with `key` when given.
fn install(root: &Path, rel: &str, bytes: &[u8], key: Option<&Path>) {
    let path = root.join("plugins").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    if let Some(key) = key {
        let out = run(&["plugin", "sign", s(&path), "--key", s(key)]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

#[tokio::test]
async fn the_daemon_runs_for_each_tenant_only_what_it_trusts() {
    let keys = tempfile::tempdir().unwrap();
    let acme_pub = publisher(keys.path(), "acme");
    let other_pub = publisher(keys.path(), "other");
    let mallory = keys.path().join("mallory.key");
    publisher(keys.path(), "mallory");
    let acme = keys.path().join("acme.key");
    let server = format!(
        "data_dir = \"data\"\n[trust.publishers]\nacme = \"{acme_pub}\"\nother = \"{other_pub}\"\n"
    );
    let one = |plugin: &str| format!("[[instance]]\nid = \"n\"\nplugin = \"{plugin}\"\n");
    let dir = config_dir(
        &server,
        &[
            ("open", &one("notes")),
            (
                "strict",
                &format!("require_signed = true\n{}", one("notes")),
            ),
            (
                "picky",
                &format!("trusted_publishers = [\"other\"]\n{}", one("notes")),
            ),
        ],
    );
    let root = dir.path();
    // notes 1.0.0 signed by acme, 1.1.0 unsigned.
    install(
        root,
        "notes/1.0.0.wasm",
        &claiming("notes", "1.0.0"),
        Some(&acme),
    );
    install(root, "notes/1.1.0.wasm", &claiming("notes", "1.1.0"), None);
    // Refused files: changed after signing, signed by an untrusted key, a
    // release naming another version.
    install(
        root,
        "forged/1.0.0.wasm",
        &claiming("forged", "1.0.0"),
        Some(&acme),
    );
    std::fs::write(
        root.join("plugins/forged/1.0.0.wasm"),
        claiming("forged", "1.0.9"),
    )
    .unwrap();
    install(
        root,
        "stranger.wasm",
        &claiming("stranger", "1.0.0"),
        Some(&mallory),
    );
    install(root, "liar.wasm", &claiming("liar", "1.0.0"), None);
    let lie = KeyPair::read(&acme).unwrap().sign(Release {
        plugin: "liar".into(),
        version: "3.0.0".into(),
        world: "switchyard:plugin/plugin@0.1.5".into(),
        sha256: sha256_hex(&claiming("liar", "1.0.0")),
    });
    std::fs::write(root.join("plugins/liar.wasm.sig"), lie.to_json()).unwrap();

    let out = run(&["check", "--config", s(root)]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    for needle in [
        "plugins/forged/1.0.0.wasm:0: (plugin): refused: its signature: the component's SHA-256 is",
        "plugins/stranger.wasm:0: (plugin): refused: its signature: signed by key",
        "plugins/liar.wasm:0: (plugin): refused: its signature: the release is signed for version `3.0.0`, but the component declares `1.0.0`",
        "instance[0].plugin: no installed version of plugin `notes` is one this tenant trusts: 1.1.0 (",
        "is not signed, and the tenant trusts only plugins signed by `other`",
        "1.0.0 (",
        "is signed by `acme`, and the tenant trusts only plugins signed by `other`",
    ] {
        assert!(t.contains(needle), "missing `{needle}` in:\n{t}");
    }
    assert!(
        !t.contains("tenants/open.toml") && !t.contains("tenants/strict.toml"),
        "{t}"
    );

    // The daemon serves every tenant the highest version it trusts, and
    // the tenant that trusts none of them is told why.
    let d = start(root);
    for (tenant, version) in [("open", "1.1.0"), ("strict", "1.0.0")] {
        let api = token(root, tenant);
        let path = format!("/v1/tenants/{tenant}/instances/n/status");
        let (status, st) = get(&d, &path, Some(&api)).await;
        assert_eq!(status, 200, "{st}");
        assert_eq!(st["plugin"]["version"], version, "{tenant}: {st}");
    }
    let picky = token(root, "picky");
    let (status, out) = act(
        &d,
        &picky,
        "/v1/tenants/picky/instances/n/actions/whoami",
        &[],
        json!({}),
    )
    .await;
    assert_eq!(status, 503, "{out}");
    assert_eq!(out["error"]["code"], "instance_failed", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is one this tenant trusts"),
        "{out}"
    );

    // `plugin list`: who vouches for each version, and who runs it.
    let out = run(&["plugin", "list", "--config", s(root)]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("notes\t1.0.0\tsigned by `acme`\t"), "{t}");
    assert!(t.contains("\tstrict/n\n"), "{t}");
    assert!(t.contains("notes\t1.1.0\tunsigned\t"), "{t}");
    assert!(t.contains("\topen/n\n"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("echo\t") && l.contains("\tbuilt in\tbundled:echo\t")),
        "{t}"
    );
    assert!(!out.status.success(), "three files are refused");
    assert!(
        text(&out).contains("3 plugin file(s) refused"),
        "{}",
        text(&out)
    );

    // The signed build changes on disk under the running daemon: the
    // reload that would load it is refused as a whole, naming the build the
    // instance was set up with and why it is refused (not moving the
    // instance to another version), and the verified build that is running
    // keeps serving.
    std::fs::write(
        root.join("plugins/notes/1.0.0.wasm"),
        claiming("notes", "1.0.7"),
    )
    .unwrap();
    let op = operator_token(root);
    let (status, out) = post(&d, "/v1/admin/reload", Some(&op), &[], "").await;
    assert_eq!(status, 422, "{out}");
    let text = out.to_string();
    assert!(
        text.contains(
            "plugin `notes` 1.0.0, the build this instance was set up with, is not served"
        ) && text.contains("the component's SHA-256 is"),
        "{out}"
    );
    let strict = token(root, "strict");
    let (status, st) = get(&d, "/v1/tenants/strict/instances/n/status", Some(&strict)).await;
    assert_eq!(
        (status, &st["plugin"]["version"]),
        (200, &json!("1.0.0")),
        "{st}"
    );
}

/// A compiled-cache entry is found only by the digest of the bytes being
/// loaded: changed bytes are compiled anew, never served from the entry of
/// the bytes they replaced.
#[test]
fn a_cache_entry_never_stands_in_for_changed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.wasm");
    let inspect = || {
        let out = bin()
            .env("SWITCHYARD_CACHE_DIR", cache.path())
            .args(["plugin", "inspect", s(&file)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(&file, claiming("p", "1.0.0")).unwrap();
    assert!(inspect().contains("; compiled in"));
    assert!(inspect().contains("loaded from the compile cache"));
    std::fs::write(&file, claiming("p", "1.0.1")).unwrap();
    let third = inspect();
    assert!(third.contains("; compiled in"), "{third}");
    assert!(
        third.contains(&sha256_hex(&claiming("p", "1.0.1"))),
        "{third}"
    );
}

/// `plugin install` checks a release as the daemon will and copies it
/// whole into `plugins/<id>/<version>.wasm`, or copies nothing.
#[test]
fn install_checks_a_release_before_it_copies_anything() {
    let keys = tempfile::tempdir().unwrap();
    let acme_pub = publisher(keys.path(), "acme");
    let acme = keys.path().join("acme.key");
    let dir = config_dir(
        &format!(
            "data_dir = \"data\"\n[trust]\nrequire_signed = true\n[trust.publishers]\nacme = \"{acme_pub}\"\n"
        ),
        &[],
    );
    let root = dir.path();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("notes.wasm");
    let install = |f: &Path| run(&["plugin", "install", s(f), "--config", s(root)]);
    let installed = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join("plugins/notes"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };

    // Unsigned, where signatures are required: refused, nothing copied.
    std::fs::write(&file, claiming("notes", "1.0.0")).unwrap();
    let out = install(&file);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("requires signed plugins"),
        "{}",
        text(&out)
    );
    assert!(installed().is_empty());

    // Signed, then changed: refused, nothing copied.
    run(&["plugin", "sign", s(&file), "--key", s(&acme)]);
    std::fs::write(&file, claiming("notes", "1.0.1")).unwrap();
    let out = install(&file);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the file was changed after it was signed"),
        "{}",
        text(&out)
    );
    assert!(installed().is_empty());

    // A good release: copied with its signature, and served as signed.
    std::fs::write(&file, claiming("notes", "1.0.0")).unwrap();
    let out = install(&file);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("installed notes 1.0.0 (signed by `acme`)"),
        "{}",
        text(&out)
    );
    assert_eq!(installed(), ["1.0.0.wasm", "1.0.0.wasm.sig"]);
    let out = run(&["plugin", "list", "--config", s(root)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("notes\t1.0.0\tsigned by `acme`\t"),
        "{}",
        text(&out)
    );
    // Again: nothing to do. The same version with other bytes: refused.
    assert!(text(&install(&file)).contains("already installed"));
    let other = work.path().join("other.wasm");
    let mut bytes = claiming("notes", "1.0.0");
    // A trailing custom section: the same plugin and version, other bytes.
    bytes.extend_from_slice(&[0, 4, 3, b'x', b'y', b'z']);
    std::fs::write(&other, &bytes).unwrap();
    run(&["plugin", "sign", s(&other), "--key", s(&acme)]);
    let out = install(&other);
    assert!(!out.status.success());
    assert!(text(&out).contains("with other bytes"), "{}", text(&out));
    assert_eq!(installed(), ["1.0.0.wasm", "1.0.0.wasm.sig"]);
}

/// `POST /v1/admin/plugins` installs a release as `plugin install` does
/// (checked first, nothing written when refused), a reload serves it, and
/// `GET /v1/admin/plugins` says who vouches for it and who runs it.
#[tokio::test]
async fn the_admin_api_installs_a_release_and_lists_who_runs_it() {
    use base64::Engine as _;
    let keys = tempfile::tempdir().unwrap();
    let acme_pub = publisher(keys.path(), "acme");
    let acme = keys.path().join("acme.key");
    let server = format!("data_dir = \"data\"\n[trust.publishers]\nacme = \"{acme_pub}\"\n");
    // The instance names a plugin not installed yet: reported, not served.
    let tenant = "[[instance]]\nid = \"n\"\nplugin = \"notes\"\n";
    let dir = config_dir(&server, &[("acme", tenant)]);
    let root = dir.path();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("notes.wasm");
    // 8 MiB more in a custom section: above the action API's 4 MiB body
    // limit, as large plugins are (a Python one is about 20 MB).
    let bytes = with_custom_section(claiming("notes", "1.0.0"), 8 << 20);
    std::fs::write(&file, &bytes).unwrap();
    let out = run(&["plugin", "sign", s(&file), "--key", s(&acme)]);
    assert!(out.status.success(), "{}", text(&out));
    let signature = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(work.path().join("notes.wasm.sig")).unwrap());
    let d = start(root);
    let (op, api) = (operator_token(root), token(root, "acme"));
    let upload = |token: &str, body: Vec<u8>, signature: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/admin/plugins", d.base))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("switchyard-release-signature", sig);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            (status, json)
        }
    };
    let installed = || root.join("plugins/notes").exists();

    // Operators only. (A small body: the refusal comes before the body is
    // read, and the connection may close under a large one.)
    let (status, out) = upload(&api, b"\0asm".to_vec(), Some(&signature)).await;
    assert_eq!(status, 403, "{out}");
    assert!(out["error"]["code"].is_string(), "{out}");
    // Bytes other than the signed ones: refused, nothing written.
    let (status, out) = upload(&op, claiming("notes", "1.0.1"), Some(&signature)).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["error"]["code"], "invalid_release", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the file was changed after it was signed"),
        "{out}"
    );
    assert!(!installed());
    // A header that is not a signature file: refused, naming the header.
    let (status, out) = upload(&op, bytes.clone(), Some("not base64!")).await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("switchyard-release-signature"),
        "{out}"
    );

    // The release: installed with its signature.
    let (status, out) = upload(&op, bytes.clone(), Some(&signature)).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(
        (
            &out["installed"]["id"],
            &out["installed"]["version"],
            &out["installed"]["signer"]
        ),
        (&json!("notes"), &json!("1.0.0"), &json!("acme")),
        "{out}"
    );
    assert!(root.join("plugins/notes/1.0.0.wasm.sig").is_file());
    let (status, out) = upload(&op, bytes.clone(), Some(&signature)).await;
    assert_eq!(
        (status, &out["already_installed"]),
        (200, &json!(true)),
        "{out}"
    );

    // A reload serves it to the instance that waited for it.
    let (status, out) = post(&d, "/v1/admin/reload", Some(&op), &[], "").await;
    assert_eq!(status, 200, "{out}");
    let (status, st) = get(&d, "/v1/tenants/acme/instances/n/status", Some(&api)).await;
    assert_eq!(
        (status, &st["plugin"]["version"]),
        (200, &json!("1.0.0")),
        "{st}"
    );
    let (status, out) = get(&d, "/v1/admin/plugins", Some(&op)).await;
    assert_eq!(status, 200, "{out}");
    let notes: Vec<&serde_json::Value> = out["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == "notes")
        .collect();
    assert_eq!(notes.len(), 1, "{out}");
    assert_eq!(
        (&notes[0]["signer"], &notes[0]["built_in"]),
        (&json!("acme"), &json!(false)),
        "{out}"
    );
    assert_eq!(notes[0]["instances"], json!(["acme/n"]), "{out}");
    assert_eq!(notes[0]["sha256"], sha256_hex(&bytes), "{out}");
}

/// `component` with a custom section of `len` zero bytes appended: the same
/// plugin, more bytes.
fn with_custom_section(mut component: Vec<u8>, len: usize) -> Vec<u8> {
    let mut content = vec![1, b'x'];
    content.resize(2 + len, 0);
    let mut size = content.len();
    component.push(0);
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            component.push(byte);
            break;
        }
        component.push(byte | 0x80);
    }
    component.extend_from_slice(&content);
    component
}
