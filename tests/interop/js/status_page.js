// The status page (GET / of Tern's HTTP listener) in a real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core), for tests/interop/status_page.sh. MQTT clients
// are MQTT.js over TCP in this same process. Prints "PASS name" / "FAIL name: why" per step and
// stops at the first failure; every wait is bounded, and the whole run ends within 120 s.
//   node status_page.js live HTTP_URL MQTT_URL TOKEN_FILE TAG [SCREENSHOT.png]
//       the broker serves the admin API with the token in TOKEN_FILE and declares the queue
//       `jobs` (filter jobs/#) and a TLS listener; TAG makes client ids unique
//   node status_page.js disabled HTTP_URL
//       the broker's admin API is off
//   CHROMIUM=path   the browser (default /usr/bin/chromium)
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const mqtt = require("mqtt");
const { chromium } = require("playwright-core");

const [mode, httpUrl, mqttUrl, tokenFile, tag, screenshot] = process.argv.slice(2);
if (!(mode === "live" && tag) && !(mode === "disabled" && httpUrl)) {
  console.error("usage: status_page.js live HTTP_URL MQTT_URL TOKEN_FILE TAG [SCREENSHOT.png]");
  console.error("       status_page.js disabled HTTP_URL");
  process.exit(2);
}

const WAIT = 15000; // one condition on the page (the page polls every 2 s)
const KEY = "tern.adminToken"; // the page's sessionStorage key
let failed = false;
const pass = (name) => console.log(`PASS status page: ${name}`);
class Fail extends Error {}
const fail = (why) => {
  throw new Fail(why);
};
setTimeout(() => {
  console.log("FAIL status page: the run did not end within 120 s");
  process.exit(1);
}, 120000).unref();

// A step: PASS when `fn` resolves, FAIL (and no further step) when it throws.
async function step(name, fn) {
  try {
    await fn();
    pass(name);
  } catch (e) {
    const why = e instanceof Fail ? e.message : `${e.name}: ${e.message.split("\n")[0]}`;
    console.log(`FAIL status page: ${name}: ${why}`);
    failed = true;
    throw e;
  }
}

async function launch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tern-chromium-"));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
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
    viewport: { width: 1000, height: 700 },
    timeout: 30000,
  });
  const page = context.pages()[0] || (await context.newPage());
  // Script errors and CSP violations fail the run; "Failed to load resource" is Chromium's note
  // for every 401/404 answer (the page's first request has no token; /favicon.ico is absent).
  const problems = [];
  page.on("pageerror", (e) => problems.push(`script error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console: ${m.text()}`);
    }
  });
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { page, problems, close };
}

// Waits until the page's text content of `selector` is `want`.
async function waitText(page, selector, want, timeout = WAIT) {
  try {
    await page.waitForFunction(
      ([s, w]) => {
        const e = document.querySelector(s);
        return e !== null && e.textContent.trim() === w;
      },
      [selector, want],
      { timeout },
    );
  } catch (e) {
    const got = await page.locator(selector).textContent().catch(() => null);
    fail(`${selector} shows ${JSON.stringify(got)}, not ${JSON.stringify(want)}, after ${timeout / 1000} s`);
  }
}

// Client ids listed in the clients table, as the page shows them (text).
const listedIds = (page) =>
  page.$$eval("#clients tbody tr[data-client-id]", (rows) => rows.map((r) => r.cells[0].textContent));

async function checkRoot(url) {
  const res = await fetch(url);
  const body = await res.text();
  const type = res.headers.get("content-type");
  const csp = res.headers.get("content-security-policy");
  if (res.status !== 200) fail(`GET / answered ${res.status}`);
  if (!/^text\/html;\s*charset=utf-8$/i.test(type || "")) fail(`content-type ${type}`);
  if (!csp || !csp.includes("'self'")) fail(`Content-Security-Policy ${csp}`);
  if (!body.includes('name="token"')) fail("the page has no token input");
  return csp;
}

// MQTT.js over TCP: resolves once connected and subscribed.
function connect(clientId, protocolVersion, username) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(mqttUrl, {
      clientId,
      protocolVersion,
      username,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      keepalive: 60,
    });
    c.disconnectReason = null;
    c.closed = false;
    c.on("disconnect", (packet) => {
      c.disconnectReason = packet.reasonCode;
    });
    c.on("close", () => {
      c.closed = true;
    });
    c.once("error", reject);
    c.once("connect", () => {
      c.subscribe(`${tag}/sub/#`, { qos: 1 }, (e) => (e ? reject(e) : resolve(c)));
    });
  });
}

