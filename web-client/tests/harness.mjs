// Shared set-up for browser tests: a real `teleconsult serve` on loopback
// ports, and Debian's Chromium driven by playwright-core with fake devices.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');
export const screenshotDir = join(here, 'screenshots');

export function serverBinary() {
  return process.env.TELECONSULT_BIN ?? join(repoRoot, 'target', 'debug', 'teleconsult');
}

export async function freePort() {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolvePort(port));
    });
  });
}

/**
 * The database for a test server: a fresh SQLite file, or, when
 * TELECONSULT_BROWSER_POSTGRES names a server (an admin URL such as
 * postgres://postgres@127.0.0.1:5432/postgres), a fresh database on it.
 */
function testDatabase(port) {
  const admin = process.env.TELECONSULT_BROWSER_POSTGRES;
  if (!admin) return join(tmpdir(), `teleconsult-browser-test-${process.pid}-${port}.db`);
  const name = `tc_test_browser_${process.pid}_${port}`;
  execFileSync('psql', [admin, '-q', '-c', `CREATE DATABASE ${name}`]);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * Starts `teleconsult serve --demo` on a free loopback port and returns
 * { base, port, links: { clinician, patient, guest }, stop() }. `httpHost`
 * and `mediaIps` widen it to a test network namespace's host address; `db`
 * names the database (default: a fresh one).
 */
export async function startDemoServer(extraArgs = [], { httpHost = '127.0.0.1', mediaIps = ['127.0.0.1'], db } = {}) {
  const port = await freePort();
  const child = spawn(
    serverBinary(),
    ['serve', '--demo', '--http-addr', `${httpHost}:${port}`, '--media-port', '0', '--media-ips', mediaIps.join(','),
      '--db', db ?? testDatabase(port), ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TELECONSULT_LOG: process.env.TELECONSULT_LOG ?? 'warn' } },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const links = await new Promise((resolveLinks, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not print demo links; stderr: ${stderr}`)), 20000);
    child.once('exit', (code) => reject(new Error(`server exited with ${code}; stderr: ${stderr}`)));
    child.stdout.on('data', (d) => {
      stdout += d;
      const found = {};
      let role = null;
      for (const line of stdout.split('\n')) {
        const r = line.match(/^\s+(clinician|patient|guest) \(/);
        if (r) role = r[1];
        const url = line.match(/(http:\/\/\S+#token=\S+)/);
        if (url && role) found[role] = url[1];
      }
      const visit = stdout.match(/visit (v-[0-9a-f]+) with/);
      const patientLink = stdout.match(/(http:\/\/\S+\/join\/\S+)/);
      if (found.clinician && found.patient && found.guest && visit && patientLink) {
        clearTimeout(timer);
        resolveLinks({ ...found, visit: visit[1], patientLink: patientLink[1] });
      }
    });
  });
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    links,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise((r) => child.once('exit', (code, signal) => r(code ?? signal)));
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/**
 * Launches headless Chromium with fake camera and microphone. Playwright
 * gives every launch a fresh temporary profile.
 */
export async function launchChromium({ executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium', args = [] } = {}) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      ...args,
    ],
  });
  return {
    browser,
    async close() {
      await browser.close();
    },
  };
}

/**
 * A demo server (with `serverArgs`) and a Chromium for one test, both
 * stopped when the test ends (also when it fails).
 */
export async function serverAndChromium(t, serverArgs = []) {
  const server = await startDemoServer(serverArgs);
  const chromium = await launchChromium();
  t.after(async () => {
    await chromium.close();
    await server.stop();
  });
  return { server, chromium };
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, ms = 20000, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  return last;
}

export async function screenshot(page, name) {
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: join(screenshotDir, `${name}.png`), fullPage: true });
}

/**
 * A page in a fresh context of `browser` (a Playwright browser), English,
 * with the CSP bypassed (axe injects a script), its page errors logged as
 * `[name]`; `init` runs in every document before the page's own scripts.
 */
export async function newPage(browser, name, { viewport = { width: 1280, height: 800 }, init } = {}) {
  const context = await browser.newContext({ bypassCSP: true, viewport, locale: 'en-GB' });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  return page;
}

/**
 * Signs the demo clinician in on `desk` (at `base`, the server's own by
 * default, with `query` on the URL) and starts the demo visit.
 */
export async function signInAndStart(desk, server, { base = server.base, query = '' } = {}) {
  await desk.goto(`${base}/${query}`);
  await desk.fill('#email', 'clinician@demo.teleconsult.test');
  await desk.fill('#password', 'demo-password');
  await desk.click('#signin-form button[type=submit]');
  await desk.waitForSelector(`#visits tr[data-visit="${server.links.visit}"]`);
  await desk.click(`#visits tr[data-visit="${server.links.visit}"] button.start`);
  await desk.waitForSelector('#visit', { state: 'visible' });
}

/** Frames decoded from everyone, summed, from a page's own stats (`reader`: its window object). */
export const framesOn = (page, reader) => page.evaluate(
  async (r) => Object.values((await window[r].stats()).byParticipant ?? {}).reduce((sum, p) => sum + p.framesDecoded, 0),
  reader,
).catch(() => 0);

/** Waits until a page's decoded frames rise twice in a row; returns the time taken in ms, or null. */
export async function framesRise(page, reader, ms) {
  const started = Date.now();
  let last = await framesOn(page, reader);
  let rises = 0;
  while (Date.now() - started < ms) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await framesOn(page, reader);
    rises = now > last ? rises + 1 : 0;
    last = now;
    if (rises >= 2) return Date.now() - started;
  }
  return null;
}

/** True when `read()`'s `byParticipant[id]` decodes new frames within 600 ms. */
export async function decodesFrom(read, id) {
  const before = (await read()).byParticipant[id]?.framesDecoded ?? 0;
  await new Promise((r) => setTimeout(r, 600));
  return ((await read()).byParticipant[id]?.framesDecoded ?? 0) > before;
}

/**
 * The clinician admits the waiting demo patient; returns both participant
 * ids and `joinMs`, from the click on "admit" to the patient's first
 * decoded frame from the clinician (fails if none comes within 30 s).
 */
export async function admitAndTimeFirstFrame(desk, patient) {
  await desk.locator('#waiting-list li', { hasText: 'Demo Patient' }).locator('button.admit').click();
  const admittedAt = Date.now();
  const clinicianId = await eventually(async () => (await patient.evaluate(() => window.teleconsultJoin.view.participantIds))[0], 20000, 50);
  const firstFrame = await eventually(async () => {
    const s = await patient.evaluate(() => window.teleconsultJoin.stats());
    return (s.byParticipant[clinicianId]?.framesDecoded ?? 0) > 0 ? Date.now() : null;
  }, 30000, 50);
  assert.ok(firstFrame, 'the patient decodes the clinician’s video');
  const patientId = await eventually(async () => (await desk.evaluate(() => window.teleconsultConsole.view.participantIds))[0], 10000, 50);
  return { clinicianId, patientId, joinMs: firstFrame - admittedAt };
}

/** Clicks a patient page through its checks to the waiting room. */
export async function walkToWaitingRoom(page, { questionnaire = true, answer = async () => {} } = {}) {
  for (const button of ['#check-next', '#camera-next', '#mic-next', '#speaker-next', '#privacy-next']) {
    await page.click(button);
  }
  if (questionnaire) {
    await answer(page);
    await page.click('#questionnaire button[type=submit]');
  }
  await page.waitForSelector('#screen-waiting', { state: 'visible' });
}

/** Signs in a demo account; returns its access token. */
export async function signIn(base, email, password = 'demo-password') {
  const r = await fetch(`${base}/api/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!r.ok) throw new Error(`sign-in ${email}: ${r.status}`);
  return (await r.json()).access_token;
}

/** An API call with a bearer token; returns the parsed body. */
export async function api(base, token, method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

/** Serious and critical axe-core violations on the page, by rule id (the page's context must bypass CSP). */
export async function axeViolations(page) {
  const { createRequire } = await import('node:module');
  const axe = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
  await page.addScriptTag({ path: axe });
  const violations = await page.evaluate(async () => (await window.axe.run(document)).violations);
  return violations.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

/**
 * The rids `page` publishes video under (sorted), read from its publish
 * connection's stats; `reader` is the page's global (`teleconsultJoin`,
 * `teleconsultConsole`). Waits up to `ms` for three layers.
 */
export async function publishedRids(page, reader, ms = 15000) {
  return eventually(async () => {
    const rids = await page.evaluate(async (name) => {
      const report = await window[name].state.media.publishPc.getStats();
      const r = [];
      report.forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid) r.push(s.rid); });
      return r.sort();
    }, reader);
    return rids.length === 3 ? rids : null;
  }, ms);
}
