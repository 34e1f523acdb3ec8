// A class through the real pages: a group session created through the API,
// three enrolled patients (one on a 360 px phone) opening their own links,
// the leader's console. The leader sees a grid of everyone, pins one
// patient large, sees and lowers a raised hand, and asks everyone to mute;
// the patients see the leader large, their hand lowered, their microphone
// muted, and who is speaking.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, newPage, publishedRids, serverAndChromium, signIn, walkToWaitingRoom } from './harness.mjs';

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

test('a class: grid, pin, hands, mute all, the leader large on a 360 px phone', async (t) => {
  const { server, chromium } = await serverAndChromium(t, ['--link-opens-before-mins', '120']);
  const bearer = await signIn(server.base, 'clinician@demo.teleconsult.test');
  // One occurrence, 40 minutes from now (after the demo visit), in UTC.
  const at = new Date(Date.now() + 40 * 60_000);
  const session = await api(server.base, bearer, 'POST', '/api/group-sessions', {
    title: 'Gentle strength',
    time_zone: 'UTC',
    weekdays: [DAYS[at.getUTCDay()]],
    start_time: at.toISOString().slice(11, 16),
    duration_minutes: 45,
    first_day: at.toISOString().slice(0, 10),
    weeks: 1,
    capacity: 12,
  });
  assert.equal(session.occurrences.length, 1, JSON.stringify(session));
  const visit = session.occurrences[0].visit_id;
  const names = ['Alice Martin', 'Bruno Petit', 'Chloé Durand'];
  const links = [];
  for (const name of names) {
    const e = await api(server.base, bearer, 'POST', `/api/group-sessions/${session.id}/enrolments`, { patient: { display_name: name } });
    links.push(e.links[0].url);
  }

  const desk = await newPage(chromium.browser, 'leader');
  await desk.goto(server.base);
  await desk.fill('#email', 'clinician@demo.teleconsult.test');
  await desk.fill('#password', 'demo-password');
  await desk.click('#signin-form button[type=submit]');
  const row = desk.locator(`#visits tr[data-visit="${visit}"]`);
  assert.match(await row.textContent(), /Gentle strength/, 'the class is in the day’s list under its title');
  await row.locator('button.start').click();
  await desk.waitForSelector('#visit', { state: 'visible' });

  const patients = [];
  for (const [i, url] of links.entries()) {
    const viewport = i === 0 ? { width: 360, height: 740 } : { width: 1024, height: 768 };
    const page = await newPage(chromium.browser, `patient-${i}`, { viewport });
    await page.goto(url);
    await walkToWaitingRoom(page, { questionnaire: false });
    await desk.locator('#waiting-list li', { hasText: names[i] }).locator('button.admit').click();
    await page.waitForSelector('#screen-call', { state: 'visible', timeout: 15000 });
    patients.push(page);
  }
  const phone = patients[0];

  // The leader sees a grid of the three; each patient sees the other three.
  assert.ok(await eventually(async () => (await desk.locator('.tiles .tile').count()) === 3, 15000), 'three tiles on the console');
  for (const page of patients) {
    assert.ok(await eventually(async () => (await page.locator('.tiles .tile').count()) === 3, 15000), 'three tiles on each patient page');
  }

  // On the phone the leader is large and first; the others are small; nothing overflows.
  const layout = await eventually(async () => phone.evaluate(() => {
    const pinned = document.querySelector('.tiles .tile.pinned');
    const others = [...document.querySelectorAll('.tiles .tile:not(.pinned)')];
    if (!pinned || others.length !== 2) return null;
    return {
      leader: pinned.getAttribute('aria-label'),
      pinnedWidth: pinned.getBoundingClientRect().width,
      otherWidths: others.map((o) => o.getBoundingClientRect().width),
      scrollWidth: document.documentElement.scrollWidth,
    };
  }), 15000);
  assert.ok(layout, 'the leader is pinned on the phone');
  assert.match(layout.leader, /Dr|Demo|clinician/i, `the pinned tile is the leader: ${layout.leader}`);
  assert.ok(layout.pinnedWidth >= 300, `the leader's tile spans the phone (${layout.pinnedWidth} px)`);
  assert.ok(layout.otherWidths.every((w) => w < layout.pinnedWidth / 2), `the others are small: ${layout.otherWidths}`);
  assert.ok(layout.scrollWidth <= 360, `no sideways scrolling at 360 px (${layout.scrollWidth})`);
  assert.ok(await phone.isVisible('#raise-hand'), 'a class patient can raise a hand');

  // The leader pins Bruno large.
  const bruno = desk.locator('.tiles .tile', { hasText: 'Bruno Petit' });
  await bruno.locator('button.pin').click();
  // A tile may also read "video-paused" for a moment while the leader's
  // bandwidth estimate ramps up at the start of the class.
  assert.ok((await bruno.getAttribute('class')).split(' ').includes('pinned'), 'Bruno’s tile is pinned');
  assert.ok(await eventually(async () => !(await bruno.getAttribute('class')).includes('video-paused'), 15000),
    'Bruno’s video plays once the estimate has ramped up');
  const widths = await desk.evaluate(() => [...document.querySelectorAll('.tiles .tile')]
    .map((tile) => ({ pinned: tile.classList.contains('pinned'), width: tile.getBoundingClientRect().width })));
  const big = widths.find((w) => w.pinned).width;
  assert.ok(widths.filter((w) => !w.pinned).every((w) => w.width < big / 2), `Bruno is shown large: ${JSON.stringify(widths)}`);

  // Chloé raises her hand: the leader and the others see it; the leader lowers it.
  const chloe = patients[2];
  await chloe.click('#raise-hand');
  assert.equal(await chloe.getAttribute('#raise-hand', 'aria-pressed'), 'true');
  await desk.locator('#hands-list li', { hasText: 'Chloé Durand' }).waitFor({ timeout: 10000 });
  await phone.locator('.tiles .tile', { hasText: 'Chloé Durand' }).locator('.state.hand').waitFor({ state: 'visible', timeout: 10000 });
  await desk.locator('#hands-list li', { hasText: 'Chloé Durand' }).locator('button').click();
  assert.ok(await eventually(async () => (await chloe.getAttribute('#raise-hand', 'aria-pressed')) === 'false', 10000), 'her hand is down on her page');
  await phone.locator('.tiles .tile', { hasText: 'Chloé Durand' }).locator('.state.hand').waitFor({ state: 'hidden', timeout: 10000 });
  assert.ok(await desk.isHidden('#hands'), 'no raised hands left on the console');

  // Someone is speaking (Chromium's fake microphone beeps): marked on the console.
  assert.ok(await eventually(() => desk.evaluate(() => document.querySelectorAll('.tiles .tile.speaking').length > 0), 15000, 100),
    'the console marks who is speaking');

  // Mute all: every patient's microphone goes off, and the leader's tiles say so.
  assert.ok(await desk.isVisible('#mute-all'));
  await desk.click('#mute-all');
  for (const page of patients) {
    assert.ok(await eventually(() => page.evaluate(() => window.teleconsultJoin.state.stream.getAudioTracks()[0].enabled === false), 10000),
      'the patient’s microphone is off');
    assert.equal(await page.getAttribute('#toggle-mic', 'aria-pressed'), 'true');
  }
  assert.ok(await eventually(async () => (await desk.locator('.tiles .tile .state.mic-off:visible').count()) === 3, 10000),
    'the console shows three muted microphones');
  // A patient unmutes to speak.
  await patients[1].click('#toggle-mic');
  assert.ok(await eventually(async () => (await desk.locator('.tiles .tile .state.mic-off:visible').count()) === 2, 10000));

  // The phone patient reloads: the leader is large again, and the hand starts down.
  await phone.reload();
  await phone.waitForSelector('#screen-call', { state: 'visible', timeout: 20000 });
  assert.ok(await eventually(() => phone.evaluate(() => document.querySelector('.tiles .tile.pinned') !== null), 15000),
    'after a reload the leader is large again');
  const layers = await publishedRids(phone, 'teleconsultJoin');
  assert.deepEqual(layers, ['f', 'h', 'q'], 'after a reload the phone still publishes three simulcast layers');
  assert.equal(await phone.getAttribute('#raise-hand', 'aria-pressed'), 'false', 'the hand starts down after a reload');
});
