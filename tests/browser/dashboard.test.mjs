#!/usr/bin/env node
// End-to-end test of the live dashboard (/analytics/main) in headless Chromium.
//
// Starts a private stack with `hashinsight up --detach`, signs in through the page as seeded
// users, adds miners through the form and checks that the portfolio updates WITHOUT a reload to
// the figures the database holds; reads the charts' data; kills the portfolio worker and checks
// the page still updates after the supervisor restarts it; checks tenant isolation of the live
// pushes and the viewer's forecast panel; saves screenshots at desktop and phone widths.
//
//   cd web && npm ci && cd .. && node tests/browser/dashboard.test.mjs
//
// Environment:
//   HI_BIN        the hashinsight binary (default: build/bin/hashinsight under the repository)
//   HI_ARTIFACTS  where screenshots (and, on failure, the stack's logs) go (default: a temp dir)
//   HI_CHROMIUM   the browser (default: /usr/bin/chromium)
//   WEB_DIR       passed on to `up`: the API then serves the page from there (default: embedded)
//
// Exits 0 when every check passed, 1 with the failing check's message otherwise.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(new URL('../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.resolve(REPO, process.env.HI_BIN || 'build/bin/hashinsight');
const CHROMIUM = process.env.HI_CHROMIUM || '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = 180_000;
const UPDATE_TIMEOUT_MS = 30_000;
const OPERATOR_SCOPES = 'miners:write,portfolio:read,intel:read,calc:read';

const artifacts = process.env.HI_ARTIFACTS
  ? path.resolve(process.env.HI_ARTIFACTS)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'hi-dashboard-artifacts-'));
fs.mkdirSync(artifacts, { recursive: true });

const started = Date.now();
const checked = [];
function ok(what) {
  checked.push(what);
  console.log(`ok ${String(checked.length).padStart(2)} - ${what}  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
function log(what) {
  console.log(`#  ${what}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, fn, { timeout = UPDATE_TIMEOUT_MS, every = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(every);
  }
}

// ------------------------------------------------------------------ processes

function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

