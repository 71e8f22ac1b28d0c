//! Typed actions: an action is a type with a `serde` input and output. Its
//! input's JSON Schema is generated (with `schemars`) into the manifest,
//! where the host enforces it before the plugin runs, and [`dispatch!`]
//! routes a call by name, so a plugin needs no string `match` and no
//! hand-written schema.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use switchyard_sdk::{Action, Context, Manifest, Plugin, Result, Value, schemars};
//!
//! #[derive(Deserialize, schemars::JsonSchema)]
//! struct GreetInput {
//!     /// Whom to greet.
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     greeting: String,
//! }
//!
//! struct Greet;
//!
//! impl Action for Greet {
//!     const NAME: &'static str = "greet";
//!     const DESCRIPTION: &'static str = "Greets someone";
//!     type Input = GreetInput;
//!     type Output = Greeting;
//!     fn run(_ctx: &Context, input: GreetInput) -> Result<Greeting> {
//!         Ok(Greeting { greeting: format!("Hello, {}", input.name) })
//!     }
//! }
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", "1.0.0", "Says hello").typed_action::<Greet>()
//!     }
//!     fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
//!         switchyard_sdk::dispatch!(ctx, action, input; Greet)
//!     }
//! }
//!
//! switchyard_sdk::register!(Hello);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ActionSpec, Context, Error, Result};

/// An action as a type: its name, its input and output types, and what it
/// does.
pub trait Action {
    /// The name callers use (`/actions/{name}`).
    const NAME: &'static str;
    /// What it does, for the manifest and the API documentation.
    const DESCRIPTION: &'static str;
    /// The input; its JSON Schema goes into the manifest (doc comments
    /// become descriptions).
    type Input: DeserializeOwned + schemars::JsonSchema;
    /// The output, returned to the caller as JSON.
    type Output: Serialize;

    /// The role the actor must hold, if any.
    fn required_role() -> Option<&'static str> {
        None
    }

    /// Runs the action.
    fn run(ctx: &Context, input: Self::Input) -> Result<Self::Output>;
}

/// The manifest entry of action `A`, with its generated input schema.
pub fn spec<A: Action>() -> ActionSpec {
    let schema = schemars::schema_for!(A::Input);
    let spec = ActionSpec::new(A::NAME, A::DESCRIPTION).input_schema(schema.to_value());
    match A::required_role() {
        Some(role) => spec.role(role),
        None => spec,
    }
}

/// Runs action `A` with `input`: decodes it (the host has checked it
/// against the schema already, so a failure here names what serde found),
/// runs it, encodes the output.
pub fn run<A: Action>(ctx: &Context, input: Value) -> Result<Value> {
    let input: A::Input = serde_json::from_value(input)
        .map_err(|e| Error::invalid_input(format!("input of `{}`: {e}", A::NAME)))?;
    let output = A::run(ctx, input)?;
    serde_json::to_value(output)
        .map_err(|e| Error::internal(format!("output of `{}`: {e}", A::NAME)))
}

/// Routes an action call to the typed action of that name, or answers
/// `not-found`: `dispatch!(ctx, action, input; Greet, Lookup)`.
#[macro_export]
macro_rules! dispatch {
    ($ctx:expr, $action:expr, $input:expr; $($typed:ty),+ $(,)?) => {{
        let (ctx, action, input) = ($ctx, $action, $input);
        $(
            if action == <$typed as $crate::Action>::NAME {
                return $crate::typed::run::<$typed>(ctx, input);
            }
        )+
        Err($crate::Error::not_found(format!("this plugin has no action `{action}`")))
    }};
}

