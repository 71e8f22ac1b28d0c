"""incident-watch, in Python: announces ServiceNow incidents in Slack.

Built with componentize-py against Switchyard's WIT (world
`plugin-with-settings`); see docs/plugins-python.md. The same plugin exists
in JavaScript and Rust beside this directory, with the same behaviour, so
that the three can be compared (plugins/examples/README.md).

- action `announce` {"number": "INC0010001"}: looks the incident up in
  ServiceNow and announces it in Slack (once: a second call answers
  "announced": false).
- webhook `incident` (queued): a ServiceNow business rule posts the
  incident as JSON; announced when its priority is at least `min_priority`.
- job `poll`: announces incidents updated since the last run, with a cursor
  kept in storage and moved by compare-and-swap.

The plugin never sees a secret: it names the credential (`servicenow`,
`slack`) on each request and the host attaches it.
"""

import json
from urllib.parse import quote

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, credentials, http, invocation, log, storage, types

VERSION = "0.1.0"
FIELDS = "sys_id,number,short_description,priority,sys_updated_on"
PAGE = 100


class PluginError(Exception):
    """An error the host should see as one of the WIT `plugin-error` cases."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def invalid_input(message):
    return PluginError(types.PluginError_InvalidInput(message))


def upstream(message, status=None, retry_after=None):
    return PluginError(
        types.PluginError_Upstream(types.UpstreamError(status, message, retry_after))
    )


def from_http_error(e):
    """The host's typed `http` error, as the Rust SDK maps it."""
    v = e.value
    if isinstance(v, http.Error_InvalidRequest):
        return PluginError(types.PluginError_Internal(f"bad request: {v.value}"))
    if isinstance(v, http.Error_LimitExceeded):
        return PluginError(types.PluginError_Internal(v.value))
    if isinstance(v, http.Error_Denied):
        return upstream(f"egress denied: {v.value}")
    if isinstance(v, http.Error_Credential):
        return upstream(f"credential: {v.value}")
    if isinstance(v, http.Error_Timeout):
        return upstream("the upstream did not answer in time")
    if isinstance(v, http.Error_Connection):
        return upstream(f"connection: {v.value}")
    if isinstance(v, http.Error_TooLarge):
        return upstream(f"body larger than the {v.value}-byte limit")
    return PluginError(types.PluginError_Internal(repr(v)))


def from_storage_error(e):
    v = e.value
    if isinstance(v, storage.Error_QuotaExceeded):
        return PluginError(types.PluginError_Conflict(f"storage: {v.value}"))
    if isinstance(v, storage.Error_Unavailable):
        return upstream(f"storage: {v.value}")
    return PluginError(types.PluginError_Internal(f"storage: {v.value}"))


def send(method, url, credential, body=None):
    headers = [http.Header("accept", "application/json")]
    if body is not None:
        headers.append(http.Header("content-type", "application/json"))
        body = json.dumps(body).encode()
    try:
        return http.send(http.Request(method, url, headers, body, credential, None))
    except Err as e:
        raise from_http_error(e)


def store(call, *args):
    try:
        return call(*args)
    except Err as e:
        raise from_storage_error(e)


def min_priority():
    return int(config.get("min_priority") or "2")


def incidents(query):
    base = (config.get("servicenow_url") or "").rstrip("/")
    url = (
        f"{base}/api/now/table/incident?sysparm_query={quote(query, safe='')}"
        f"&sysparm_fields={FIELDS}&sysparm_limit={PAGE}"
    )
    r = send(http.Method.GET, url, "servicenow")
    if r.status != 200:
        raise upstream(f"ServiceNow answered {r.status}", r.status, retry_after(r))
    try:
        return json.loads(r.body)["result"]
    except (ValueError, KeyError, TypeError) as e:
        raise upstream(f"ServiceNow's answer is not a Table API result: {e}")


def retry_after(response):
    for h in response.headers:
        if h.name.lower() == "retry-after" and h.value.strip().isdigit():
            return int(h.value.strip())
    return None


def slack_origin():
    for c in credentials.list():
        if c.name == "slack" and c.hosts:
            return c.hosts[0]
    raise PluginError(types.PluginError_Internal("credential `slack` is not bound"))


def announce(incident):
    """Posts `incident` to Slack once. Returns False when it was already."""
    sys_id = incident.get("sys_id")
    number = incident.get("number")
    if not isinstance(sys_id, str) or not sys_id or not isinstance(number, str):
        raise invalid_input("an incident needs `sys_id` and `number` (strings)")
    marker = f"announced/{sys_id}"
    # Claimed before posting, so that two runs never announce one incident
    # twice; released again when Slack does not take the message.
    if not store(storage.compare_and_swap, marker, None, b"1"):
        return False
    text = f"*{number}* (P{incident.get('priority', '?')}) {incident.get('short_description', '')}"
    try:
        r = send(http.Method.POST, slack_origin() + "/", "slack", {"text": text})
    except PluginError:
        store(storage.delete, marker)
        raise
    if r.status != 200:
        store(storage.delete, marker)
        raise upstream(f"Slack answered {r.status}: {r.body[:200].decode(errors='replace')}",
                       r.status, retry_after(r))
    log.emit(log.Level.INFO, "announced", [log.Field("number", number), log.Field("sys_id", sys_id)])
    return True