// Every process below `root`, read from /proc.
function descendants(root) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  const out = [];
  const queue = [root];
  while (queue.length) {
    for (const c of children.get(queue.shift()) || []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

// PostgreSQL = N, Redis = N+1, API = N+2; below the kernel's ephemeral range.
async function freePortBase() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + 3 * Math.floor(Math.random() * 3000);
    const free = await Promise.all([0, 1, 2].map((i) => portFree(base + i)));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no three free consecutive ports found');
}

// ------------------------------------------------------------------ the stack

class Stack {
  constructor() {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hi-dashboard-'));
    // The postgres user must traverse it (`up` runs PostgreSQL as postgres when root).
    fs.chmodSync(this.dataDir, 0o755);
    this.up = null;
    this.stopped = false;
  }

  env() {
    const env = { ...process.env, LOG_FORMAT: 'text' };
    for (const k of ['DATABASE_URL', 'REDIS_URL', 'HI_DATA_DIR', 'HI_PORT_BASE', 'JWT_SECRET', 'HTTP_PORT']) {
      delete env[k];
    }
    return env;
  }

  async start() {
    assert.ok(fs.existsSync(BIN), `${BIN} does not exist: build it, or set HI_BIN`);
    const base = await freePortBase();
    const logPath = path.join(this.dataDir, 'up-command.log');
    const fd = fs.openSync(logPath, 'w');
    log(`starting the stack: ${BIN} up --data-dir ${this.dataDir} --port-base ${base} --detach`);
    const child = spawn(BIN, ['up', '--data-dir', this.dataDir, '--port-base', String(base), '--detach'], {
      env: this.env(), stdio: ['ignore', fd, fd],
    });
    fs.closeSync(fd);
    const code = await new Promise((resolve) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve('timeout'); }, 120_000);
      child.on('exit', (c, signal) => { clearTimeout(timer); resolve(c ?? signal); });
      // ETXTBSY while the binary is being relinked, EACCES, ...
      child.on('error', (e) => { clearTimeout(timer); resolve(`${e.code || e.message} (spawn)`); });
    });
    this.readUp();
    if (typeof code === 'string' && code.endsWith('(spawn)')) {
      throw new Error(`cannot run ${BIN}: ${code.replace(' (spawn)', '')}`);
    }
    if (code !== 0) {
      throw new Error(`hashinsight up exited with ${code}:\n${fs.readFileSync(logPath, 'utf8').slice(-3000)}`);
    }
    assert.ok(this.up && alive(this.up.pid), 'up.json names no running supervisor');
    await until('GET /ready to answer 200', async () => (await fetch(`${this.up.api_url}/ready`)).status === 200,
      { timeout: 60_000, every: 250 });
    return this.up;
  }

  readUp() {
    try {
      this.up = JSON.parse(fs.readFileSync(path.join(this.dataDir, 'up.json'), 'utf8'));
    } catch {
      // Not written (yet): keep the last one read.
    }
    return this.up;
  }

  token(user, tenant, scopes) {
    const out = execFileSync(BIN, ['token', '--user', String(user), '--tenant', String(tenant), '--scopes', scopes], {
      env: { ...this.env(), HI_DATA_DIR: this.dataDir, DATABASE_URL: this.up.database_url },
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = out.split('\n').map((l) => l.trim()).filter(Boolean);
    const token = lines[lines.length - 1];
    assert.match(token || '', /^[\w-]+\.[\w-]+\.[\w-]+$/, `hashinsight token printed no JWT: ${out}`);
    return token;
  }

  // Runs one SELECT in the tenant (psql; the owner role, with app.tenant_id set for RLS).
  sql(tenant, query) {
    const out = execFileSync('psql', [this.up.database_url, '-X', '-At', '-v', 'ON_ERROR_STOP=1',
      '-c', `SELECT set_config('app.tenant_id', '${Number(tenant)}', false)`, '-c', query], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    });
    return out.trim().split('\n').slice(1).map((line) => line.split('|'));
  }

  // What the portfolio must show, from user_miners x miner_models (active rows).
  expected(tenant, user) {
    const [row] = this.sql(tenant, `
      SELECT coalesce(sum(um.quantity), 0),
             coalesce(sum(um.quantity * mm.hashrate_ths), 0),
             coalesce(sum(um.quantity * mm.power_w), 0) / 1000.0,
             coalesce(string_agg(DISTINCT um.model_id::text, ','), '')
        FROM user_miners um JOIN miner_models mm ON mm.id = um.model_id
       WHERE um.tenant_id = ${Number(tenant)} AND um.user_id = ${Number(user)} AND um.status = 'active'`);
    return {
      units: Number(row[0]),
      hashrate_ths: Number(row[1]),
      power_kw: Number(row[2]),
      model_ids: row[3] ? row[3].split(',').map(Number).sort((a, b) => a - b) : [],
    };
  }

  minerIds(tenant) {
    return this.sql(tenant, `SELECT id FROM user_miners WHERE tenant_id = ${Number(tenant)} ORDER BY id`)
      .map((r) => Number(r[0]));
  }

  // SIGTERM to the supervisor, then whatever is left of its tree is killed.
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    const up = this.readUp();
    if (!up || !up.pid) return;
    const tree = descendants(up.pid);
    const postmaster = this.postmasterPid();
    try { process.kill(up.pid, 'SIGTERM'); } catch { /* already gone */ }
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && (alive(up.pid) || tree.some(alive))) await sleep(200);
    const left = [up.pid, ...tree, ...(postmaster ? [postmaster] : [])].filter(alive);
    for (const pid of left) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    if (left.length) log(`killed ${left.length} process(es) the supervisor left behind: ${left.join(' ')}`);
    else log(`stack stopped (supervisor ${up.pid})`);
  }

  postmasterPid() {
    try {
      return Number(fs.readFileSync(path.join(this.dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]) || null;
    } catch {
      return null;
    }
  }

  keepLogs() {
    const from = path.join(this.dataDir, 'logs');
    const to = path.join(artifacts, 'logs');
    try {
      fs.cpSync(from, to, { recursive: true });
      fs.copyFileSync(path.join(this.dataDir, 'up-command.log'), path.join(to, 'up-command.log'));
      log(`the stack's logs are in ${to}`);
    } catch {
      // Nothing to keep.
    }
  }
}

