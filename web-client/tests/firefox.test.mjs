// The second browser: Firefox ESR (Debian's package), driven over WebDriver
// BiDi by puppeteer-core, holds a call with Chromium both ways round: the
// patient in Firefox with the clinician in Chromium, then the clinician's
// console in Firefox with the patient in Chromium. Each side's own stats
// must show video frames decoded and audio packets from the other.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { eventually, newPage, serverAndChromium, signInAndStart, walkToWaitingRoom } from './harness.mjs';

const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';

/** Firefox with a fake camera and microphone, granted without asking, and no sound card needed. */
async function launchFirefox(t) {
  const home = mkdtempSync(join(tmpdir(), 'tc-firefox-'));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    env: { ...process.env, HOME: home, TMPDIR: home },
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'permissions.default.camera': 1,
      'permissions.default.microphone': 1,
      'media.cubeb.force_mock_context': true,
      'media.autoplay.default': 0,
      // The server advertises 127.0.0.1 only.
      'media.peerconnection.ice.loopback': true,
    },
  });
  t.after(async () => {
    await browser.close().catch(() => {});
    rmSync(home, { recursive: true, force: true });
  });
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('[firefox] page error:', e.message));
  return page;
}

/** True when a page's own stats show frames and audio from every remote participant, rising. */
async function hearsAndSees(page, reader) {
  const read = () => page.evaluate((r) => window[r]?.stats?.(), reader).catch(() => null);
  const before = await read();
  await new Promise((r) => setTimeout(r, 700));
  const after = await read();
  const ids = Object.keys(after?.byParticipant ?? {});
  return ids.length === 1 && ids.every((id) => before?.byParticipant?.[id]
    && after.byParticipant[id].framesDecoded > before.byParticipant[id].framesDecoded
    && after.byParticipant[id].audioPackets > before.byParticipant[id].audioPackets)
    && after;
}

const skip = !existsSync(FIREFOX) && `${FIREFOX} is not installed`;

test('Firefox patient, Chromium clinician: frames both ways', { skip }, async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const desk = await newPage(chromium.browser, 'clinician');
  await signInAndStart(desk, server);

  const patient = await launchFirefox(t);
  await patient.goto(server.links.patientLink);
  for (const button of ['#check-next', '#camera-next', '#mic-next', '#speaker-next', '#privacy-next', '#questionnaire button[type=submit]']) {
    await patient.waitForSelector(button, { visible: true });
    await patient.click(button);
  }
  await patient.waitForSelector('#screen-waiting', { visible: true });
  await desk.locator('#waiting-list li', { hasText: 'Demo Patient' }).locator('button.admit').click();

  const firefoxSees = await eventually(() => hearsAndSees(patient, 'teleconsultJoin'), 30000, 300);
  assert.ok(firefoxSees, 'Firefox (patient) decodes the clinician’s video and receives their audio');
  const chromiumSees = await eventually(() => hearsAndSees(desk, 'teleconsultConsole'), 30000, 300);
  assert.ok(chromiumSees, 'Chromium (clinician) decodes the Firefox patient’s video and receives their audio');
  console.log(`# firefox patient: decoded ${firefoxSees.framesDecoded} frames; chromium clinician decoded ${chromiumSees.framesDecoded}`);

  // The visit ends: Firefox releases the camera too.
  await desk.click('#end');
  await desk.click('#end-confirm');
  await patient.waitForSelector('#screen-error', { visible: true });
});

test('Firefox clinician, Chromium patient: frames both ways', { skip }, async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const desk = await launchFirefox(t);
  await desk.goto(`${server.base}/`);
  await desk.waitForSelector('#email', { visible: true });
  await desk.type('#email', 'clinician@demo.teleconsult.test');
  await desk.type('#password', 'demo-password');
  await desk.click('#signin-form button[type=submit]');
  const start = `#visits tr[data-visit="${server.links.visit}"] button.start`;
  await desk.waitForSelector(start, { visible: true });
  await desk.click(start);
  await desk.waitForSelector('#visit', { visible: true });

  const patient = await newPage(chromium.browser, 'patient');
  await patient.goto(server.links.patientLink);
  await walkToWaitingRoom(patient);
  const admit = await eventually(() => desk.$('#waiting-list li button.admit'), 15000);
  assert.ok(admit, 'the Firefox console lists the waiting patient');
  await admit.click();

  const firefoxSees = await eventually(() => hearsAndSees(desk, 'teleconsultConsole'), 30000, 300);
  assert.ok(firefoxSees, 'Firefox (clinician) decodes the patient’s video and receives their audio');
  const chromiumSees = await eventually(() => hearsAndSees(patient, 'teleconsultJoin'), 30000, 300);
  assert.ok(chromiumSees, 'Chromium (patient) decodes the Firefox clinician’s video and receives their audio');
  console.log(`# firefox clinician: decoded ${firefoxSees.framesDecoded} frames; chromium patient decoded ${chromiumSees.framesDecoded}`);
});