async function until(cond, timeout, what) {
  const end = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > end) fail(`no ${what} within ${timeout / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function live() {
  const token = fs.readFileSync(tokenFile, "utf8").trim();
  // The last one is disconnected from the page: a v5 client, so it gets a DISCONNECT with a
  // reason code; its id needs escaping in HTML and percent-encoding in the URL.
  const specs = [
    [`${tag}-alpha`, 4, undefined],
    [`${tag}-bravo`, 5, "<i>operator</i>"],
    [`${tag}-charlie`, 4, undefined],
    [`${tag}-<img src=x onerror="window.__xss=1"> & 'q'/x%20#`, 5, "<b>eve</b>"],
  ];
  const ids = specs.map((s) => s[0]);
  const victimId = ids[ids.length - 1];
  const n = ids.length;
  const clients = [];
  const { page, problems, close } = await launch();
  let traffic = null;
  try {
    await step("GET / serves the page as text/html; charset=utf-8 with a Content-Security-Policy", async () => {
      await checkRoot(httpUrl);
    });
    await step(`${n} MQTT.js clients connected (v3.1.1 and v5)`, async () => {
      for (const [id, v, user] of specs) clients.push(await connect(id, v, user));
    });
    await step("without a token the page asks for one (password input named token)", async () => {
      await page.goto(httpUrl, { timeout: WAIT });
      await page.locator('input[type="password"][name="token"]').waitFor({ state: "visible", timeout: WAIT });
    });
    await step("a wrong token is refused with a clear message, and the token asked again", async () => {
      const input = page.locator('input[type="password"][name="token"]');
      await input.fill(`wrong-${token}`);
      await input.press("Enter");
      await page.locator("#login-why").waitFor({ state: "visible", timeout: WAIT });
      const why = await page.locator("#login-why").textContent();
      if (!/refused/.test(why) || !/again/.test(why)) fail(`message: ${why}`);
      await input.waitFor({ state: "visible", timeout: WAIT });
      if ((await page.evaluate((k) => sessionStorage.getItem(k), KEY)) !== null) fail("the wrong token was kept");
    });
    await step(`with the token typed in, "connected clients" shows ${n}`, async () => {
      const input = page.locator('input[type="password"][name="token"]');
      await input.fill(token);
      await input.press("Enter");
      await waitText(page, "#connected", String(n));
      const label = await page.locator("#connected + .label").textContent();
      if (label !== "connected clients") fail(`the count is labelled ${JSON.stringify(label)}`);
      if ((await page.evaluate((k) => sessionStorage.getItem(k), KEY)) !== token) fail("token not in sessionStorage");
    });
    await step("every client id is in the clients table, as text (nothing from it runs or renders as HTML)", async () => {
      try {
        await page.waitForFunction(
          (want) => {
            const got = [...document.querySelectorAll("#clients tbody tr[data-client-id]")].map(
              (r) => r.cells[0].textContent,
            );
            return want.every((id) => got.includes(id));
          },
          ids,
          { timeout: WAIT },
        );
      } catch (_) {
        fail(`listed: ${JSON.stringify(await listedIds(page))}`);
      }
      const html = await page.evaluate(() => ({
        xss: window.__xss,
        img: document.querySelectorAll("main img, main b, main i").length,
        users: [...document.querySelectorAll("#clients tbody tr[data-client-id]")].map((r) => r.cells[1].textContent),
      }));
      if (html.xss !== undefined || html.img !== 0) fail(`markup from client data was rendered: ${JSON.stringify(html)}`);
      if (!html.users.includes("<i>operator</i>")) fail(`user names: ${JSON.stringify(html.users)}`);
    });
    await step("after a reload the token comes from sessionStorage: no question asked", async () => {
      await page.reload({ timeout: WAIT });
      await waitText(page, "#connected", String(n));
      if (await page.locator("#login").isVisible()) fail("the token form is shown");
    });
    await step("live figures: messages in / s, the queue jobs with its backlog, the TLS listener's expiry", async () => {
      // alpha publishes to the queue (no consumer: the backlog grows), a retained message, and
      // to the clients' own filter; the page then shows a rate from two successive polls.
      const alpha = clients[0];
      alpha.publish(`${tag}/retained`, "kept", { qos: 1, retain: true });
      let i = 0;
      traffic = setInterval(() => {
        i++;
        alpha.publish(`jobs/${tag}/${i}`, `job ${i}`, { qos: 1 });
        alpha.publish(`${tag}/sub/t`, `reading ${i}`, { qos: i % 2 });
      }, 100);
      await page.waitForFunction(
        () => {
          const r = Number(document.getElementById("rate-in").textContent.replace(/,/g, ""));
          const q = [...document.querySelectorAll("#queues tbody tr")].find((tr) => tr.cells[0].textContent === "jobs");
          return r > 0 && q && Number(q.cells[3].textContent.replace(/,/g, "")) > 0;
        },
        null,
        { timeout: WAIT },
      );
      const tls = await page.$$eval("#listeners tbody tr", (rows) =>
        rows.map((r) => [...r.cells].map((c) => c.textContent)).filter((c) => c[1] === "tls"),
      );
      if (tls.length !== 1 || !/^\d{4}-\d{2}-\d{2}$/.test(tls[0][5]) || !/^\d/.test(tls[0][6])) {
        fail(`TLS listener row: ${JSON.stringify(tls)}`);
      }
      if (screenshot) {
        // One more poll so the growth column has a value too, then the picture of the whole
        // page, 1000 px wide.
        await page.waitForFunction(
          () => {
            const q = [...document.querySelectorAll("#queues tbody tr")].find((tr) => tr.cells[0].textContent === "jobs");
            return q && q.cells[4].textContent.startsWith("+");
          },
          null,
          { timeout: WAIT },
        );
        await page.screenshot({ path: screenshot, fullPage: true }); // 1000 px wide
        console.log(`  screenshot: ${screenshot}`);
      }
      clearInterval(traffic);
      traffic = null;
    });
    const victim = clients[clients.length - 1];
    await step("its row's Disconnect button disconnects the client: DISCONNECT 0x98 (v5), then the connection closes", async () => {
      await page
        .locator("#clients tbody tr")
        .filter({ has: page.getByText(victimId, { exact: true }) })
        .getByRole("button", { name: "Disconnect" })
        .click({ timeout: WAIT });
      await until(() => victim.closed, 10000, "close of the client's connection");
      if (victim.disconnectReason !== 0x98) {
        fail(`DISCONNECT reason ${victim.disconnectReason === null ? "none" : "0x" + victim.disconnectReason.toString(16)}`);
      }
      if (clients.slice(0, -1).some((c) => c.closed)) fail("another client was closed too");
    });
    await step(`then "connected clients" shows ${n - 1} and the row is gone`, async () => {
      await waitText(page, "#connected", String(n - 1));
      const got = await listedIds(page);
      if (got.includes(victimId) || got.length !== n - 1) fail(`listed: ${JSON.stringify(got)}`);
    });
    await step("390 px wide (a phone): the page itself does not scroll sideways", async () => {
      await page.setViewportSize({ width: 390, height: 800 });
      const w = await page.evaluate(() => document.documentElement.scrollWidth);
      if (w > 390) fail(`the page is ${w} px wide`);
    });
    await step("no script error and no Content-Security-Policy violation in the console", async () => {
      if (problems.length) fail(problems.join("; "));
    });
  } finally {
    if (traffic) clearInterval(traffic);
    for (const c of clients) c.end(true);
    await close();
  }
}

async function disabled() {
  const { page, problems, close } = await launch();
  try {
    await step("(API off) GET / still serves the page", async () => {
      await checkRoot(httpUrl);
    });
    await step('(API off) the page says "admin API is disabled" and how to turn it on, asks no token', async () => {
      await page.goto(httpUrl, { timeout: WAIT });
      const box = page.locator("#disabled");
      await box.waitFor({ state: "visible", timeout: WAIT });
      const text = await box.textContent();
      if (!text.includes("admin API is disabled") || !text.includes("admin_token_file")) fail(`shows: ${text}`);
      if (await page.locator("#login").isVisible()) fail("the token form is shown");
      if (problems.length) fail(problems.join("; "));
    });
  } finally {
    await close();
  }
}

(mode === "live" ? live() : disabled()).then(
  () => process.exit(failed ? 1 : 0),
  (e) => {
    if (!failed) console.log(`FAIL status page: ${e.message}`);
    process.exit(1);
  },
);