// ------------------------------------------------------------------ the page

const state = (page) => page.evaluate(() => ({
  portfolio: window.hiState?.portfolio ?? null,
  pushes: window.hiState?.pushes ?? [],
  lastWrite: window.hiState?.lastWrite ?? null,
  noReload: window.__noReload === true,
}));

async function openPage(browser, name, viewport, errors) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`${name} console: ${m.text()}`);
  });
  return { context, page };
}

async function signInWithForm(page, url, token) {
  await page.goto(url);
  await page.locator('[data-testid="token-input"]').waitFor({ state: 'visible', timeout: 15_000 });
  await page.fill('[data-testid="token-input"]', token);
  await page.click('[data-testid="sign-in"]');
  await waitLive(page);
}

async function waitLive(page) {
  await page.locator('#dashboard-view').waitFor({ state: 'visible', timeout: 15_000 });
  await page.waitForFunction(() => window.hiState && window.hiState.portfolio !== null, null, { timeout: 15_000 });
  await page.locator('[data-testid="stream-state"]').filter({ hasText: /^live$/ }).waitFor({ timeout: 15_000 });
}

// Adds miners through the form; answers the write's {id, seq}.
async function addMinerWithForm(page, { modelId, quantity, price }) {
  const before = await page.evaluate(() => window.hiState.lastWrite?.seq ?? null);
  await page.selectOption('[data-testid="model-select"]', String(modelId));
  await page.fill('[data-testid="quantity-input"]', String(quantity));
  await page.fill('[data-testid="price-input"]', price === undefined ? '' : String(price));
  await page.click('[data-testid="add-miner"]');
  const handle = await page.waitForFunction((prev) => {
    const w = window.hiState.lastWrite;
    return w && w.seq !== prev ? w : null;
  }, before, { timeout: 15_000 });
  return handle.jsonValue();
}

async function waitShown(page, seq, what) {
  await page.waitForFunction((s) => (window.hiState.portfolio?.through_seq ?? -1) >= s, seq,
    { timeout: UPDATE_TIMEOUT_MS }).catch(() => {
    throw new Error(`${what}: the page never showed a portfolio through seq ${seq}`);
  });
}

async function shownNumbers(page) {
  return page.evaluate(() => {
    const read = (id) => {
      const el = document.querySelector(`[data-testid="${id}"]`);
      return el && el.dataset.value !== undefined ? Number(el.dataset.value) : null;
    };
    return {
      units: read('units'),
      hashrate_ths: read('hashrate_ths'),
      power_kw: read('power_kw'),
      through_seq: read('through_seq'),
      model_ids: [...document.querySelectorAll('[data-testid="model-row"]')]
        .map((tr) => Number(tr.dataset.modelId)).sort((a, b) => a - b),
    };
  });
}

function assertMatches(shown, expected, who) {
  assert.equal(shown.units, expected.units, `${who}: units shown ${shown.units}, database ${expected.units}`);
  assert.ok(Math.abs(shown.hashrate_ths - expected.hashrate_ths) <= 0.05,
    `${who}: hashrate shown ${shown.hashrate_ths} TH/s, database ${expected.hashrate_ths}`);
  assert.ok(Math.abs(shown.power_kw - expected.power_kw) <= 0.005,
    `${who}: power shown ${shown.power_kw} kW, database ${expected.power_kw}`);
  assert.deepEqual(shown.model_ids, expected.model_ids, `${who}: the per-model table's models`);
}

