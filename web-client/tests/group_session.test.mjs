// A group session through the real pages: the leader starts a visit of
// kind `group` from the console and admits a patient who came through the
// patient page. The console publishes its camera in three simulcast
// layers, and the patient page pins the leader's video (so that a poor
// link keeps the leader's picture and pauses the others').

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, framesRise, newPage, publishedRids, serverAndChromium, signIn, walkToWaitingRoom } from './harness.mjs';

test('in a group session the leader publishes simulcast and the patient page pins the leader', async (t) => {
  const { server, chromium } = await serverAndChromium(t, ['--link-opens-before-mins', '120']);
  // After the demo visit (in 5 minutes, for 20), so as not to overlap it.
  const bearer = await signIn(server.base, 'clinician@demo.teleconsult.test');
  const start = new Date(Date.now() + 40 * 60_000).toISOString();
  const created = await api(server.base, bearer, 'POST', '/api/visits',
    { patient: { display_name: 'Class Patient' }, scheduled_start: start, duration_minutes: 45, kind: 'group' });
  const visit = created.visit.id;

  const desk = await newPage(chromium.browser, 'leader');
  await desk.goto(server.base);
  await desk.fill('#email', 'clinician@demo.teleconsult.test');
  await desk.fill('#password', 'demo-password');
  await desk.click('#signin-form button[type=submit]');
  await desk.click(`#visits tr[data-visit="${visit}"] button.start`);
  await desk.waitForSelector('#visit', { state: 'visible' });

  const patient = await newPage(chromium.browser, 'patient');
  const sent = [];
  patient.on('websocket', (ws) => ws.on('framesent', (f) => sent.push(String(f.payload))));
  await patient.goto(created.patient_link.url);
  await walkToWaitingRoom(patient);
  await desk.locator('#waiting-list li', { hasText: 'Class Patient' }).locator('button.admit').click();
  assert.ok(await framesRise(patient, 'teleconsultJoin', 20000) !== null, 'the patient decodes the leader');

  const leader = await eventually(async () => (await patient.evaluate(() => window.teleconsultJoin.view.participantIds))[0], 10000);
  const pins = () => sent.map((text) => JSON.parse(text))
    .filter((m) => m.type === 'preferred_size' && m.participant_id === leader);
  assert.ok(await eventually(() => pins().some((m) => m.pinned === true), 10000), `the patient page pins the leader: ${JSON.stringify(pins())}`);

  const rids = await publishedRids(desk, 'teleconsultConsole');
  assert.deepEqual(rids, ['f', 'h', 'q'], 'the leader publishes three simulcast layers');
});