/// Declares typed actions in one place: for each, a unit type
/// implementing [`Action`] with the body given (private to the module);
/// then, visible in the crate, `declare_actions` (adds them all to a
/// manifest), `dispatch_action` (routes a call by name) and
/// `DECLARED_ACTIONS` (`(name, description)` of each).
///
/// ```no_run
/// use serde::Deserialize;
/// use switchyard_sdk::{Context, Manifest, Plugin, Result, Value, json, schemars};
///
/// #[derive(Deserialize, schemars::JsonSchema)]
/// #[schemars(crate = "switchyard_sdk::schemars")]
/// struct Target {
///     /// The device id.
///     id: u64,
/// }
///
/// switchyard_sdk::actions! {
///     /// Locks a device.
///     Lock = "lock-device", "Lock a device" => |_ctx, input: Target| -> Value {
///         Ok(json!({ "locked": input.id }))
///     }
///     Wipe = "wipe-device", "Erase a device", role "admin" => |_ctx, input: Target| -> Value {
///         Ok(json!({ "wiped": input.id }))
///     }
/// }
///
/// struct Devices;
///
/// impl Plugin for Devices {
///     fn manifest() -> Manifest {
///         declare_actions(Manifest::new("devices", "1.0.0", "Device actions"))
///     }
///     fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
///         dispatch_action(ctx, action, input)
///     }
/// }
///
/// switchyard_sdk::register!(Devices);
/// ```
#[macro_export]
macro_rules! actions {
    ($(
        $(#[$meta:meta])*
        $ty:ident = $name:literal, $description:literal $(, role $role:literal)?
            => |$ctx:ident, $input:ident : $in_ty:ty| -> $out_ty:ty $body:block
    )+) => {
        $(
            #[doc = concat!("The `", $name, "` action.")]
            $(#[$meta])*
            struct $ty;

            impl $crate::Action for $ty {
                const NAME: &'static str = $name;
                const DESCRIPTION: &'static str = $description;
                type Input = $in_ty;
                type Output = $out_ty;
                $(
                    fn required_role() -> Option<&'static str> {
                        Some($role)
                    }
                )?
                #[allow(unused_variables)]
                fn run($ctx: &$crate::Context, $input: $in_ty) -> $crate::Result<$out_ty> $body
            }
        )+

        /// Adds every declared action to `m`, with its generated input
        /// schema.
        pub(crate) fn declare_actions(m: $crate::Manifest) -> $crate::Manifest {
            m$(.typed_action::<$ty>())+
        }

        /// Runs the declared action named `action`, or answers not-found.
        pub(crate) fn dispatch_action(
            ctx: &$crate::Context,
            action: &str,
            input: $crate::Value,
        ) -> $crate::Result<$crate::Value> {
            $crate::dispatch!(ctx, action, input; $($ty),+)
        }

        /// `(name, description)` of every declared action, in order.
        #[allow(dead_code)]
        pub(crate) const DECLARED_ACTIONS: &[(&str, &str)] = &[$(($name, $description)),+];
    };
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Deserialize, schemars::JsonSchema)]
    struct LockInput {
        /// The UEM device id.
        device_id: u64,
        #[serde(default)]
        note: Option<String>,
    }

    #[derive(Serialize)]
    struct Locked {
        locked: u64,
    }

    struct Lock;

    impl Action for Lock {
        const NAME: &'static str = "lock-device";
        const DESCRIPTION: &'static str = "Locks a device";
        type Input = LockInput;
        type Output = Locked;
        fn required_role() -> Option<&'static str> {
            Some("operator")
        }
        fn run(_ctx: &Context, input: LockInput) -> Result<Locked> {
            let _ = input.note;
            Ok(Locked {
                locked: input.device_id,
            })
        }
    }

    fn ctx() -> Context {
        Context {
            tenant: "t".into(),
            instance: "i".into(),
            request_id: "r".into(),
            actor: None,
        }
    }

    fn call(action: &str, input: Value) -> Result<Value> {
        crate::dispatch!(&ctx(), action, input; Lock)
    }

    #[test]
    fn the_manifest_gets_the_generated_schema_and_role() {
        let spec = spec::<Lock>();
        assert_eq!(spec.name, "lock-device");
        assert_eq!(spec.required_role.as_deref(), Some("operator"));
        let schema: Value = serde_json::from_str(&spec.input_schema).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["device_id"]));
        assert_eq!(schema["properties"]["device_id"]["type"], "integer");
        assert_eq!(
            schema["properties"]["device_id"]["description"],
            "The UEM device id."
        );
    }

    #[test]
    fn calls_are_routed_by_name_and_decoded() {
        let out = call("lock-device", serde_json::json!({"device_id": 7})).unwrap();
        assert_eq!(out, serde_json::json!({"locked": 7}));
        let bad = call("lock-device", serde_json::json!({"device_id": "x"})).unwrap_err();
        assert!(
            matches!(bad, Error::InvalidInput(ref m) if m.contains("input of `lock-device`")),
            "{bad:?}"
        );
        let unknown = call("wipe", Value::Null).unwrap_err();
        assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");
    }

    mod declared {
        use super::LockInput;
        use crate::{Value, json};

        crate::actions! {
            Lock = "lock", "Locks" => |_ctx, input: LockInput| -> Value {
                Ok(json!({ "locked": input.device_id }))
            }
            Wipe = "wipe", "Wipes", role "admin" => |_ctx, _input: LockInput| -> Value {
                Ok(json!({ "wiped": true }))
            }
        }
    }

    #[test]
    fn the_actions_macro_declares_routes_and_lists() {
        use crate::Manifest;
        let m = declared::declare_actions(Manifest::new("x", "0", "x"));
        let names: Vec<&str> = m.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["lock", "wipe"]);
        assert_eq!(m.actions[1].required_role.as_deref(), Some("admin"));
        assert_eq!(m.actions[0].required_role, None);
        assert_eq!(
            declared::DECLARED_ACTIONS,
            &[("lock", "Locks"), ("wipe", "Wipes")]
        );
        let out =
            declared::dispatch_action(&ctx(), "lock", serde_json::json!({"device_id": 3})).unwrap();
        assert_eq!(out, serde_json::json!({"locked": 3}));
        assert!(matches!(
            declared::dispatch_action(&ctx(), "nope", Value::Null),
            Err(Error::NotFound(_))
        ));
    }
}
