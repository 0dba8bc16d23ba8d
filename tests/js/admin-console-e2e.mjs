// Drives the admin console (/admin) in Debian's headless Chromium through playwright-core, for the
// Rust test tests/api/admin_console.rs. It never downloads a browser: it launches /usr/bin/chromium
// (CHROMIUM overrides) with a fresh temporary profile.
//
// Usage: node admin-console-e2e.mjs BASE_URL
//   env OPERATOR_TOKEN  an Operator token (required)
//       ADMIN_TOKEN     an Admin/Staff token of TENANT (required): checks the Operator-only table
//       TENANT          the tenant the test connected to (default t1)
//       MEMBER_USER     the user id of the connection the test holds open in TENANT (required)
//       STEP_TIMEOUT_MS how long each step may wait (default 10000)
//       ARTIFACTS_DIR   where a failing step leaves a screenshot (default: a temporary folder)
//       SCREENSHOTS_DIR where to save the documentation's screenshots (docs/images); none if unset
//
// Every step is reported as one JSON line on stdout: {"step":"…","ok":true,…what the page showed}.
// A failing step reports {"step":"…","ok":false,"error":"…","screenshot":"…"} and the script exits 1.
// After the "watching" step the script reads one JSON line on stdin, {"id":"…","user":"…"}: the id
// of the event the test published and the user of a connection it opened since, which the page
// must then show. After "broker_limit_set" it reads one more line, sent once the test has generated
// load (publishes while the broker shards' mailbox is 1), which the charts must then show.
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";

const baseUrl = (process.argv[2] ?? process.env.BASE_URL ?? "").replace(/\/$/, "");
const operatorToken = process.env.OPERATOR_TOKEN ?? "";
const adminToken = process.env.ADMIN_TOKEN ?? "";
const tenant = process.env.TENANT ?? "t1";
const memberUser = process.env.MEMBER_USER ?? "";
const timeout = Number(process.env.STEP_TIMEOUT_MS ?? 10000);
const screenshots = process.env.SCREENSHOTS_DIR ?? "";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const report = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

if (!baseUrl || !operatorToken || !adminToken || !memberUser) {
  report({ step: "arguments", ok: false, error: "need BASE_URL, OPERATOR_TOKEN, ADMIN_TOKEN and MEMBER_USER" });
  process.exit(2);
}

/** Reads the one line the test sends after "watching". */
const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function readCommand() {
  const { value, done } = await stdinLines.next();
  if (done) throw new Error("the test closed stdin before sending the published event");
  return JSON.parse(value);
}

/** CSS attribute selector for a value from the server (quotes and backslashes escaped). */
const attr = (name, value) => `[${name}="${String(value).replace(/["\\]/g, "\\$&")}"]`;

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-console-chromium-"));
const artifacts = process.env.ARTIFACTS_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-console-e2e-"));
let context = null;
let page = null;
/** Console errors and uncaught exceptions (CSP violations show up here); failed requests excepted. */
const pageErrors = [];

async function step(name, run) {
  try {
    const details = await run();
    report({ step: name, ok: true, ...details });
  } catch (e) {
    let screenshot = null;
    if (page) {
      screenshot = path.join(artifacts, `${name}.png`);
      await page.screenshot({ path: screenshot, fullPage: true }).catch(() => (screenshot = null));
    }
    report({ step: name, ok: false, error: String(e?.message ?? e), shown: await shownErrors(), screenshot, pageErrors });
    await shutdown();
    process.exit(1);
  }
}

/** The error texts the page shows (why a sign-in or a table failed), for a failing step's report. */
async function shownErrors() {
  if (!page) return [];
  return page
    .$$eval(".error", (nodes) => nodes.map((n) => `${n.id || n.className}: ${n.textContent.trim()}`).filter((t) => !t.endsWith(": ")))
    .catch(() => []);
}

async function shutdown() {
  if (context) await context.close().catch(() => {});
  context = null;
  fs.rmSync(profile, { recursive: true, force: true });
}

/** Text of the first element matching `selector` once it is visible. */
async function textOf(selector) {
  const loc = page.locator(selector).first();
  await loc.waitFor({ state: "visible", timeout });
  return (await loc.textContent())?.trim() ?? "";
}

/** Waits until the page's own `predicate(arg)` holds; returns what it returned. */
async function until(predicate, arg) {
  const handle = await page.waitForFunction(predicate, arg, { timeout, polling: 100 });
  return handle.jsonValue();
}

