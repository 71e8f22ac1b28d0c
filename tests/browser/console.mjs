// End-to-end test of the web console in Debian's headless Chromium,
// driven by Playwright. host/daemon/tests/console.rs starts the daemon and
// runs this with:
//   BASE           the daemon's address (http://127.0.0.1:PORT)
//   ADMIN_TOKEN    a tenant-admin token of tenant `acme`
//   VIEWER_TOKEN   a tenant-viewer token of tenant `acme`
//   SHOTS          a directory for a screenshot of each page
//   UEM_URL, UEM_USER, UEM_PASSWORD, UEM_TENANT_CODE
//                  the UEM simulator, for the guided setup of uem-actions
// Exit status 0 when every step passed; the first failure is printed.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const { BASE, ADMIN_TOKEN, VIEWER_TOKEN, SHOTS, UEM_URL, UEM_USER, UEM_PASSWORD, UEM_TENANT_CODE } =
  process.env;
for (const [k, v] of Object.entries({ BASE, ADMIN_TOKEN, VIEWER_TOKEN, SHOTS, UEM_URL, UEM_USER, UEM_PASSWORD, UEM_TENANT_CODE })) {
  if (!v) throw new Error(`${k} is not set`);
}
const SECRET_VALUE = "hunter2-console-secret";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root in a sandboxed machine, without the background traffic a
  // closed network refuses.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

const shot = (page, name) =>
  page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

/// Polls `check` (reloading the page) until it is true, for at most 30 s.
async function eventually(page, what, check) {
  const giveUp = Date.now() + 30_000;
  for (;;) {
    if (await check()) return;
    if (Date.now() > giveUp) throw new Error(`gave up waiting for ${what}`);
    await page.waitForTimeout(200);
    await page.reload();
  }
}

async function signIn(context, token) {
  const page = await context.newPage();
  const resp = await page.goto(`${BASE}/console`);
  // No script may run, and nothing may be loaded from elsewhere.
  const csp = resp.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  return page;
}

const card = (page) => page.locator("section.card", { has: page.locator("h2", { hasText: "echo-1" }) });

