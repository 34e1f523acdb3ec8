// Two Chromium pages with fake camera and microphone join one room through
// the minimal test page; each must decode the other's video.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, screenshot, serverAndChromium } from './harness.mjs';

test('two browsers decode each other\'s video through the SFU', async (t) => {
  const { server, chromium } = await serverAndChromium(t);

  const pages = [];
  for (const role of ['clinician', 'patient']) {
    const context = await chromium.browser.newContext();
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error(`[${role}] page error:`, e.message));
    await page.goto(server.links[role]);
    pages.push(page);
  }

  for (const page of pages) {
    const phase = await eventually(() => page.evaluate(() => window.teleconsultTest?.state.phase === 'in_call' && 'in_call'));
    assert.equal(phase, 'in_call', `joined: ${await page.evaluate(() => JSON.stringify(window.teleconsultTest?.state))}`);
  }
  for (const [i, page] of pages.entries()) {
    const frames = await eventually(async () => {
      const s = await page.evaluate(() => window.teleconsultTest.stats());
      return s.framesDecoded > 10 ? s.framesDecoded : 0;
    }, 30000);
    assert.ok(frames > 10, `page ${i} decoded remote video frames (got ${frames})`);
  }
  await screenshot(pages[0], 'test-call-clinician');
  await screenshot(pages[1], 'test-call-patient');

  // The security headers are on every response.
  const response = await fetch(`${server.base}/media-test/call.html`);
  assert.match(response.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  assert.equal(response.headers.get('referrer-policy'), 'no-referrer');
  assert.equal(response.headers.get('x-content-type-options'), 'nosniff');

  // SIGTERM shuts down gracefully: the pages are told the room closed.
  const code = await server.stop();
  assert.ok(code === 0 || code === 'SIGTERM', `server exited cleanly (${code})`);
});
