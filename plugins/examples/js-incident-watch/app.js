// incident-watch, in JavaScript: announces ServiceNow incidents in Slack.
//
// Built with ComponentizeJS against Switchyard's WIT (world
// `plugin-with-settings`); see docs/plugins-javascript.md. The same plugin
// exists in Python and Rust beside this directory, with the same behaviour
// (plugins/examples/README.md).
//
// - action `announce` {"number": "INC0010001"}: looks the incident up in
//   ServiceNow and announces it in Slack (once: a second call answers
//   "announced": false).
// - webhook `incident` (queued): a ServiceNow business rule posts the
//   incident as JSON; announced when its priority is at least `min_priority`.
// - job `poll`: announces incidents updated since the last run, with a
//   cursor kept in storage and moved by compare-and-swap.
//
// The plugin never sees a secret: it names the credential (`servicenow`,
// `slack`) on each request and the host attaches it.

import * as config from 'switchyard:plugin/config@0.1.5';
import * as credentials from 'switchyard:plugin/credentials@0.1.5';
import * as http from 'switchyard:plugin/http@0.1.5';
import * as invocation from 'switchyard:plugin/invocation@0.1.5';
import * as log from 'switchyard:plugin/log@0.1.5';
import * as storage from 'switchyard:plugin/storage@0.1.5';

const VERSION = '0.1.0';
const FIELDS = 'sys_id,number,short_description,priority,sys_updated_on';
const PAGE = 100;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// A WIT `plugin-error`. Thrown from an export, ComponentizeJS passes an
// error's `payload` to the host as the `err` of the result.
class PluginError extends Error {
  constructor(tag, val) {
    super(typeof val === 'string' ? val : val.message);
    this.payload = { tag, val };
  }
}

const invalidInput = (m) => new PluginError('invalid-input', m);
const upstream = (message, status, retryAfterSecs) =>
  new PluginError('upstream', { status, message, retryAfterSecs });

// An import that returns `result` throws on `err`, with the error value as
// the exception's `payload`.
function fromHttpError(e) {
  const { tag, val } = e.payload;
  switch (tag) {
    case 'invalid-request': return new PluginError('internal', `bad request: ${val}`);
    case 'limit-exceeded': return new PluginError('internal', val);
    case 'denied': return upstream(`egress denied: ${val}`);
    case 'credential': return upstream(`credential: ${val}`);
    case 'timeout': return upstream('the upstream did not answer in time');
    case 'connection': return upstream(`connection: ${val}`);
    case 'too-large': return upstream(`body larger than the ${val}-byte limit`);
    default: return new PluginError('internal', `${tag}: ${val}`);
  }
}

function fromStorageError(e) {
  const { tag, val } = e.payload;
  if (tag === 'quota-exceeded') return new PluginError('conflict', `storage: ${val}`);
  if (tag === 'unavailable') return upstream(`storage: ${val}`);
  return new PluginError('internal', `storage: ${val}`);
}

function guard(f, map) {
  try {
    return f();
  } catch (e) {
    if (e && e.payload && typeof e.payload.tag === 'string' && !(e instanceof PluginError)) {
      throw map(e);
    }
    throw e;
  }
}

function send(method, url, credential, body) {
  const headers = [{ name: 'accept', value: 'application/json' }];
  if (body !== undefined) {
    headers.push({ name: 'content-type', value: 'application/json' });
    body = encoder.encode(JSON.stringify(body));
  }
  return guard(
    () => http.send({ method, url, headers, body, credential, timeoutMs: undefined }),
    fromHttpError,
  );
}

const store = (f) => guard(f, fromStorageError);

function minPriority() {
  return Number.parseInt(config.get('min_priority') ?? '2', 10);
}

function retryAfter(response) {
  const h = response.headers.find((x) => x.name.toLowerCase() === 'retry-after');
  return h && /^\d+$/.test(h.value.trim()) ? Number(h.value.trim()) : undefined;
}

function incidents(query) {
  const base = (config.get('servicenow_url') ?? '').replace(/\/+$/, '');
  const url = `${base}/api/now/table/incident?sysparm_query=${encodeURIComponent(query)}`
    + `&sysparm_fields=${FIELDS}&sysparm_limit=${PAGE}`;
  const r = send('get', url, 'servicenow');
  if (r.status !== 200) {
    throw upstream(`ServiceNow answered ${r.status}`, r.status, retryAfter(r));
  }
  let result;
  try {
    result = JSON.parse(decoder.decode(r.body)).result;
  } catch (e) {
    throw upstream(`ServiceNow's answer is not a Table API result: ${e.message}`);
  }
  if (!Array.isArray(result)) {
    throw upstream("ServiceNow's answer is not a Table API result: no `result` list");
  }
  return result;
}

function slackOrigin() {
  const c = credentials.list().find((x) => x.name === 'slack' && x.hosts.length > 0);
  if (!c) throw new PluginError('internal', 'credential `slack` is not bound');
  return c.hosts[0];
}

