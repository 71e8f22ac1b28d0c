//! A hostile plugin for tests: each action attacks one of the host's bounds.
//! Every attack must end in a clear error (or a typed refusal) without
//! harming the daemon or other tenants.
//!
//! Its id, version and what its `manifest()` does are read from fixed-size
//! slots in its data (see [`slot`]), which tests patch in copies of the
//! component (`switchyard_tests::patch_slot`): an impostor claiming another
//! plugin's id, several versions of one plugin, a manifest that calls an
//! import or never returns — from one crate, built once.

use serde_json::{Value, json};
use switchyard_sdk::http::{self, Request};
use switchyard_sdk::{ActionSpec, Context, Error, JobSpec, Manifest, Plugin, Result, log, storage};

struct Hostile;

/// Length of a patchable slot: a marker, then the value padded with spaces.
const SLOT: usize = 64;

const fn slot(text: &[u8]) -> [u8; SLOT] {
    let mut out = [b' '; SLOT];
    let mut i = 0;
    while i < text.len() {
        out[i] = text[i];
        i += 1;
    }
    out
}

#[used]
static ID: [u8; SLOT] = slot(b"@@SY-ID@@hostile");
#[used]
static VERSION: [u8; SLOT] = slot(b"@@SY-VERSION@@0.1.0");
#[used]
static MANIFEST_MODE: [u8; SLOT] = slot(b"@@SY-MANIFEST@@plain");

/// A slot's value as the component's bytes hold it now.
fn read_slot(s: &'static [u8; SLOT]) -> String {
    // Volatile: the compiler must not fold the initial value in, since
    // tests change it in the component after the build.
    let bytes = unsafe { std::ptr::read_volatile(s) };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let value = text.split("@@").nth(2).unwrap_or_default();
    value.trim().to_owned()
}

const ACTIONS: &[&str] = &[
    // Same name as `echo`'s action: an impostor answers it as itself.
    "echo",
    "spin",
    "sleep-in-host",
    "memory-bomb",
    "stack-overflow",
    "panic",
    "resource-bomb",
    "egress",
    "credential-misuse",
    "storage-escape",
    "log-flood",
    "log-forge",
    "http-flood",
    "huge-output",
    "remember",
    "fail-migrations",
];

impl Plugin for Hostile {
    fn manifest() -> Manifest {
        // What a misbehaving manifest() does (the host must refuse to load
        // the plugin, naming what happened).
        match read_slot(&MANIFEST_MODE).as_str() {
            "storage" => {
                let _ = storage::get("peek");
            }
            "log" => log::info("a manifest that logs"),
            "http" => {
                let _ = Request::get("https://example.com/").send();
            }
            "spin" => loop {
                std::hint::black_box(0u64);
            },
            _ => {}
        }
        let (id, version) = (read_slot(&ID), read_slot(&VERSION));
        // Versions before 2.0.0 also declare `legacy`: a job queued under
        // one of them and run after an upgrade to 2.x is not declared any
        // more (the host dead-letters it).
        let before_2 = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            < Some(2);
        let wait = JobSpec::new(
            "wait",
            "waits for the remembered URL to answer, then says which version ran",
            60,
            3600,
            86400,
        );
        let mut jobs = vec![wait];
        if before_2 {
            jobs.push(JobSpec::new(
                "legacy",
                "only in versions before 2.0.0",
                60,
                3600,
                86400,
            ));
        }
        let manifest = ACTIONS.iter().fold(
            Manifest::new(&id, &version, "Attacks the host's limits, for tests")
                .egress(None, "whatever URLs a test passes in")
                .credential(
                    switchyard_sdk::CredentialSlot::new(
                        "upstream",
                        "any credential",
                        &[
                            switchyard_sdk::CredentialKind::Bearer,
                            switchyard_sdk::CredentialKind::Basic,
                        ],
                    )
                    .optional(),
                ),
            |m, a| m.action(ActionSpec::new(a, "attack")),
        );
        jobs.into_iter().fold(manifest, Manifest::job)
    }

    /// Not hostile: records each try (`migration-tries`) and each success
    /// (`migrations`, as `from->to`), fails while `fail-migrations` counts
    /// down, and first fetches `migration-url` when one is stored (a step
    /// that takes a while), so tests see how often and when the host
    /// called it.
    fn migrate_storage(_ctx: &Context, previous: Option<&str>) -> Result<String> {
        let version = read_slot(&VERSION);
        let tries = storage::get_json::<u32>("migration-tries")?.unwrap_or(0) + 1;
        storage::set_json("migration-tries", &tries)?;
        if let Some(url) = storage::get("migration-url")? {
            Request::get(String::from_utf8_lossy(&url).into_owned()).send()?;
        }
        if let Some(n) = storage::get_json::<u32>("fail-migrations")?.filter(|n| *n > 0) {
            storage::set_json("fail-migrations", &(n - 1))?;
            return Err(Error::internal(format!(
                "failing on purpose ({} more)",
                n - 1
            )));
        }
        let from = previous.unwrap_or("unrecorded");
        let mut done = storage::get_json::<Vec<String>>("migrations")?.unwrap_or_default();
        done.push(format!("{from}->{version}"));
        storage::set_json("migrations", &done)?;
        Ok(format!("migrated from {from} to {version}"))
    }

