//! A plugin whose actions each drive one feature of the shared clients
//! (`switchyard-servicenow`, `switchyard-uem`), so that
//! `tests/tests/clients.rs` can run them over HTTP against the simulators.
//! Errors come back as the plugin's typed errors, unchanged.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::{
    ConfigSpec, Context, CredentialKind, CredentialSlot, Manifest, Plugin, Result, config,
};
use switchyard_servicenow::{Query, ServiceNow, SysId};
use switchyard_uem::{Selector, Uem};

fn sn() -> Result<ServiceNow> {
    Ok(ServiceNow::new(&config::require("servicenow_url")?))
}

fn uem() -> Result<Uem> {
    Ok(Uem::new(&config::require("uem_url")?))
}

/// A ServiceNow table and `field = value` conditions.
#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct TableQuery {
    table: String,
    #[serde(default)]
    eq: Vec<(String, String)>,
    #[serde(default)]
    fields: Vec<String>,
    max: usize,
}

impl TableQuery {
    fn query(&self) -> Query {
        self.eq
            .iter()
            .fold(Query::new().order_by("number"), |q, (f, v)| q.eq(f, v))
    }
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct Row {
    table: String,
    #[serde(default)]
    sys_id: Option<SysId>,
    #[serde(default)]
    fields: Map<String, Value>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct Note {
    task: String,
    note: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct TagOps {
    name: String,
    group: i64,
    #[serde(default)]
    add: Vec<i64>,
    #[serde(default)]
    remove: Vec<i64>,
    /// Whose tags to list afterwards.
    device: Selector,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct Named {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct Device {
    device: Selector,
}

switchyard_sdk::actions! {
    SnQueryAll = "sn-query-all", "Query::eq … query_all" => |_ctx, input: TableQuery| -> Value {
        let fields: Vec<&str> = input.fields.iter().map(String::as_str).collect();
        let rows = sn()?.query_all(&input.table, &input.query(), &fields, input.max)?;
        Ok(json!({ "count": rows.len(), "rows": rows }))
    }
    SnQuery = "sn-query", "Query::eq … query (first page only)" => |_ctx, input: TableQuery| -> Value {
        let fields: Vec<&str> = input.fields.iter().map(String::as_str).collect();
        let rows = sn()?.query(&input.table, &input.query(), &fields, input.max)?;
        Ok(json!({ "count": rows.len(), "rows": rows }))
    }
    SnGet = "sn-get", "get by sys_id" => |_ctx, input: Row| -> Value {
        let id = input.sys_id.ok_or_else(|| switchyard_sdk::Error::invalid_input("sys_id"))?;
        Ok(sn()?.get(&input.table, &id, &[])?.unwrap_or(Value::Null))
    }
    SnInsert = "sn-insert", "insert" => |_ctx, input: Row| -> Value {
        let id = sn()?.insert(&input.table, &input.fields)?;
        Ok(json!({ "sys_id": id }))
    }
    SnUpdate = "sn-update", "update" => |_ctx, input: Row| -> Value {
        let id = input.sys_id.ok_or_else(|| switchyard_sdk::Error::invalid_input("sys_id"))?;
        sn()?.update(&input.table, &id, &input.fields)?;
        Ok(json!({ "updated": id }))
    }
    SnWorkNote = "sn-work-note", "find_task, then work_note" => |_ctx, input: Note| -> Value {
        let sn = sn()?;
        let Some(task) = sn.find_task("task", &input.task)? else {
            return Ok(json!({ "found": false }));
        };
        sn.work_note(&task.table, &task.sys_id, &input.note)?;
        Ok(json!({ "found": true, "table": task.table, "number": task.number }))
    }
    UemTags = "uem-tags", "ensure_tag, add_to_tag, remove_from_tag, device_tags" => |_ctx, input: TagOps| -> Value {
        let uem = uem()?;
        let tag = uem.ensure_tag(&input.name, input.group)?;
        let again = uem.ensure_tag(&input.name, input.group)?;
        let added = uem.add_to_tag(tag, &input.add)?;
        let removed = uem.remove_from_tag(tag, &input.remove)?;
        let device = uem.resolve_one(&input.device)?;
        let tags = uem.device_tags(&device)?;
        Ok(json!({ "tag": tag, "again": again, "added": added, "removed": removed, "device_tags": tags }))
    }
    UemGroups = "uem-groups", "org_groups, smart_groups, smart_group_devices" => |_ctx, input: Named| -> Value {
        let uem = uem()?;
        let org = uem.org_groups(&input.name)?;
        let smart = uem.smart_groups(&input.name)?;
        let members = match smart.first() {
            Some(g) => uem.smart_group_devices(g.id)?.len(),
            None => 0,
        };
        Ok(json!({ "org": org, "smart": smart, "first_smart_members": members }))
    }
    UemResolve = "uem-resolve", "resolve_one" => |_ctx, input: Device| -> Value {
        Ok(serde_json::to_value(uem()?.resolve_one(&input.device)?)?)
    }
    UemSearchAll = "uem-search-all", "search_all over every device" => |_ctx, input: Named| -> Value {
        let devices = uem()?.search_all("/mdm/devices/search", "Devices", 100_000, "every device")?;
        let _ = input;
        Ok(json!({ "count": devices.len() }))
    }
    Limits = "limits", "What is left of the invocation, before and after one request" => |_ctx, _input: Named| -> Value {
        let before = switchyard_sdk::invocation::remaining_requests();
        sn()?.query("incident", &Query::new(), &["sys_id"], 1)?;
        Ok(json!({
            "requests_before": before,
            "requests_after": switchyard_sdk::invocation::remaining_requests(),
            "remaining_ms": switchyard_sdk::invocation::remaining().as_millis() as u64,
        }))
    }
    UemDevicesOf = "uem-devices-of", "devices_of (paged search)" => |_ctx, input: Named| -> Value {
        let devices = uem()?.devices_of(&input.name)?;
        Ok(json!({ "count": devices.len() }))
    }
}

struct Clients;

impl Plugin for Clients {
    fn manifest() -> Manifest {
        declare_actions(Manifest::new(
            "clients",
            "0.1.0",
            "Drives the shared clients",
        ))
        .config(ConfigSpec::optional("servicenow_url", "ServiceNow", ""))
        .config(ConfigSpec::optional("uem_url", "UEM", ""))
        .credential(
            CredentialSlot::new("servicenow", "ServiceNow", &[CredentialKind::Basic]).optional(),
        )
        .credential(CredentialSlot::new("uem", "UEM", &[CredentialKind::Basic]).optional())
        .egress(None, "the simulators")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        dispatch_action(ctx, action, input)
    }
}

switchyard_sdk::register!(Clients);