// Posts `incident` to Slack once. Returns false when it was already.
function announce(incident) {
  const { sys_id: sysId, number } = incident;
  if (typeof sysId !== 'string' || !sysId || typeof number !== 'string') {
    throw invalidInput('an incident needs `sys_id` and `number` (strings)');
  }
  const marker = `announced/${sysId}`;
  // Claimed before posting, so that two runs never announce one incident
  // twice; released again when Slack does not take the message.
  if (!store(() => storage.compareAndSwap(marker, undefined, encoder.encode('1')))) {
    return false;
  }
  const text = `*${number}* (P${incident.priority ?? '?'}) ${incident.short_description ?? ''}`;
  let r;
  try {
    r = send('post', `${slackOrigin()}/`, 'slack', { text });
  } catch (e) {
    store(() => storage.delete(marker));
    throw e;
  }
  if (r.status !== 200) {
    store(() => storage.delete(marker));
    const said = decoder.decode(r.body.slice(0, 200));
    throw upstream(`Slack answered ${r.status}: ${said}`, r.status, retryAfter(r));
  }
  log.emit('info', 'announced', [{ key: 'number', value: number }, { key: 'sys_id', value: sysId }]);
  return true;
}

function announceAction(input) {
  let args;
  try {
    args = JSON.parse(input);
  } catch (e) {
    throw invalidInput(`input is not JSON: ${e.message}`);
  }
  const number = args && typeof args === 'object' ? args.number : undefined;
  if (typeof number !== 'string' || !number) throw invalidInput('`number` (string) is required');
  const found = incidents(`number=${number}`);
  if (found.length === 0) throw new PluginError('not-found', `no incident ${number}`);
  const announced = announce(found[0]);
  return JSON.stringify({ number, sys_id: found[0].sys_id, announced });
}

function poll() {
  const before = store(() => storage.get('cursor'));
  let cursor = before === undefined ? '' : decoder.decode(before);
  let query = `priority<=${minPriority()}`;
  if (cursor) query += `^sys_updated_on>=${cursor}`;
  const found = incidents(`${query}^ORDERBYsys_updated_on`);
  let announced = 0;
  for (const inc of found) {
    // Near the deadline (or out of requests), stop and ask to run again
    // soon: the cursor keeps what was done. (`remainingMs` is a u64: BigInt.)
    if (invocation.remainingMs() < 2000n || invocation.remainingRequests() < 2) {
      invocation.runAgain(1);
      break;
    }
    if (announce(inc)) announced += 1;
    const updated = inc.sys_updated_on ?? '';
    if (updated > cursor) cursor = updated;
  }
  if (cursor && !store(() => storage.compareAndSwap('cursor', before, encoder.encode(cursor)))) {
    throw new PluginError('conflict', 'another run moved the cursor');
  }
  log.progress(BigInt(found.length), BigInt(found.length), 'incidents read');
  return `announced ${announced} of ${found.length} incidents; cursor ${cursor || '(none)'}`;
}

function incidentWebhook(request) {
  let incident;
  try {
    incident = JSON.parse(decoder.decode(request.body));
  } catch (e) {
    throw invalidInput(`body is not JSON: ${e.message}`);
  }
  if (!incident || typeof incident !== 'object' || Array.isArray(incident)) {
    throw invalidInput('body must be a JSON object');
  }
  const priority = Number(incident.priority ?? '5');
  if (!Number.isInteger(priority)) throw invalidInput('`priority` must be a number');
  const announced = priority <= minPriority() && announce(incident);
  return {
    status: 200,
    headers: [{ name: 'content-type', value: 'application/json' }],
    body: encoder.encode(JSON.stringify({ announced })),
  };
}

export function manifest() {
  return {
    id: 'js-incident-watch',
    version: VERSION,
    description: 'Announces ServiceNow incidents in Slack (JavaScript)',
    actions: [{
      name: 'announce',
      description: 'Announces one incident in Slack, once',
      inputSchema: JSON.stringify({
        type: 'object',
        required: ['number'],
        properties: { number: { type: 'string', pattern: '^[A-Z]+[0-9]+$' } },
      }),
      requiredRole: undefined,
    }],
    webhooks: [{
      route: 'incident',
      description: 'A ServiceNow business rule posts an incident',
      mode: 'queued',
    }],
    jobs: [{
      name: 'poll',
      description: 'Announces incidents updated since the last run',
      minIntervalSecs: 60,
      maxIntervalSecs: 3600,
      defaultIntervalSecs: 300,
      exclusiveWithWebhook: undefined,
    }],
    config: [
      { key: 'servicenow_url', description: 'The ServiceNow instance', required: true, defaultValue: undefined },
      { key: 'min_priority', description: 'Announce priorities 1 to this', required: false, defaultValue: '2' },
    ],
    credentials: [
      {
        name: 'servicenow',
        description: 'ServiceNow API account',
        kinds: ['basic', 'oauth2-client-credentials', 'bearer'],
        required: true,
      },
      { name: 'slack', description: 'Slack incoming webhook (secret-url)', kinds: ['bearer'], required: true },
    ],
    egress: [
      { destination: undefined, description: 'the ServiceNow instance' },
      { destination: 'https://hooks.slack.com', description: 'Slack incoming webhooks' },
    ],
  };
}

export function settingsSchema() {
  return JSON.stringify({
    config: { min_priority: { type: 'integer', minimum: 1, maximum: 5 } },
    jobs: { poll: { multipleOf: 60 } },
  });
}

export function invoke(ctx, action, input) {
  if (action === 'announce') return announceAction(input);
  throw new PluginError('not-found', `no action \`${action}\``);
}

export function handleWebhook(ctx, route, request) {
  if (route === 'incident') return incidentWebhook(request);
  throw new PluginError('not-found', `no webhook route \`${route}\``);
}

export function runJob(ctx, job) {
  if (job === 'poll') return poll();
  throw new PluginError('not-found', `no job \`${job}\``);
}
