// The clinician console and the patient page together in Chromium: sign
// in, start the visit, the patient waits with a questionnaire, admit, both
// decode video, mute (the patient hears silence), chat, end. Then an
// automated accessibility check (axe-core) of the console, the join page
// and the waiting room.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { eventually, screenshot, serverAndChromium, walkToWaitingRoom } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');

/** Serious and critical axe violations on the page, by rule id. */
async function axeViolations(page) {
  await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async () => (await window.axe.run(document)).violations);
  return violations.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

async function patientAudioLevel(page) {
  return page.evaluate(async () => {
    const pc = window.teleconsultJoin.state.media?.subscribePc;
    if (!pc) return null;
    let level = null;
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') level = s.audioLevel ?? null; });
    return level;
  });
}

test('console and patient: admit, video both ways, mute, chat, end; accessibility', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const { base } = server;

  // axe needs to inject its script; these contexts bypass the CSP for that alone.
  const consoleCtx = await chromium.browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
  const desk = await consoleCtx.newPage();
  await desk.goto(`${base}/`);
  await desk.fill('#email', 'clinician@demo.teleconsult.test');
  await desk.fill('#password', 'demo-password');
  await desk.click('#signin-form button[type=submit]');
  await desk.waitForSelector(`#visits tr[data-visit="${server.links.visit}"]`);
  await screenshot(desk, 'console-1-today');
  assert.deepEqual(await axeViolations(desk), [], 'the console (today) has no serious accessibility violations');
  await desk.click(`#visits tr[data-visit="${server.links.visit}"] button.start`);
  await desk.waitForSelector('#visit', { state: 'visible' });

  // The patient comes in through the link and waits.
  const patientCtx = await chromium.browser.newContext({ bypassCSP: true, viewport: { width: 360, height: 740 } });
  const patient = await patientCtx.newPage();
  await patient.goto(server.links.patientLink);
  await patient.waitForSelector('#screen-check', { state: 'visible' });
  assert.deepEqual(await axeViolations(patient), [], 'the join page has no serious accessibility violations');
  await walkToWaitingRoom(patient, { answer: (p) => p.check('input[name=breathlessness]') });
  assert.deepEqual(await axeViolations(patient), [], 'the waiting room has no serious accessibility violations');
  await screenshot(patient, 'phone-waiting-room');
  const fits = await patient.evaluate(() => document.documentElement.scrollWidth <= 360);
  assert.ok(fits, 'the waiting room fits a 360-pixel-wide screen');

  // The console shows the patient waiting, with the red flag; the clinician admits.
  await desk.waitForSelector('#waiting-list li .flag');
  assert.match(await desk.textContent('#waiting-list'), /Demo Patient.*breathless/s);
  await screenshot(desk, 'console-2-waiting');
  await desk.click('#waiting-list li button.admit');

  const decodes = (page, read) => eventually(async () => (await page.evaluate(read)).framesDecoded > 10, 30000);
  assert.ok(await decodes(patient, () => window.teleconsultJoin.stats()), 'the patient decodes the clinician');
  assert.ok(await decodes(desk, () => window.teleconsultConsole.stats()), 'the clinician decodes the patient');
  const quality = await eventually(() => desk.evaluate(() => window.teleconsultConsole.state.quality), 10000);
  assert.ok(quality && quality.kbps > 0, 'the quality indicator shows a bitrate');
  await screenshot(desk, 'console-3-call');
  await screenshot(patient, 'phone-call');
  assert.deepEqual(await axeViolations(desk), [], 'the console in a call has no serious accessibility violations');

  // Mute: the patient's side hears silence.
  const heard = await eventually(async () => ((await patientAudioLevel(patient)) ?? 0) > 0.01, 15000);
  assert.ok(heard, 'the fake microphone is heard before muting');
  await desk.click('#mic');
  const silent = await eventually(async () => ((await patientAudioLevel(patient)) ?? 1) < 0.001, 15000);
  assert.ok(silent, 'after mute, the audio level reaching the patient drops to 0');
  await desk.click('#mic');

  // Chat both ways.
  await desk.fill('#chat-text', 'Can you see me?');
  await desk.click('#chat-form button[type=submit]');
  await patient.waitForSelector('#chat-log li');
  assert.match(await patient.textContent('#chat-log'), /Can you see me\?/);
  await patient.fill('#chat-text', 'Yes, very well');
  await patient.click('#chat-form button[type=submit]');
  await eventually(async () => /very well/.test(await desk.textContent('#chat-log')));

  // Invite an interpreter mid-call: the guest link is shown with its label.
  await desk.fill('#invite-label', 'Interprète');
  await desk.click('#invite button[type=submit]');
  await eventually(async () => /Interprète: http/.test(await desk.textContent('#invite-result')));
  await desk.click('#quality-details-toggle');
  assert.deepEqual(await axeViolations(desk), [], 'the invitation and the quality details have no serious accessibility violations');

  // End: a confirmation first, then both sides see the end.
  await desk.click('#end');
  assert.ok(await desk.isVisible('#end-dialog'), 'ending asks first');
  assert.deepEqual(await axeViolations(desk), [], 'the end confirmation has no serious accessibility violations');
  await desk.click('#end-confirm');
  await desk.waitForSelector('#ended', { state: 'visible' });
  await patient.waitForSelector('#screen-error', { state: 'visible' });
  assert.match(await patient.textContent('#error-title'), /has ended/);

  // Book the follow-up from the end-of-visit dialog.
  await desk.fill('#due-count', '2');
  await desk.selectOption('#due-unit', 'weeks');
  await desk.fill('#reason', 'Scan results');
  // A double click books once.
  await desk.dblclick('#booking button[type=submit]');
  await desk.waitForFunction(() => document.getElementById('booking-result').textContent.length > 0);
  assert.match(await desk.textContent('#booking-result'), /^Booked for .+\/join\//, 'the follow-up is placed and its link shown');
  const booked = await desk.evaluate(() => window.teleconsultConsole.state.lastFollowUp);
  assert.equal(booked.follow_up.status, 'placed');
  const days = (new Date(booked.visit.scheduled_start) - Date.now()) / 86400000;
  assert.ok(days > 6 && days < 22, `within a week of the due date (${days.toFixed(1)} days)`);
  await screenshot(desk, 'console-4-ended-and-booked');
  await desk.click('#back');
  await desk.waitForSelector(`#queue tr[data-follow-up="${booked.follow_up.id}"]`);
  assert.match(await desk.textContent('#queue'), /Scan results.*placed/s, 'the booked follow-up shows in the queue');
  const rows = await desk.$$eval('#queue tr', (trs) => trs.filter((tr) => /Scan results/.test(tr.textContent)).length);
  assert.equal(rows, 1, 'the double click booked one follow-up');
  assert.deepEqual(await axeViolations(desk), [], 'the booking dialog has no serious accessibility violations');
});

