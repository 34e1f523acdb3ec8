// A group session under a slow home connection: the leader publishes a
// 1280×720 camera in three simulcast layers; two patients ask for it large
// and pinned. One patient's Chromium runs in a network namespace whose
// downlink is held to 300 kbit/s. Group rooms run bandwidth estimation on their subscribers,
// so that patient gets the low layer (320 px wide or less) while the other
// gets a higher one. The widths are printed (`# constrained: …`).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { api, eventually, newPage, serverBinary, signIn } from './harness.mjs';
import { namespacesAvailable, serverAndNamespacedChromium } from './netns.mjs';

const SECRET = 'constrained-simulcast-test-secret-0123456789';
const DOWNLINK_KBIT = 300;

test('in a group session, a patient on a slow link gets the low layer and another the high', { skip: !namespacesAvailable() && 'needs root for network namespaces' }, async (t) => {
  const { ns, server, host, away } = await serverAndNamespacedChromium(t, 8, ['--token-secret', SECRET]);

  // A group session booked through the API (after the demo visit).
  const bearer = await signIn(server.base, 'clinician@demo.teleconsult.test');
  const start = new Date(Date.now() + 3 * 3600_000).toISOString();
  const created = await api(server.base, bearer, 'POST', '/api/visits',
    { patient: { display_name: 'APA class' }, scheduled_start: start, duration_minutes: 60, kind: 'group' });
  const room = created.visit.id;
  const mint = (role, name) => execFileSync(serverBinary(),
    ['admin', 'mint-token', '--admitted', '--room', room, '--role', role, '--name', name, '--ttl-secs', '3600'],
    { env: { ...process.env, TELECONSULT_TOKEN_SECRET: SECRET } }).toString().trim();

  ns.limitDownlink(DOWNLINK_KBIT);
  const open = async (browser, name, base, token, extra = '') => {
    const page = await newPage(browser, name);
    await page.goto(`${base}/media-test/call.html#token=${token}${extra}`);
    const phase = await eventually(() => page.evaluate(() => window.teleconsultTest?.state.phase === 'in_call' && 'in_call'), 30000);
    assert.equal(phase, 'in_call', `${name} joined`);
    return page;
  };
  const leaderPage = await open(host.browser, 'leader', server.base, mint('clinician', 'APA teacher'), '&simulcast=1&hd=1');
  const wide = await open(host.browser, 'patient on a good link', server.base, mint('patient', 'Patient A'));
  const slow = await open(away.browser, 'patient on a slow link', `http://${ns.hostIp}:${server.port}`, mint('patient', 'Patient B'));
  const leader = await leaderPage.evaluate(() => window.teleconsultTest.state.participantId);
  // Both want the leader large, pinned (a class's patient view): on a poor
  // link the leader's video is the one kept, in its lowest layer.
  for (const page of [wide, slow]) await page.evaluate((id) => window.teleconsultTest.size(id, 2000, true), leader);
  const width = (page) => page.evaluate((id) => window.teleconsultTest.videoWidth(id), leader);

  const high = await eventually(async () => {
    const w = await width(wide);
    return w > 320 ? w : 0;
  }, 40000);
  const low = await eventually(async () => {
    const w = await width(slow);
    return w > 0 && w <= 320 ? w : 0;
  }, 40000);
  const outbound = await leaderPage.evaluate(async () => {
    const report = await window.teleconsultTest.media.publishPc.getStats();
    const layers = [];
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') layers.push(`${s.rid}:${s.frameWidth ?? 0}px,${Math.round((s.targetBitrate ?? 0) / 1000)}kbps,${Math.round(s.bytesSent * 8 / 1000)}kbit sent`);
    });
    return layers.join(' ');
  });
  console.log(`# constrained: the leader sends ${outbound}`);
  console.log(`# constrained: the patient on a ${DOWNLINK_KBIT} kbit/s downlink decodes the leader at ${low || await width(slow)} px wide, the other at ${high || await width(wide)} px`);
  assert.ok(high > 320, `the patient on a good link gets a higher layer (${await width(wide)} px wide)`);
  assert.ok(low > 0 && low <= 320, `the patient on a slow link gets the low layer (${await width(slow)} px wide)`);
});
