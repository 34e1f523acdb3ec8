// Simulcast through the SFU with Chromium: the clinician publishes a
// 1280×720 camera in three layers (320, 640 and 1280 wide); the patient
// asks for a small picture and gets the low layer, the guest asks for a
// large one and gets a higher layer (layers follow the sizes asked for:
// bandwidth estimation is off by default).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, newPage, serverAndChromium } from './harness.mjs';

test('each viewer of a simulcast camera gets the layer its tile asks for', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const pages = {};
  for (const role of ['clinician', 'patient', 'guest']) {
    const page = await newPage(chromium.browser, role);
    await page.goto(role === 'clinician' ? `${server.links[role]}&simulcast=1&hd=1` : server.links[role]);
    pages[role] = page;
  }
  for (const [role, page] of Object.entries(pages)) {
    const phase = await eventually(() => page.evaluate(() => window.teleconsultTest?.state.phase === 'in_call' && 'in_call'));
    assert.equal(phase, 'in_call', `${role} joined`);
  }
  const leader = await pages.clinician.evaluate(() => window.teleconsultTest.state.participantId);
  const width = (role) => pages[role].evaluate((id) => window.teleconsultTest.videoWidth(id), leader);
  // Both see the clinician first, whatever layer.
  for (const role of ['patient', 'guest']) {
    assert.ok(await eventually(async () => (await width(role)) > 0, 30000), `${role} decodes the clinician`);
  }
  await pages.patient.evaluate((id) => window.teleconsultTest.size(id, 120), leader);
  await pages.guest.evaluate((id) => window.teleconsultTest.size(id, 2000), leader);
  // Read together: a busy machine makes Chromium scale its layers down
  // (the top one may stop), so what counts is that the small tile gets a
  // smaller layer than the large one at the same moment.
  const both = await eventually(async () => {
    const [small, large] = [await width('patient'), await width('guest')];
    return small > 0 && small <= 320 && large > small ? { small, large } : null;
  }, 30000);
  const outbound = () => pages.clinician.evaluate(async () => {
    const report = await window.teleconsultTest.media.publishPc.getStats();
    const layers = [];
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') layers.push(`${s.rid}:${s.frameWidth ?? 0}px,${Math.round((s.targetBitrate ?? 0) / 1000)}kbps,${s.qualityLimitationReason}`);
    });
    return layers.join(' ');
  });
  console.log(`# the patient decodes the clinician at ${both?.small} px wide, the guest at ${both?.large} px; the clinician sends ${await outbound()}`);
  assert.ok(both, `the patient's small tile gets a lower layer than the guest's large one (${await width('patient')} and ${await width('guest')} px wide; the clinician sends ${await outbound()})`);
});