let page;
try {
  // --- Sign in: a wrong token is refused, the admin's is accepted. ---
  const admin = await browser.newContext();
  page = await signIn(admin, "syt_not-a-real-token");
  await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  await shot(page, "sign-in");
  await page.getByLabel("API token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${BASE}/console/t/acme`);
  const cookie = (await admin.cookies()).find((c) => c.name === "switchyard_session");
  assert.ok(cookie, "a session cookie");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");

  // --- Overview: the card, Sync now, Pause and Resume. ---
  await eventually(page, "the first scheduled run", async () =>
    (await card(page).textContent()).includes("tick run 1"));
  await expectState(page, "running");
  await card(page).getByRole("button", { name: "Sync now: tick" }).click();
  await eventually(page, "the run asked for to report its summary", async () =>
    (await card(page).textContent()).includes("tick run 2"));
  await shot(page, "overview");
  await card(page).getByRole("button", { name: "Pause" }).click();
  await expectState(page, "paused");
  await card(page).getByRole("button", { name: "Resume" }).click();
  await expectState(page, "running");

  // A form posted without the session's CSRF value changes nothing.
  const forged = await admin.request.post(`${BASE}/console/t/acme/i/echo-1/pause`, {
    form: { csrf: "forged" },
    maxRedirects: 0,
  });
  assert.equal(forged.status(), 403);
  await page.reload();
  await expectState(page, "running");

  // --- Configuration: a refused change, a saved one, a rollback. ---
  await page.getByRole("link", { name: "Configuration" }).click();
  const toml = page.getByLabel("Tenant configuration (TOML)");
  const original = await toml.inputValue();
  await toml.fill(original.replace('greeting = "hej"', 'greeting = "hej"\ncolour = "red"'));
  await page.getByRole("button", { name: /Save as version 2/ }).click();
  await page.getByRole("alert").filter({ hasText: "instance[0].config.colour" }).waitFor();
  await shot(page, "config-refused");
  await toml.fill(original.replace('greeting = "hej"', 'greeting = "hallo"'));
  await page.getByLabel("What changed and why").fill("friendlier");
  await page.getByRole("button", { name: /Save as version 2/ }).click();
  await page.getByRole("status").filter({ hasText: "Saved and applied as version 2" }).waitFor();
  await shot(page, "config");
  await page.getByRole("link", { name: "Version 2" }).click();
  const diff = await page.locator("pre.diff").textContent();
  assert.match(diff, /-greeting = "hej"/);
  assert.match(diff, /\+greeting = "hallo"/);
  await shot(page, "config-version");
  await page.getByRole("link", { name: "Back to the configuration" }).click();
  await page.getByRole("link", { name: "Version 1", exact: true }).click();
  await page.getByRole("button", { name: "Roll back to version 1" }).click();
  await page.getByRole("status").filter({ hasText: "Saved and applied as version 3" }).waitFor();
  assert.match(await toml.inputValue(), /greeting = "hej"/);
  assert.match(await page.locator("table").textContent(), /rolled back to version 1/);

  // --- Secrets: set one; its value never comes back. ---
  await page.getByRole("link", { name: "Secrets" }).click();
  await page.getByLabel("Name").fill("upstream-token");
  await page.getByLabel("Value").fill(SECRET_VALUE);
  await page.getByRole("button", { name: "Set secret" }).click();
  await page.getByRole("status").filter({ hasText: "Set upstream-token" }).waitFor();
  assert.match(await page.locator("table").textContent(), /upstream-token/);
  assert.ok(!(await page.content()).includes(SECRET_VALUE), "a secret's value on the page");
  await shot(page, "secrets");

  // --- Guided setup of uem-actions against the UEM simulator. ---
  await page.getByRole("link", { name: "Set up" }).click();
  await page.getByLabel("Plugin").selectOption("uem-actions");
  await page.getByLabel("Instance id").fill("uem");
  await page.getByRole("button", { name: "Start the guided setup" }).click();
  await page.waitForURL(/\/setup\/uem/);
  await page.getByLabel(/^api_url/).fill(UEM_URL);
  // The UEM slot offers OAuth2 first; choose Basic and save to see its fields.
  await page.getByLabel("Kind").first().selectOption("basic");
  await page.getByLabel("Hosts it may be sent to (one per line)").first().fill(UEM_URL);
  await page.getByLabel("Allowed destinations").fill(UEM_URL);
  await page.getByRole("button", { name: "Save steps 1–4" }).click();
  await page.getByRole("alert").filter({ hasText: "missing field `username`" }).waitFor();
  await page.locator("#cred\\.uem\\.username").fill(UEM_USER);
  await page.locator("#cred\\.uem\\.password").fill(UEM_PASSWORD);
  await page.locator("#cred\\.uem\\.extra_header").fill("aw-tenant-code");
  await page.locator("#cred\\.uem\\.extra_header_value").fill(UEM_TENANT_CODE);
  await page.getByRole("button", { name: "Save steps 1–4" }).click();
  await page.getByRole("status").filter({ hasText: /Saved and applied as version \d+/ }).waitFor();
  await shot(page, "setup");
  for (const n of [1, 2, 3, 4]) {
    assert.match(await page.locator("ol.steps li").nth(n - 1).textContent(), /complete/, `step ${n}`);
  }
  // The secrets typed in went to the secret store, not into the page.
  assert.ok(!(await page.content()).includes(UEM_PASSWORD), "a secret on the setup page");
  await page.getByRole("button", { name: "Run test-connection" }).click();
  await page.getByRole("status").filter({ hasText: "test-connection succeeded" }).waitFor();
  assert.match(await page.locator("#verify").textContent(), /"version"/);
  assert.match(await page.locator("ol.steps li").nth(5).textContent(), /complete/);
  await shot(page, "setup-verified");
  // A wrong secret: Verify fails and says why.
  await page.locator("#cred\\.uem\\.password").fill("not-the-password");
  await page.getByRole("button", { name: "Save steps 1–4" }).click();
  await page.getByRole("status").filter({ hasText: /Saved and applied/ }).waitFor();
  await page.getByRole("button", { name: "Run test-connection" }).click();
  const failed = page.getByRole("alert").filter({ hasText: "Failed:" });
  await failed.waitFor();
  assert.match(await failed.textContent(), /401|unauthori[sz]ed|credential|upstream/i);
  assert.match(await page.locator("ol.steps li").nth(5).textContent(), /to do/);
  await shot(page, "setup-failed");

  // --- Role mapping: what each plugin role allows, and a change. ---
  await page.getByRole("link", { name: "Roles" }).click();
  const mapping = page.getByLabel(/^Mapping/);
  await mapping.fill("Service Desk = standard\nIntegration Admin = admin");
  await page.getByRole("button", { name: "Save the mapping" }).click();
  await page.waitForURL(`${BASE}/console/t/acme/roles`);
  assert.match(await page.locator("table").first().textContent(), /Integration Admin\s*admin/);
  await shot(page, "roles");

  // --- Activity: every change was recorded; filters narrow it. ---
  await page.getByRole("link", { name: "Activity" }).click();
  await page.getByLabel("Kind").selectOption("admin");
  await page.getByRole("button", { name: "Filter" }).click();
  const activity = await page.locator("table").textContent();
  for (const what of ["config version 2", "pause", "resume", "secret upstream-token set"]) {
    assert.ok(activity.includes(what), `${what} in the activity`);
  }
  assert.ok(!activity.includes("webhook"), "only admin entries");
  await shot(page, "activity");
  await page.getByLabel("Kind").selectOption("webhook");
  await page.getByLabel("Outcome").selectOption("failed");
  await page.getByRole("button", { name: "Filter" }).click();
  assert.match(await page.locator("table").textContent(), /events/);

  // --- Dead letters: the refused delivery, retried. ---
  await page.getByRole("link", { name: "Dead letters" }).click();
  assert.match(await page.locator("table").textContent(), /webhook events/);
  await shot(page, "dead-letters");
  await page.getByRole("button", { name: /^Retry job/ }).first().click();
  await page.getByRole("status").filter({ hasText: "is queued again" }).waitFor();

  // --- A viewer sees the same pages without any control that changes. ---
  const viewerContext = await browser.newContext();
  const viewer = await signIn(viewerContext, VIEWER_TOKEN);
  await viewer.waitForURL(`${BASE}/console/t/acme`);
  await card(viewer).waitFor();
  for (const where of ["", "/config", "/config/1", "/secrets", "/setup", "/setup/uem", "/roles", "/dead"]) {
    await viewer.goto(`${BASE}/console/t/acme${where}`);
    const buttons = await viewer
      .locator("main button, main textarea:enabled, main select:enabled, main input:enabled:not([type=hidden])")
      .count();
    assert.equal(buttons, 0, `a viewer sees controls on ${where || "the overview"}`);
  }
  await viewer.goto(`${BASE}/console/t/acme`);
  await shot(viewer, "overview-viewer");
  // ...and cannot post even with the page's own CSRF value.
  const csrf = await viewer.locator("header input[name=csrf]").getAttribute("value");
  const refused = await viewerContext.request.post(`${BASE}/console/t/acme/i/echo-1/pause`, {
    form: { csrf },
    maxRedirects: 0,
  });
  assert.equal(refused.status(), 403);

  // --- Removing an instance asks about its storage first. ---
  await page.goto(`${BASE}/console/t/acme`);
  await page.getByRole("link", { name: "Remove uem…" }).click();
  await page.getByLabel(/Delete it now/).check();
  await page.getByRole("button", { name: "Remove uem" }).click();
  await page.waitForURL(`${BASE}/console/t/acme`);
  assert.equal(await page.locator("section.card h2", { hasText: /^uem$/ }).count(), 0);
  await card(page).waitFor();

  // --- Signing out ends the session. ---
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${BASE}/console`);
  await page.goto(`${BASE}/console/t/acme`);
  await page.getByLabel("API token").waitFor();
  console.log("console end-to-end: every step passed");
} catch (e) {
  console.error(e);
  if (page) {
    console.error(`on ${page.url()}`);
    await shot(page, "failure").catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}

async function expectState(page, state) {
  await eventually(page, `the state ${state}`, async () =>
    (await card(page).locator(".state").textContent()) === state);
}
