// The patient's join page in Chromium: the whole path from the link to the
// call, a reload mid-call, a denial, audio-only, the link error pages, and
// French. A clinician's WebSocket (from Node) admits and denies.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { api, eventually, screenshot, serverAndChromium, signIn, walkToWaitingRoom } from './harness.mjs';

/** A minimal protocol client acting as the clinician. */
async function clinicianSocket(base, joinToken) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`);
  const events = [];
  let next = 1;
  const waiters = new Map();
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.id && waiters.has(m.id)) {
      waiters.get(m.id)(m);
      waiters.delete(m.id);
    } else {
      events.push(m);
    }
  });
  await new Promise((r) => ws.once('open', r));
  const request = (message) => new Promise((resolve) => {
    const id = `n${next++}`;
    waiters.set(id, resolve);
    ws.send(JSON.stringify({ ...message, id }));
  });
  await request({ type: 'hello', protocol: 1 });
  const joined = await request({ type: 'join', token: joinToken });
  assert.equal(joined.type, 'joined');
  return { ws, events, request };
}

test('patient page: link to call, reload, deny, audio-only, link errors, French', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const { base } = server;
  const visit = server.links.visit;
  const token = await signIn(base, 'clinician@demo.teleconsult.test');
  await api(base, token, 'POST', `/api/visits/${visit}/start`);

  // The clinician publishes from a browser (the minimal call page) and admits from Node.
  const clinicianPage = await (await chromium.browser.newContext()).newPage();
  const pageToken = (await api(base, token, 'POST', `/api/visits/${visit}/join-token`)).join_token;
  await clinicianPage.goto(`${base}/media-test/call.html#token=${pageToken}`);
  assert.ok(await eventually(() => clinicianPage.evaluate(() => window.teleconsultTest?.state.phase === 'in_call')), 'clinician in the call');
  // The waiting room is run from Node by a second staff member (one seat per
  // account: the same clinician joining again would take the page's seat).
  const adminToken = await signIn(base, 'admin@demo.teleconsult.test');
  const clinician = await clinicianSocket(base, (await api(base, adminToken, 'POST', `/api/visits/${visit}/join-token`)).join_token);

  // The patient walks through, one screen at a time.
  const context = await chromium.browser.newContext({ locale: 'en-GB' });
  const patient = await context.newPage();
  await patient.goto(server.links.patientLink);
  await patient.waitForSelector('#screen-check', { state: 'visible' });
  await screenshot(patient, 'join-1-check');
  await patient.click('#check-next');
  await patient.waitForSelector('#screen-camera', { state: 'visible' });
  await eventually(() => patient.evaluate(() => document.getElementById('preview').videoWidth > 0));
  await screenshot(patient, 'join-2-camera');
  await patient.click('#camera-next');
  await patient.waitForSelector('#screen-mic', { state: 'visible' });
  const micMoved = await eventually(() => patient.evaluate(() => window.teleconsultJoin.state.micPeak > 0), 5000);
  assert.ok(micMoved, 'the microphone meter moves with the fake microphone');
  await screenshot(patient, 'join-3-microphone');
  await patient.click('#mic-next');
  await patient.click('#play-sound');
  await screenshot(patient, 'join-4-speaker');
  await patient.click('#speaker-next');
  await screenshot(patient, 'join-5-privacy');
  await patient.click('#privacy-next');
  await patient.check('input[name=fever]');
  await patient.fill('#pain', '8');
  await patient.fill('#new-symptoms', 'a rash on my arm');
  await screenshot(patient, 'join-6-questionnaire');
  await patient.click('#questionnaire button[type=submit]');
  await patient.waitForSelector('#screen-waiting', { state: 'visible' });

  // The clinician sees the patient waiting, with the answers, sends a note, admits.
  const waiting = await eventually(() => clinician.events.find((e) => e.type === 'participant_waiting' && e.questionnaire));
  assert.ok(waiting, 'participant_waiting with the questionnaire');
  assert.deepEqual(waiting.red_flags, ['fever', 'pain']);
  await clinician.request({ type: 'ask_to_wait', participant_id: waiting.participant.participant_id, message: '5 minutes' });
  await patient.waitForSelector('.wait-message');
  assert.match(await patient.textContent('#wait-messages'), /5 minutes/);
  await screenshot(patient, 'join-7-waiting');
  await clinician.request({ type: 'admit', participant_id: waiting.participant.participant_id });

  const decoded = async (page, read) => eventually(async () => ((await page.evaluate(read)).framesDecoded > 10), 30000);
  assert.ok(await decoded(patient, () => window.teleconsultJoin.stats()), 'the patient decodes the clinician');
  assert.ok(await decoded(clinicianPage, () => window.teleconsultTest.stats()), 'the clinician decodes the patient');
  await screenshot(patient, 'join-8-call');

  // A reload mid-call: back in the call, without a new admit.
  const admitsBefore = clinician.events.filter((e) => e.type === 'participant_waiting').length;
  await patient.reload();
  await patient.waitForSelector('#screen-call', { state: 'visible', timeout: 15000 });
  const again = await eventually(async () => (await patient.evaluate(() => window.teleconsultJoin.stats())).framesDecoded > 10, 30000);
  if (!again) console.error('after reload', await patient.evaluate(async () => JSON.stringify({ state: { phase: window.teleconsultJoin.state.phase, err: window.teleconsultJoin.state.lastError }, stats: await window.teleconsultJoin.stats(), sub: window.teleconsultJoin.state.media?.subscribePc?.connectionState, pub: window.teleconsultJoin.state.media?.publishPc?.connectionState })));
  assert.ok(again, 'video again after the reload');
  assert.equal(clinician.events.filter((e) => e.type === 'participant_waiting').length, admitsBefore, 'no new waiting-room entry');

  // A guest is denied and sees a plain page.
  const guestLink = (await api(base, token, 'POST', `/api/visits/${visit}/guest-links`, { label: 'interpreter' })).link.url;
  const guest = await (await chromium.browser.newContext()).newPage();
  await guest.goto(guestLink);
  await guest.waitForSelector('#screen-check', { state: 'visible' });
  await walkToWaitingRoom(guest, { questionnaire: false });
  const guestWaiting = await eventually(() => clinician.events.find((e) => e.type === 'participant_waiting' && e.participant.role === 'guest'));
  await clinician.request({ type: 'deny', participant_id: guestWaiting.participant.participant_id, message: 'Please call the ward.' });
  await guest.waitForSelector('#screen-error', { state: 'visible' });
  assert.match(await guest.textContent('#screen-error'), /will not take place now.*Please call the ward/s);
  await screenshot(guest, 'join-9-denied');

  // Audio only, when there is no camera.
  const noCamera = await (await chromium.browser.newContext()).newPage();
  await noCamera.addInitScript(() => {
    const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (constraints) => (constraints.video
      ? Promise.reject(new DOMException('no camera', 'NotFoundError'))
      : real(constraints));
  });
  const guest2 = (await api(base, token, 'POST', `/api/visits/${visit}/guest-links`, {})).link.url;
  await noCamera.goto(guest2);
  await noCamera.click('#check-next');
  await noCamera.waitForSelector('#screen-no-camera', { state: 'visible' });
  await screenshot(noCamera, 'join-10-no-camera');
  await noCamera.click('#audio-only');
  await noCamera.waitForSelector('#screen-mic', { state: 'visible' });
  assert.equal(await noCamera.evaluate(() => window.teleconsultJoin.state.audioOnly), true);

  // Link errors, in plain words; French when the browser is French.
  const soon = new Date(Date.now() + 3 * 3600 * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const past = new Date(Date.now() - 24 * 3600 * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const later = await api(base, token, 'POST', '/api/visits', { patient: { display_name: 'Later' }, scheduled_start: soon, duration_minutes: 20 });
  const gone = await api(base, token, 'POST', '/api/visits', { patient: { display_name: 'Past' }, scheduled_start: past, duration_minutes: 20 });
  const early = await (await chromium.browser.newContext({ locale: 'en-GB' })).newPage();
  await early.goto(later.patient_link.url);
  await early.waitForSelector('#screen-error', { state: 'visible' });
  assert.match(await early.textContent('#error-title'), /too early/);
  assert.match(await early.textContent('#error-body'), /planned for .+\. This link opens 30 minutes before/);
  await screenshot(early, 'join-11-not-yet-valid');
  const expired = await (await chromium.browser.newContext({ locale: 'en-GB' })).newPage();
  await expired.goto(gone.patient_link.url);
  await expired.waitForSelector('#screen-error', { state: 'visible' });
  assert.match(await expired.textContent('#error-title'), /expired/);
  await screenshot(expired, 'join-12-expired');
  const french = await (await chromium.browser.newContext({ locale: 'fr-FR' })).newPage();
  await french.goto(gone.patient_link.url);
  await french.waitForSelector('#screen-error', { state: 'visible' });
  assert.equal(await french.textContent('#error-title'), 'Ce lien a expiré');
  assert.equal(await french.getAttribute('html', 'lang'), 'fr');
  await french.click('#lang');
  assert.equal(await french.textContent('#lang'), 'Français', 'the switch goes back to English');
  await screenshot(french, 'join-13-french');

  clinician.ws.close();
});
