//! `switchyard plugin new NAME`: a plugin crate of its own, outside this
//! repository, that builds, inspects and runs at once: a typed action, a
//! webhook route, a job, a test and an `--instance` example.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the scaffold takes the SDK from.
pub(super) enum Sdk {
    /// A checkout of this repository (its `sdk` directory).
    Path(PathBuf),
    /// A git URL of this repository, optionally at a revision.
    Git { url: String, rev: Option<String> },
}

/// The toolchain the SDK is built and tested with: the scaffold pins the
/// same one.
const TOOLCHAIN: &str = include_str!("../../../../rust-toolchain.toml");

/// Writes the plugin `name` into `dir` (which must not exist or be empty).
pub(super) fn write(name: &str, dir: &Path, sdk: &Sdk) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter"
    );
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        anyhow::ensure!(empty, "{} exists and is not empty", dir.display());
    }
    let sdk_dep = match sdk {
        Sdk::Path(p) => {
            let p = std::fs::canonicalize(p)
                .with_context(|| format!("the SDK directory {}", p.display()))?;
            anyhow::ensure!(
                p.join("Cargo.toml").is_file(),
                "{} is not the SDK (no Cargo.toml)",
                p.display()
            );
            format!("{{ path = {:?} }}", p.display().to_string())
        }
        Sdk::Git { url, rev: None } => format!("{{ git = {url:?} }}"),
        Sdk::Git { url, rev: Some(r) } => format!("{{ git = {url:?}, rev = {r:?} }}"),
    };
    let channel = TOOLCHAIN
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .context("the toolchain file names no channel")?;
    let ident = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk_dep)),
        (
            "rust-toolchain.toml",
            format!(
                "[toolchain]\nchannel = \"{channel}\"\ntargets = [\"wasm32-wasip2\"]\nprofile = \"minimal\"\n"
            ),
        ),
        ("src/lib.rs", lib_rs(name)),
        ("instance.json", INSTANCE.to_owned()),
        ("README.md", readme(name, &ident)),
        (".gitignore", "/target\n/dev-data\n".to_owned()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk_dep: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A Switchyard plugin"

[lib]
# cdylib: the component; rlib: so that `cargo test` runs the unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
switchyard-sdk = {sdk_dep}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A workspace of its own: the plugin never joins an enclosing one.
[workspace]

[profile.release]
opt-level = "s"
lto = true
"#
    )
}

fn lib_rs(name: &str) -> String {
    LIB_RS.replace("{{name}}", name)
}

const LIB_RS: &str = r#"//! `{{name}}`: a Switchyard plugin.
//!
//! - action `greet` `{"name": "Ada"}` → `{"greeting": "Hello, Ada"}` (the
//!   word comes from the `greeting` setting); a typed action: its input
//!   schema is generated into the manifest and the host enforces it;
//! - webhook `events` (queued) stores each event `{"id": …}` under
//!   `events/<id>`;
//! - job `count` says how many events are stored.

use serde::{Deserialize, Serialize};
use switchyard_sdk::{
    Action, ConfigSpec, Context, Error, JobSpec, Manifest, Plugin, Result, Value, WebhookRequest,
    WebhookResponse, WebhookSpec, config, schemars, storage,
};

/// The input of `greet`.
#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct GreetInput {
    /// Whom to greet.
    pub name: String,
}

/// The output of `greet`.
#[derive(Serialize)]
pub struct Greeting {
    /// The greeting.
    pub greeting: String,
}

/// The `greet` action.
pub struct Greet;

impl Action for Greet {
    const NAME: &'static str = "greet";
    const DESCRIPTION: &'static str = "Greets someone";
    type Input = GreetInput;
    type Output = Greeting;

    fn run(_ctx: &Context, input: GreetInput) -> Result<Greeting> {
        let word = config::get("greeting").unwrap_or_else(|| "Hello".into());
        Ok(Greeting {
            greeting: greeting(&word, &input.name),
        })
    }
}

/// The plugin.
pub struct MyPlugin;

impl Plugin for MyPlugin {
    fn manifest() -> Manifest {
        Manifest::new("{{name}}", env!("CARGO_PKG_VERSION"), "A Switchyard plugin")
            .typed_action::<Greet>()
            .webhook(WebhookSpec::queued("events", "Stores each event it receives"))
            .job(JobSpec::new("count", "Counts the stored events", 60, 3600, 86400))
            .config(ConfigSpec::optional("greeting", "Word to greet with", "Hello"))
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        switchyard_sdk::dispatch!(ctx, action, input; Greet)
    }

    fn handle_webhook(
        _ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        if route != "events" {
            return Err(Error::not_found(format!("no webhook route `{route}`")));
        }
        let event: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::invalid_input(format!("the body is not JSON: {e}")))?;
        let id = event["id"]
            .as_str()
            .ok_or_else(|| Error::invalid_input("the event has no string `id`"))?;
        storage::set_json(&format!("events/{id}"), &event)?;
        Ok(WebhookResponse {
            status: 200,
            headers: Vec::new(),
            body: format!("stored {id}").into_bytes(),
        })
    }

    fn run_job(_ctx: &Context, job: &str) -> Result<String> {
        if job != "count" {
            return Err(Error::not_found(format!("no job `{job}`")));
        }
        let count = storage::list("events/")?.len();
        Ok(format!("{count} event(s) stored"))
    }
}

/// The greeting, kept apart from the host calls so that it can be tested
/// natively.
fn greeting(word: &str, name: &str) -> String {
    format!("{word}, {name}")
}

switchyard_sdk::register!(MyPlugin);

#[cfg(test)]
mod tests {
    #[test]
    fn greets_by_name() {
        assert_eq!(super::greeting("Hello", "Ada"), "Hello, Ada");
    }
}
"#;

const INSTANCE: &str = r#"{
  "tenant": "dev",
  "instance": "dev",
  "config": { "greeting": "Hej" },
  "egress": [],
  "limits": { "deadline": 10000 }
}
"#;

fn readme(name: &str, ident: &str) -> String {
    format!(
        r#"# {name}

A Switchyard plugin. Build it, then run each entry point locally:

```sh
cargo build --release --target wasm32-wasip2
cargo test
P=target/wasm32-wasip2/release/{ident}.wasm
switchyard plugin inspect $P
switchyard plugin run $P greet --input '{{"name": "Ada"}}' --instance instance.json
echo '{{"id": "e-1"}}' | switchyard plugin run $P --webhook events --body - --data-dir dev-data
switchyard plugin run $P --job count --data-dir dev-data
```

Copy the `.wasm` into the daemon's `plugin_dir` and enable it in a tenant
file to run it for a tenant.
"#
    )
}