async function signIn(token) {
  await page.fill("#token", token);
  await page.click("#login");
  // Signed in, or refused with a reason on the login panel.
  const { refused } = await until(() => {
    if (!document.querySelector("#console").hidden) return { refused: null };
    const why = document.querySelector("#login-error").textContent;
    return why ? { refused: why } : null;
  });
  if (refused) throw new Error(`sign-in refused: ${refused}`);
  return { whoami: await textOf("#whoami") };
}

await step("launched", async () => {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  await page.setViewportSize({ width: 1500, height: 1000 });
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) pageErrors.push(msg.text());
  });
  page.on("pageerror", (e) => pageErrors.push(String(e?.message ?? e)));
  return { browser: context.browser()?.version() ?? null };
});

await step("loaded", async () => {
  const res = await page.goto(`${baseUrl}/admin`, { waitUntil: "load", timeout });
  await page.locator("#token").waitFor({ state: "visible", timeout });
  return { status: res?.status() ?? null, title: await page.title() };
});

await step("signed_in", () => signIn(operatorToken));

await step("tenant_listed", async () => {
  const row = `#tenants tbody tr${attr("data-tenant", tenant)}`;
  const seen = await until(
    (sel) => {
      const r = document.querySelector(sel);
      if (!r) return null;
      const connections = Number(r.querySelector(".connections")?.textContent);
      return connections >= 1 ? { connections, users: Number(r.querySelector(".users")?.textContent) } : null;
    },
    row,
  );
  return { tenant, ...seen };
});

await step("user_online", async () => {
  await page.click(`#tenants tbody tr${attr("data-tenant", tenant)}`);
  const name = await textOf("#tenant-name");
  const row = `#users tbody tr${attr("data-user", memberUser)}`;
  return {
    tenant: name,
    userId: await textOf(`${row} .user`),
    role: await textOf(`${row} .role`),
    connections: Number(await textOf(`${row} .connections`)),
  };
});

await step("watching", async () => {
  await page.locator('#activity-state[data-state="live"]').waitFor({ state: "visible", timeout });
  return { activity: await textOf("#activity-state") };
});

const published = await readCommand();

await step("recent_event", async () => {
  const item = `#recent-events li${attr("data-event-id", published.id)}`;
  return {
    id: published.id,
    event: await textOf(`${item} .event`),
    channel: await textOf(`${item} .channel`),
  };
});

await step("activity_event", async () => {
  const item = `#activity li[data-event="Published"]${attr("data-published-id", published.id)}`;
  return { id: published.id, summary: await textOf(`${item} .detail`) };
});

const sessionRow = '#actors tbody tr[data-kind="session"]';

await step("activity_connection", async () => {
  const summary = await until(
    (user) =>
      [...document.querySelectorAll('#activity li[data-event="ConnectionOpened"] .detail')]
        .map((n) => n.textContent)
        .find((t) => t.startsWith(`${user} (`)) ?? null,
    published.user,
  );
  return { user: published.user, summary };
});

await step("mailbox_saved", async () => {
  await page.locator(`${sessionRow} input[name=mailbox]`).waitFor({ state: "visible", timeout });
  await page.fill(`${sessionRow} input[name=mailbox]`, "77");
  await page.selectOption(`${sessionRow} select[name=policy]`, "drop");
  await page.click(`${sessionRow} button.save`);
  const message = await textOf(`${sessionRow} .message.saved`);
  return {
    message,
    mailbox: await page.inputValue(`${sessionRow} input[name=mailbox]`),
    policy: await page.inputValue(`${sessionRow} select[name=policy]`),
  };
});

await step("mailbox_refused", async () => {
  await page.fill(`${sessionRow} input[name=mailbox]`, "0");
  await page.click(`${sessionRow} button.save`);
  return { message: await textOf(`${sessionRow} .message.error`) };
});

/** Saves a screenshot of `selector` for the docs when SCREENSHOTS_DIR is set; returns its path. */
async function docShot(selector, name) {
  if (!screenshots) return null;
  fs.mkdirSync(screenshots, { recursive: true });
  const file = path.join(screenshots, name);
  await page.locator(selector).screenshot({ path: file });
  return file;
}

/**
 * Waits until the charts drew what `want` asks, per chart `{points: n}` (at least n points) or
 * `{above: x}` (a maximum above x); returns every chart's figures: points, maximum over the
 * window, newest value. (A function, not a string: the page's CSP forbids eval.)
 */
