// The ops dashboard in Chromium: during a live call it shows the room with
// a non-zero bitrate within 5 s; a non-ops account is refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, screenshot, serverAndChromium } from './harness.mjs';

const PASSWORD = 'demo-password';

async function signIn(page, base, email) {
  await page.goto(`${base}/ops`);
  await page.waitForSelector('#signin-form', { state: 'visible' });
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await page.click('#signin-form button[type=submit]');
}

test('the dashboard shows a live call within 5 s, and refuses a clinician', async (t) => {
  const { server, chromium } = await serverAndChromium(t);

  // A live call between two browsers in the demo room.
  for (const role of ['clinician', 'patient']) {
    const page = await (await chromium.browser.newContext()).newPage();
    await page.goto(server.links[role]);
    const inCall = await eventually(() => page.evaluate(() => window.teleconsultTest?.state.phase === 'in_call'));
    assert.ok(inCall, `${role} page joined`);
  }

  const ops = await (await chromium.browser.newContext()).newPage();
  await signIn(ops, server.base, 'ops@demo.teleconsult.test');
  await ops.waitForSelector('#dashboard', { state: 'visible' });
  const started = Date.now();
  const shown = await eventually(async () => {
    const rows = await ops.$$eval('#rooms tbody tr[data-room="demo"]', (trs) =>
      trs.map((tr) => Number(tr.querySelector('.kbps-in')?.textContent ?? '0')));
    return rows.length >= 2 && rows.every((kbps) => kbps > 0) ? rows : null;
  }, 5000, 200);
  assert.ok(shown, `the demo room appears with non-zero bitrate for both participants within 5 s (${Date.now() - started} ms)`);
  const text = await ops.textContent('#rooms');
  assert.ok(!/Demo Patient|Dr Demo/.test(text), 'no names on the dashboard');
  await screenshot(ops, 'ops-dashboard');

  // A clinician is refused, on the page and at the API.
  const clinician = await (await chromium.browser.newContext()).newPage();
  await signIn(clinician, server.base, 'clinician@demo.teleconsult.test');
  const refused = await eventually(async () => (await clinician.textContent('#status')).includes('may not see operations'));
  assert.ok(refused, 'the page explains the refusal');
  const login = await fetch(`${server.base}/api/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: 'clinician@demo.teleconsult.test', password: PASSWORD }),
  });
  const { access_token: token } = await login.json();
  const stream = await fetch(`${server.base}/api/ops/stream`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(stream.status, 403);
  assert.equal((await stream.json()).error.code, 'forbidden');
});