test('sign-out ends the session; an account with no console gets a plain page', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const page = await (await chromium.browser.newContext({ bypassCSP: true })).newPage();
  const signIn = async (email) => {
    await page.goto(`${server.base}/`);
    await page.fill('#email', email);
    await page.fill('#password', 'demo-password');
    await page.click('#signin-form button[type=submit]');
  };

  // Ops has a dashboard, not a console: a plain page pointing there, no error.
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await signIn('ops@demo.teleconsult.test');
  await page.waitForSelector('#no-console', { state: 'visible' });
  assert.match(await page.textContent('#no-console'), /operations dashboard/);
  assert.deepEqual(await axeViolations(page), [], 'the no-console page has no serious accessibility violations');
  assert.deepEqual(errors, [], 'no uncaught error');

  // Sign-out revokes the refresh cookie: a reload asks to sign in again.
  await page.click('#sign-out');
  await page.waitForSelector('#signin-form', { state: 'visible' });
  await page.reload();
  await page.waitForSelector('#signin-form', { state: 'visible' });
  const refresh = await page.evaluate(async () => (await fetch('/api/auth/refresh', { method: 'POST' })).status);
  assert.equal(refresh, 401, 'the refresh cookie no longer works');
  assert.deepEqual(await axeViolations(page), [], 'the sign-in page has no serious accessibility violations');
});