def announce_action(input):
    try:
        args = json.loads(input)
    except ValueError as e:
        raise invalid_input(f"input is not JSON: {e}")
    number = args.get("number") if isinstance(args, dict) else None
    if not isinstance(number, str) or not number:
        raise invalid_input("`number` (string) is required")
    found = incidents(f"number={number}")
    if not found:
        raise PluginError(types.PluginError_NotFound(f"no incident {number}"))
    done = announce(found[0])
    return json.dumps({"number": number, "sys_id": found[0]["sys_id"], "announced": done})


def poll():
    before = store(storage.get, "cursor")
    cursor = before.decode() if before is not None else ""
    query = f"priority<={min_priority()}"
    if cursor:
        query += f"^sys_updated_on>={cursor}"
    found = incidents(query + "^ORDERBYsys_updated_on")
    announced = 0
    for inc in found:
        # Near the deadline (or out of requests), stop and ask to run again
        # soon: the cursor keeps what was done.
        if invocation.remaining_ms() < 2000 or invocation.remaining_requests() < 2:
            invocation.run_again(1)
            break
        if announce(inc):
            announced += 1
        cursor = max(cursor, inc.get("sys_updated_on") or "")
    if cursor and not store(storage.compare_and_swap, "cursor", before, cursor.encode()):
        raise PluginError(types.PluginError_Conflict("another run moved the cursor"))
    log.progress(len(found), len(found), "incidents read")
    return f"announced {announced} of {len(found)} incidents; cursor {cursor or '(none)'}"


def incident_webhook(request):
    try:
        incident = json.loads(request.body)
    except ValueError as e:
        raise invalid_input(f"body is not JSON: {e}")
    if not isinstance(incident, dict):
        raise invalid_input("body must be a JSON object")
    try:
        priority = int(incident.get("priority", "5"))
    except ValueError:
        raise invalid_input("`priority` must be a number")
    done = priority <= min_priority() and announce(incident)
    body = json.dumps({"announced": done}).encode()
    return types.WebhookResponse(200, [types.Header("content-type", "application/json")], body)


def run(f, *args):
    """Calls `f`, turning a PluginError into the WIT error the host expects."""
    try:
        return f(*args)
    except PluginError as e:
        raise Err(e.error)


class WitWorld(wit_world.WitWorld):
    def manifest(self) -> types.Manifest:
        return types.Manifest(
            id="py-incident-watch",
            version=VERSION,
            description="Announces ServiceNow incidents in Slack (Python)",
            actions=[
                types.ActionSpec(
                    "announce",
                    "Announces one incident in Slack, once",
                    json.dumps({
                        "type": "object",
                        "required": ["number"],
                        "properties": {"number": {"type": "string", "pattern": "^[A-Z]+[0-9]+$"}},
                    }),
                    None,
                )
            ],
            webhooks=[
                types.WebhookSpec("incident", "A ServiceNow business rule posts an incident",
                                  types.WebhookMode.QUEUED)
            ],
            jobs=[types.JobSpec("poll", "Announces incidents updated since the last run",
                                60, 3600, 300, None)],
            config=[
                types.ConfigSpec("servicenow_url", "The ServiceNow instance", True, None),
                types.ConfigSpec("min_priority", "Announce priorities 1 to this", False, "2"),
            ],
            credentials=[
                types.CredentialSlot(
                    "servicenow",
                    "ServiceNow API account",
                    [credentials.Kind.BASIC, credentials.Kind.OAUTH2_CLIENT_CREDENTIALS,
                     credentials.Kind.BEARER],
                    True,
                ),
                types.CredentialSlot("slack", "Slack incoming webhook (secret-url)",
                                     [credentials.Kind.BEARER], True),
            ],
            egress=[
                types.EgressNeed(None, "the ServiceNow instance"),
                types.EgressNeed("https://hooks.slack.com", "Slack incoming webhooks"),
            ],
        )

    def settings_schema(self) -> str:
        return json.dumps({
            "config": {"min_priority": {"type": "integer", "minimum": 1, "maximum": 5}},
            "jobs": {"poll": {"multipleOf": 60}},
        })

    def invoke(self, ctx: types.Context, action: str, input: str) -> str:
        if action == "announce":
            return run(announce_action, input)
        raise Err(types.PluginError_NotFound(f"no action `{action}`"))

    def handle_webhook(self, ctx, route, request):
        if route == "incident":
            return run(incident_webhook, request)
        raise Err(types.PluginError_NotFound(f"no webhook route `{route}`"))

    def run_job(self, ctx: types.Context, job: str) -> str:
        if job == "poll":
            return run(poll)
        raise Err(types.PluginError_NotFound(f"no job `{job}`"))
