// A real outage: the patient's Chromium runs in a network namespace of its
// own (a veth pair to the host), and the test cuts that link for 6 s in
// the middle of a call. The patient's page must say so within 2 s of the
// cut, and frames must decode again both ways within 3 s of the restore.
// The timings are printed (`# network cut: …`) for BENCHMARKS.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, framesOn, framesRise, newPage, signInAndStart, walkToWaitingRoom } from './harness.mjs';
import { namespacesAvailable, serverAndNamespacedChromium } from './netns.mjs';

const CUT_MS = 6000;

test('a 6 s network cut: the patient is told at once, and media comes back quickly', { skip: !namespacesAvailable() && 'needs root for network namespaces' }, async (t) => {
  const { ns, server, host, away } = await serverAndNamespacedChromium(t, 7);

  const desk = await newPage(host.browser, 'clinician');
  await signInAndStart(desk, server);

  // The patient reaches the server through the namespace's link only.
  const patient = await newPage(away.browser, 'patient');
  await patient.goto(server.links.patientLink.replace('127.0.0.1', ns.hostIp));
  await walkToWaitingRoom(patient);
  await desk.locator('#waiting-list li', { hasText: 'Demo Patient' }).locator('button.admit').click();
  assert.ok(await framesRise(desk, 'teleconsultConsole', 20000) !== null, 'the clinician decodes the patient before the cut');
  assert.ok(await framesRise(patient, 'teleconsultJoin', 20000) !== null, 'the patient decodes the clinician before the cut');

  // Cut.
  ns.cut();
  const cutAt = Date.now();
  const bannerMs = await eventually(async () => (await patient.isVisible('#reconnecting')) && Date.now() - cutAt, 8000, 100);
  const frozen = await framesOn(desk, 'teleconsultConsole');
  // The clinician's workstation still reaches the server: its banner says the
  // patient's side failed; the patient's says their own connection did.
  const deskBanner = await eventually(async () => (await desk.isVisible('#reconnecting'))
    && /Your connection works/.test(await desk.textContent('#reconnecting')), 4000, 100);
  assert.ok(deskBanner, `the clinician is told the others’ media stopped at their end: ${await desk.textContent('#reconnecting')}`);
  assert.match(await patient.textContent('#reconnecting'), /Your connection was lost/, 'the patient is told their connection was lost');
  await new Promise((r) => setTimeout(r, Math.max(0, CUT_MS - (Date.now() - cutAt))));
  const stillFrozen = (await framesOn(desk, 'teleconsultConsole')) - frozen;

  // Restore.
  ns.restore();
  const [deskBackMs, patientBackMs] = await Promise.all([
    framesRise(desk, 'teleconsultConsole', 15000),
    framesRise(patient, 'teleconsultJoin', 15000),
  ]);
  const bannerGone = await eventually(async () => !(await patient.isVisible('#reconnecting')), 10000, 100);
  console.log(`# network cut: banner ${bannerMs} ms after the cut; after the restore the clinician decodes the patient again in ${deskBackMs} ms, the patient decodes the clinician in ${patientBackMs} ms`);

  assert.ok(bannerMs !== false && bannerMs <= 2000, `the reconnecting banner shows within 2 s of the cut (took ${bannerMs} ms)`);
  assert.ok(stillFrozen < 5, `no frames crossed the cut link (${stillFrozen} decoded during the cut)`);
  assert.ok(deskBackMs !== null && deskBackMs <= 3000, `the clinician decodes the patient within 3 s of the restore (took ${deskBackMs} ms)`);
  assert.ok(patientBackMs !== null && patientBackMs <= 3000, `the patient decodes the clinician within 3 s of the restore (took ${patientBackMs} ms)`);
  assert.ok(bannerGone, 'the banner goes once media flows again');
});