    fn run_job(_ctx: &Context, job: &str) -> Result<String> {
        let version = read_slot(&VERSION);
        match job {
            "wait" => {
                let url = storage::get("wait-url")?
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
                    .ok_or_else(|| Error::invalid_input("call `remember` with a url first"))?;
                let r = Request::get(&url)
                    .timeout(std::time::Duration::from_secs(3600))
                    .send()?;
                Ok(format!("{version} waited: {}", r.status))
            }
            "legacy" => Ok(format!("legacy ran on {version}")),
            other => Err(Error::not_found(format!("no job `{other}`"))),
        }
    }

    fn invoke(_ctx: &Context, action: &str, input: Value) -> Result<Value> {
        match action {
            "echo" => Ok(json!({
                "impostor": true,
                "id": read_slot(&ID),
                "version": read_slot(&VERSION),
                "storage": storage::list("").unwrap_or_default(),
            })),
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep-in-host" => {
                // Waits in a host call (an upstream that never answers).
                let url = input["url"].as_str().unwrap_or_default();
                let r = Request::get(url)
                    .timeout(std::time::Duration::from_secs(3600))
                    .send();
                Ok(json!(format!("{r:?}")))
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stack-overflow" => Ok(json!(recurse(std::hint::black_box(1)))),
            "panic" => panic!("hostile plugin panicked on purpose"),
            "resource-bomb" => {
                let mut held = Vec::new();
                loop {
                    held.push(wasip2::cli::stdout::get_stdout());
                }
            }
            "egress" => Ok(try_urls(&input)),
            // Kept across upgrades: the instance's storage is the plugin's,
            // whichever version runs.
            "remember" => {
                let url = input["url"].as_str().unwrap_or_default();
                storage::set("wait-url", url.as_bytes())?;
                Ok(json!({ "remembered": url, "version": read_slot(&VERSION) }))
            }
            // The next `count` tries of a version's migration step fail.
            "fail-migrations" => {
                let count = input["count"].as_u64().unwrap_or(0);
                storage::set_json("fail-migrations", &count)?;
                Ok(json!({ "failing": count }))
            }
            "credential-misuse" => Ok(credential_misuse(&input)),
            "storage-escape" => storage_escape(),
            "log-flood" => {
                for i in 0..100_000u32 {
                    log::info(format!("flood {i}"));
                }
                Ok(json!("flooded"))
            }
            "log-forge" => {
                // A record that tries to start a line of its own, posing as
                // the host logging another tenant's egress, with fields
                // named like the host's and far too many bytes.
                let mut fields: Vec<(String, String)> = vec![
                    ("tenant".into(), "victim".into()),
                    ("request_id\nforged".into(), "x".into()),
                ];
                for i in 0..40 {
                    fields.push((format!("f{i}"), "v".repeat(2000)));
                }
                let refs: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                log::emit(
                    log::Level::Info,
                    "done\n2026-12-02T00:00:00Z INFO switchyard::runtime::http: egress tenant=victim",
                    &refs,
                );
                Ok(json!("forged"))
            }
            "http-flood" => {
                let url = input["url"].as_str().unwrap_or("https://denied.invalid/");
                let mut last = String::new();
                for _ in 0..10_000 {
                    if let Err(e) = Request::get(url).send() {
                        last = format!("{e:?}");
                    }
                }
                Ok(json!(last))
            }
            "huge-output" => Ok(json!(
                "x".repeat(input["bytes"].as_u64().unwrap_or(1 << 24) as usize)
            )),
            other => Err(Error::not_found(format!("no action `{other}`"))),
        }
    }
}

// Unbounded on purpose: the host must stop it with a stack-overflow trap.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    recurse(pad[3] + 1) + pad[7]
}

fn outcome(r: std::result::Result<http::Response, http::Error>) -> Value {
    match r {
        Ok(resp) => json!({ "status": resp.status, "body": resp.text() }),
        Err(e) => json!({ "error": format!("{e:?}") }),
    }
}

fn try_urls(input: &Value) -> Value {
    let urls = input["urls"].as_array().cloned().unwrap_or_default();
    Value::Array(
        urls.iter()
            .map(|u| {
                let url = u.as_str().unwrap_or_default();
                json!({ "url": url, "outcome": outcome(Request::get(url).send()) })
            })
            .collect(),
    )
}

fn credential_misuse(input: &Value) -> Value {
    let bound = input["bound_url"].as_str().unwrap_or_default();
    let unbound = input["unbound_url"].as_str().unwrap_or_default();
    json!({
        // The credential is bound to another host: the host must refuse.
        "unbound_host": outcome(Request::get(unbound).credential("upstream").send()),
        // Setting our own Authorization next to a named credential.
        "own_authorization": outcome(
            Request::get(bound).credential("upstream").header("Authorization", "Bearer forged").send()
        ),
        // A credential that does not exist.
        "unknown_credential": outcome(Request::get(bound).credential("nope").send()),
        // What `list` reveals: metadata only.
        "listed": format!("{:?}", switchyard_sdk::credentials::list()),
        "verified": format!("{:?}", switchyard_sdk::credentials::verify("upstream")),
    })
}

fn storage_escape() -> Result<Value> {
    let probe = |key: &str| match storage::get(key) {
        Ok(v) => {
            json!({ "key": key, "value": v.map(|b| String::from_utf8_lossy(&b).into_owned()) })
        }
        Err(e) => json!({ "key": key, "error": format!("{e:?}") }),
    };
    Ok(json!({
        "visible_keys": storage::list("")?,
        "probes": [
            probe("secret"),
            probe("../victim/secret"),
            probe("victim/secret"),
            probe("victim\u{0}secret"),
            probe("/victim/echo/secret"),
            probe(&"k".repeat(600)),
        ],
    }))
}

switchyard_sdk::register!(Hostile);
