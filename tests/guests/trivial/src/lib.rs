//! The smallest useful plugin, for benchmarks: `noop` returns `{}`, and
//! `config-loop` makes `n` host calls so the round trip can be measured.

use serde_json::{Value, json};
use switchyard_sdk::{ActionSpec, ConfigSpec, Context, Error, Manifest, Plugin, Result, config};

struct Trivial;

impl Plugin for Trivial {
    fn manifest() -> Manifest {
        Manifest::new("trivial", "0.1.0", "Does nothing, fast")
            .action(ActionSpec::new("noop", "Returns {}"))
            .action(ActionSpec::new("config-loop", "Reads a config key n times"))
            .config(ConfigSpec::optional("k", "a key to read", "v"))
    }

    fn invoke(_ctx: &Context, action: &str, input: Value) -> Result<Value> {
        match action {
            "noop" => Ok(json!({})),
            "config-loop" => {
                let n = input["n"].as_u64().unwrap_or(1);
                let mut hits = 0u64;
                for _ in 0..n {
                    hits += u64::from(config::get("k").is_some());
                }
                Ok(json!({ "hits": hits }))
            }
            other => Err(Error::not_found(format!("no action `{other}`"))),
        }
    }
}

switchyard_sdk::register!(Trivial);