async function screenshot(page, name, viewport) {
  await page.setViewportSize(viewport);
  await page.evaluate(() => window.scrollTo(0, 0));
  await sleep(400);
  const file = path.join(artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// ------------------------------------------------------------------ the test

let browser = null;

async function closeBrowser() {
  const b = browser;
  browser = null;
  if (b) await b.close().catch(() => {});
}

async function run(stack) {
  const errors = [];
  const up = await stack.start();
  const dashboard = up.dashboard_url || `${up.api_url}/analytics/main`;
  ok(`stack up: ${up.api_url} (supervisor ${up.pid}, parts ${Object.keys(up.parts || {}).join(', ')})`);

  const res = await fetch(dashboard);
  assert.equal(res.status, 200, `GET ${dashboard} answered ${res.status}`);
  const html = await res.text();
  for (const asset of ['/analytics/assets/style.css', '/analytics/assets/chart.umd.js', '/analytics/assets/app.js']) {
    assert.ok(html.includes(asset), `the page does not reference ${asset}`);
    const a = await fetch(new URL(asset, up.api_url));
    assert.equal(a.status, 200, `GET ${asset} answered ${a.status} without a session`);
  }
  const external = html.replace(/<!--[\s\S]*?-->/g, '').match(/(?:src|href)="(?:https?:)?\/\/[^"]*"/g);
  assert.equal(external, null, `the page loads something from outside: ${external}`);
  ok('the page and its assets are served without a session, nothing from outside');

  const tokens = {
    operator: stack.token(102, 1, OPERATOR_SCOPES),
    tenant2: stack.token(202, 2, OPERATOR_SCOPES),
    viewer: stack.token(105, 1, 'portfolio:read,calc:read'),
  };

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const desktop = { width: 1280, height: 900 };
    const phone = { width: 390, height: 844 };

    // --- operator 102 (tenant 1): sign in through the form
    const a = await openPage(browser, 'operator', desktop, errors);
    await a.page.goto(dashboard);
    await a.page.locator('[data-testid="token-input"]').waitFor({ state: 'visible', timeout: 15_000 });
    ok('with no session the page shows the sign-in form');
    const shots = [await screenshot(a.page, 'signin-phone-390.png', phone)];
    await a.page.setViewportSize(desktop);
    await a.page.fill('[data-testid="token-input"]', tokens.operator);
    await a.page.click('[data-testid="sign-in"]');
    await waitLive(a.page);
    const cookies = await a.context.cookies();
    const session = cookies.find((c) => c.name === 'hi_session');
    assert.ok(session && session.httpOnly, 'no HttpOnly hi_session cookie after sign-in');
    assert.equal(await a.page.evaluate(() => JSON.stringify(localStorage).includes('eyJ')), false,
      'the token is in localStorage');
    ok('operator 102 signed in with the form: HttpOnly hi_session cookie, stream "live", token not stored');
    await a.page.evaluate(() => { window.__noReload = true; });

    // --- tenant 2 operator 202: signs in with ?token=, records its pushes
    const b = await openPage(browser, 'tenant2', desktop, errors);
    await b.page.goto(`${dashboard}?token=${encodeURIComponent(tokens.tenant2)}`);
    await waitLive(b.page);
    assert.ok(!b.page.url().includes('token='), `the token stayed in the URL: ${b.page.url()}`);
    await b.page.evaluate(() => { window.__noReload = true; });
    const bBefore = await state(b.page);
    ok('operator 202 (tenant 2) signed in with ?token=, which was removed from the URL');

    // --- charts before any write
    await a.page.waitForFunction(() => {
      const c = window.Chart && Chart.getChart(document.getElementById('projection-chart'));
      return c && c.data.datasets[0].data.length === 30;
    }, null, { timeout: 15_000 });

    // --- validation and plan errors in words
    await a.page.fill('[data-testid="quantity-input"]', '0');
    await a.page.click('[data-testid="add-miner"]');
    await a.page.locator('[data-testid="error-quantity"]').filter({ hasText: /\S/ }).waitFor({ timeout: 10_000 });
    const qtyError = await a.page.textContent('[data-testid="error-quantity"]');
    await a.page.fill('[data-testid="quantity-input"]', '100000');
    await a.page.click('[data-testid="add-miner"]');
    await a.page.locator('[data-testid="add-miner-message"]').filter({ hasText: /plan/i }).waitFor({ timeout: 10_000 });
    const planError = await a.page.textContent('[data-testid="add-miner-message"]');
    ok(`a 400 is shown beside its field ("${qtyError.trim()}"), the plan's 409 as a message ("${planError.trim()}")`);

    // --- first write through the form: visible without a reload, figures as in the database
    const w1 = await addMinerWithForm(a.page, { modelId: 40, quantity: 3, price: 0.05 });
    await waitShown(a.page, w1.seq, 'first write');
    const e1 = stack.expected(1, 102);
    assertMatches(await shownNumbers(a.page), e1, 'after the first write');
    assert.equal((await state(a.page)).noReload, true, 'the page was reloaded');
    ok(`miner ${w1.id} added with the form shows without a reload: ${e1.units} units, ${e1.hashrate_ths} TH/s, ` +
      `${e1.power_kw} kW as user_miners x miner_models says`);

    const visible = await a.page.locator('[data-testid="visible-after"]').filter({ hasText: /visible after \d+ ms/i })
      .textContent({ timeout: 10_000 });
    ok(`the page says "${visible.trim()}"`);

    // --- charts after the write
    const projection = await a.page.waitForFunction(() => {
      const c = Chart.getChart(document.getElementById('projection-chart'));
      const p = window.hiState.portfolio;
      const first = c?.data.datasets[0].data[0];
      if (!c || !p || c.data.datasets[0].data.length !== 30 || !(first > 0)) return null;
      return { n: c.data.labels.length, points: c.data.datasets[0].data.length, first, profit: p.profit_usd_day };
    }, null, { timeout: 15_000 }).then((h) => h.jsonValue());
    assert.equal(projection.n, 30, 'projection labels');
    assert.ok(Math.abs(projection.first - projection.profit) <= 0.01 * Math.abs(projection.profit) + 0.01,
      `projection day 1 profit ${projection.first} vs the portfolio's ${projection.profit}`);
    ok(`projection chart: 30 points, refreshed after the write (day 1 ${projection.first.toFixed(2)} USD)`);

    const forecast = await a.page.evaluate(() => {
      const c = Chart.getChart(document.getElementById('forecast-chart'));
      if (!c) return null;
      const byLabel = Object.fromEntries(c.data.datasets.map((d) => [d.label, d.data]));
      return { labels: c.data.labels, byLabel };
    });
    assert.ok(forecast, 'no forecast chart for the operator');
    const { forecast: value, 'lower 95%': lower, 'upper 95%': upper } = forecast.byLabel;
    assert.ok(value && lower && upper, `forecast datasets: ${Object.keys(forecast.byLabel).join(', ')}`);
    assert.equal(value.length, 7, 'forecast points');
    assert.equal(lower.length, 7, 'lower 95% points');
    assert.equal(upper.length, 7, 'upper 95% points');
    for (let i = 0; i < 7; i++) {
      assert.ok(lower[i] < value[i] && value[i] < upper[i],
        `forecast day ${i + 1}: ${lower[i]} < ${value[i]} < ${upper[i]}`);
    }
    ok(`forecast chart: 7 points, lower 95% < forecast < upper 95% on each (day 1 ${Math.round(value[0])} USD)`);

    // --- kill -9 the portfolio worker; the supervisor restarts it; the page still updates
    const workerName = Object.keys(up.parts || {}).find((n) => /portfolio/.test(n));
    assert.ok(workerName, `no portfolio worker in up.json parts: ${JSON.stringify(up.parts)}`);
    const oldPid = up.parts[workerName];
    process.kill(oldPid, 'SIGKILL');
    const newPid = await until(`a new pid for ${workerName} in up.json`, () => {
      const pid = stack.readUp()?.parts?.[workerName];
      return pid && pid !== oldPid && alive(pid) ? pid : null;
    }, { timeout: 30_000 });
    ok(`kill -9 ${workerName} (${oldPid}): restarted as ${newPid}`);

    const w2 = await addMinerWithForm(a.page, { modelId: 1, quantity: 5 });
    await waitShown(a.page, w2.seq, 'the write after the worker restart');
    const e2 = stack.expected(1, 102);
    assertMatches(await shownNumbers(a.page), e2, 'after the worker restart');
    assert.equal((await state(a.page)).noReload, true, 'the page was reloaded');
    ok(`after the restart miner ${w2.id} shows too: ${e2.units} units, ${e2.hashrate_ths} TH/s, still no reload`);

    // --- tenant 2 saw none of it, and does see its own write
    await sleep(1000);
    const bMid = await state(b.page);
    const strangers = bMid.pushes.filter((p) => String(p.user_id) !== '202');
    assert.deepEqual(strangers, [], 'tenant 2 received pushes of another user');
    assert.equal(bMid.pushes.length, bBefore.pushes.length,
      `tenant 2 received ${bMid.pushes.length - bBefore.pushes.length} push(es) while only tenant 1 wrote`);
    const tenant1Miners = stack.minerIds(1);
    const bMiners = await b.page.evaluate(async () => {
      const r = await fetch('/api/miners', { credentials: 'same-origin' });
      return (await r.json()).map((m) => m.id);
    });
    const bRows = await b.page.$$eval('[data-testid="miner-row"]',
      (rows) => rows.map((r) => Number(r.dataset.minerId)));
    assert.deepEqual([...bMiners, ...bRows].filter((id) => tenant1Miners.includes(id)), [],
      'tenant 2 sees miners of tenant 1');
    const w3 = await addMinerWithForm(b.page, { modelId: 2, quantity: 4 });
    await waitShown(b.page, w3.seq, 'tenant 2\'s own write');
    const bAfter = await state(b.page);
    assert.ok(bAfter.pushes.some((p) => p.through_seq >= w3.seq && String(p.user_id) === '202'),
      'tenant 2 got no push for its own write');
    assert.ok(bAfter.pushes.every((p) => String(p.user_id) === '202'), 'tenant 2 received pushes of another user');
    assertMatches(await shownNumbers(b.page), stack.expected(2, 202), 'tenant 2');
    assert.equal(bAfter.noReload, true, 'tenant 2\'s page was reloaded');
    ok('tenant 2 received none of tenant 1\'s pushes and sees none of its miners, ' +
      `yet got the push for its own write (seq ${w3.seq})`);
    shots.push(await screenshot(b.page, 'tenant2-desktop-1280.png', desktop));

    // --- the API dies: the page says "reconnecting…", then goes live again and still updates;
    // tenant 2's session was ended meanwhile, so its page goes back to sign-in when the stream
    // cannot come back.
    const apiPid = up.parts.api;
    if (apiPid) {
      const ended = await b.page.evaluate(async () =>
        (await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin' })).status);
      assert.equal(ended, 204, `DELETE /api/session answered ${ended}`);
      process.kill(apiPid, 'SIGKILL');
      await a.page.locator('[data-testid="stream-state"]').filter({ hasText: /^reconnecting…$/ })
        .waitFor({ timeout: 15_000 });
      await until('the API to be restarted', () => {
        const pid = stack.readUp()?.parts?.api;
        return pid && pid !== apiPid && alive(pid);
      }, { timeout: 30_000 });
      await a.page.locator('[data-testid="stream-state"]').filter({ hasText: /^live$/ }).waitFor({ timeout: 30_000 });
      const w4 = await addMinerWithForm(a.page, { modelId: 40, quantity: 1 });
      await waitShown(a.page, w4.seq, 'the write after the API restart');
      assertMatches(await shownNumbers(a.page), stack.expected(1, 102), 'after the API restart');
      assert.equal((await state(a.page)).noReload, true, 'the page was reloaded');
      ok('kill -9 api: the stream said "reconnecting…", then "live" again, and the next write showed');
      await b.page.locator('[data-testid="token-input"]').waitFor({ state: 'visible', timeout: 15_000 });
      const expired = await b.page.textContent('[data-testid="signin-message"]');
      assert.match(expired, /session has expired/i, 'tenant 2\'s page after its session ended');
      ok(`a page whose session ended goes back to sign-in when its stream breaks: "${expired.trim()}"`);
    }

    // --- screenshots of the operator
    shots.push(await screenshot(a.page, 'operator-desktop-1280.png', desktop));
    shots.push(await screenshot(a.page, 'operator-phone-390.png', phone));
    const overflow = await a.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `at 390 px the page is ${overflow} px wider than the screen`);

    // --- viewer 105: no intel:read, the forecast panel says so
    const c = await openPage(browser, 'viewer', phone, errors);
    await signInWithForm(c.page, dashboard, tokens.viewer);
    const message = await c.page.locator('[data-testid="forecast-message"]').filter({ hasText: /intel:read/ })
      .textContent({ timeout: 15_000 });
    assert.equal(await c.page.isVisible('#forecast-chart'), false, 'the viewer sees a forecast chart');
    assert.equal(await c.page.evaluate(() => Chart.getChart(document.getElementById('forecast-chart')) === undefined),
      true, 'a forecast chart exists for the viewer');
    ok(`viewer 105: "${message.trim()}"`);
    shots.push(await screenshot(c.page, 'viewer-phone-390.png', phone));
    shots.push(await screenshot(c.page, 'viewer-desktop-1280.png', desktop));
    ok(`screenshots: ${shots.map((s) => path.basename(s)).join(', ')} in ${artifacts}`);

    // --- sign out
    await a.page.click('[data-testid="sign-out"]');
    await a.page.locator('[data-testid="token-input"]').waitFor({ state: 'visible', timeout: 10_000 });
    const after = await a.page.evaluate(async () =>
      (await fetch('/api/portfolio', { credentials: 'same-origin' })).status);
    assert.equal(after, 401, `GET /api/portfolio after sign-out answered ${after}`);
    ok('sign out ends the session: the form is back and GET /api/portfolio answers 401');

    assert.deepEqual(errors, [], 'errors in the page');
    ok('no uncaught errors in any page');
  } finally {
    await closeBrowser();
  }
}

async function main() {
  log(`binary ${BIN}; artifacts ${artifacts}`);
  const stack = new Stack();
  let cleaning = null;
  // Closes the browser and stops the stack, once, whatever called it.
  const cleanup = (failed) => {
    cleaning ??= (async () => {
      await closeBrowser();
      if (failed) stack.keepLogs();
      await stack.stop().catch((e) => console.error(`# stopping the stack: ${e.message}`));
      try {
        fs.rmSync(stack.dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
      } catch (e) {
        console.error(`# ${stack.dataDir} not removed: ${e.message}`);
      }
    })();
    return cleaning;
  };
  const fail = async (e) => {
    const message = e instanceof Error ? e.message : String(e);
    console.error(`not ok - ${message}`);
    if (e instanceof Error && e.stack && !(e instanceof assert.AssertionError)) console.error(e.stack);
    console.error(`# ${checked.length} check(s) passed before the failure; artifacts in ${artifacts}`);
    await cleanup(true);
    process.exit(1);
  };
  const timer = setTimeout(() => fail(new Error(`the test took longer than ${OVERALL_TIMEOUT_MS / 1000} s`)),
    OVERALL_TIMEOUT_MS);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => fail(new Error(`interrupted (${signal})`)));
  process.on('uncaughtException', (e) => fail(e));
  process.on('unhandledRejection', (e) => fail(e));

  try {
    await run(stack);
  } catch (e) {
    clearTimeout(timer);
    await fail(e);
  }
  clearTimeout(timer);
  await cleanup(false);
  console.log(`# all ${checked.length} checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
    `screenshots in ${artifacts}`);
}

main();