async function untilCharts(want) {
  return until((w) => {
    const all = Object.fromEntries([...document.querySelectorAll("figure[data-chart]")].map((f) => [
      f.dataset.chart,
      { points: Number(f.dataset.points ?? 0), max: Number(f.dataset.max ?? 0), last: Number(f.dataset.last ?? 0) },
    ]));
    for (const [name, c] of Object.entries(w)) {
      const got = all[name];
      if (!got) return null;
      if (c.points !== undefined && got.points < c.points) return null;
      if (c.above !== undefined && !(got.max > c.above)) return null;
    }
    return all;
  }, want);
}

const brokerRow = '#actors tbody tr[data-kind="broker"]';
/** The charts before the test's load. */
let before = null;

await step("broker_limit_set", async () => {
  // A kind without a slow-consumer policy or byte budget offers only its mailbox.
  await page.locator(`${brokerRow} input[name=mailbox]`).waitFor({ state: "visible", timeout });
  const policyEditable = await page.locator(`${brokerRow} select[name=policy]`).isVisible();
  const bytesEditable = await page.locator(`${brokerRow} input[name=maxQueuedBytes]`).isVisible();
  const unused = await textOf(`${brokerRow} td.policy .unused`);
  await page.fill(`${brokerRow} input[name=mailbox]`, "1");
  await page.click(`${brokerRow} button.save`);
  const message = await textOf(`${brokerRow} .message.saved`);
  before = await untilCharts({ deliveredPerSecond: { points: 1 } });
  const modes = await page.$$eval("#actors tbody tr.not-running", (rows) => rows.map((r) => r.dataset.kind));
  return { policyEditable, bytesEditable, unused, message, before, notRunning: modes };
});

await readCommand();

await step("chart_moved", async () => {
  const seen = await untilCharts({
    mailboxFull: { above: before.mailboxFull?.max ?? 0 },
    deliveredPerSecond: { above: before.deliveredPerSecond.max },
    publishedPerSecond: { above: before.publishedPerSecond?.max ?? 0 },
  });
  const legend = await page.$$eval("#charts-legend .key", (keys) => keys.map((k) => k.textContent.trim()));
  const shot = await docShot("#charts-panel", "admin-console-charts.png");
  return { charts: seen, legend, screenshot: shot };
});

await step("reset_to_default", async () => {
  const out = {};
  for (const kind of ["broker", "session"]) {
    const row = `#actors tbody tr${attr("data-kind", kind)}`;
    await page.click(`${row} button.reset`);
    const message = await textOf(`${row} .message.saved`);
    out[kind] = {
      message,
      mailbox: await page.inputValue(`${row} input[name=mailbox]`),
      resetDisabled: await page.locator(`${row} button.reset`).isDisabled(),
      note: await textOf(`${row} .default`),
    };
  }
  out.persist = await textOf("#actors-persist");
  out.screenshot = await docShot("#actors-panel", "admin-console-actors.png");
  return out;
});

await step("quota_edited", async () => {
  const form = "#quota-form";
  await page.locator(`${form} input[name=maxConnections]`).waitFor({ state: "visible", timeout });
  await page.fill(`${form} input[name=maxConnections]`, "500");
  await page.click(`${form} button.save`);
  const message = await textOf(`${form} .message.saved`);
  const quotas = await until(() => {
    const t = document.querySelector("#tenant-quotas").textContent;
    return t.includes("500 connections") ? t : null;
  });
  const shot = await docShot("#tenant-panel", "admin-console-tenant.png");
  return { message, quotas, screenshot: shot };
});

await step("operator_only", async () => {
  await page.click("#logout");
  await page.locator("#login-panel").waitFor({ state: "visible", timeout });
  const { whoami } = await signIn(adminToken);
  const denied = await textOf("#actors-denied");
  const tenants = await until(
    () => {
      const keys = [...document.querySelectorAll("#tenants tbody tr")].map((r) => r.dataset.tenant);
      return keys.length ? keys : null;
    },
  );
  // The Admin's console is watching its tenant live (its own socket is open) before the test
  // counts the tenant's connections.
  await page.locator('#activity-state[data-state="live"]').waitFor({ state: "visible", timeout });
  return {
    whoami,
    denied,
    actorsTableVisible: await page.locator("#actors").isVisible(),
    chartsVisible: await page.locator("#charts-panel").isVisible(),
    quotaFormVisible: await page.locator("#quota-form").isVisible(),
    tenants,
  };
});

await step("finished", async () => {
  const errors = [...pageErrors];
  await shutdown();
  return { pageErrors: errors };
});
process.exit(0);
