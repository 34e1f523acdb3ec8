// The staff scheduling page in Chromium, against a real server: the weekly
// availability editor, the follow-up queue (book sooner, cancel), the
// notification inbox, the calendar feed link with revoke, CSV import with
// a preview and a per-row report, and group classes; each checked with
// axe-core, in English and French, on a desktop and a 360-pixel phone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, axeViolations, eventually, screenshot, serverAndChromium, signIn } from './harness.mjs';

const CLINICIAN = 'clinician@demo.teleconsult.test';
const ADMIN = 'admin@demo.teleconsult.test';

async function openSchedule(chromium, base, email, viewport = { width: 1280, height: 900 }, locale = 'en-GB') {
  const context = await chromium.browser.newContext({ bypassCSP: true, viewport, locale });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  await page.goto(`${base}/schedule`);
  await page.waitForSelector('#signin-form', { state: 'visible' });
  await page.fill('#email', email);
  await page.fill('#password', 'demo-password');
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('body[data-ready=true]');
  return page;
}

test('scheduling page: availability, queue, inbox, calendar feed; accessible', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const { base } = server;
  const token = await signIn(base, CLINICIAN);
  // A routine follow-up from the demo visit, due in two weeks.
  const booked = await api(base, token, 'POST', `/api/visits/${server.links.visit}/follow-ups`,
    { due_in: { weeks: 2 }, duration_minutes: 20, reason: 'check' });
  const followUp = booked.follow_up.id;

  const page = await openSchedule(chromium, base, CLINICIAN);
  assert.deepEqual(await axeViolations(page), [], 'the scheduling page has no serious accessibility violations');
  await screenshot(page, 'schedule-1-desktop');

  // Availability: the demo's Monday 08:00-18:00 is shown; add Saturday morning and save.
  const monday = page.locator('#week .periods[data-weekday="0"] .period');
  assert.equal(await monday.count(), 1);
  assert.equal(await monday.locator('.start').inputValue(), '08:00');
  await page.click('#week .day:nth-child(6) .add-period');
  await page.locator('#week .periods[data-weekday="5"] .start').fill('09:00');
  await page.locator('#week .periods[data-weekday="5"] .end').fill('12:30');
  await page.fill('#time-zone', 'Europe/Paris');
  await page.click('#availability-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'Saved.');
  const me = await api(base, token, 'GET', '/api/auth/me');
  const saved = await api(base, token, 'GET', `/api/clinicians/${me.clinician?.id ?? me.id}/availability`);
  assert.ok(saved.availability.weekly.some((p) => p.weekday === 5 && p.start_minute === 540 && p.end_minute === 750), JSON.stringify(saved));
  assert.equal(saved.availability.time_zone, 'Europe/Paris');
  // A wrong zone is refused in plain words.
  await page.fill('#time-zone', 'Mars/Olympus');
  await page.click('#availability-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('status').textContent.includes('IANA'));

  // The queue: the follow-up is there; book it sooner.
  const row = page.locator(`#queue-table tr[data-follow-up="${followUp}"]`);
  await row.waitFor();
  assert.match(await row.locator('th').innerText(), /Demo Patient/);
  await row.locator('button.sooner').click();
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Booked sooner'));
  await eventually(async () => (await row.locator('.priority-urgent').count()) === 1);
  assert.equal(await row.locator('.priority-urgent').innerText(), 'Urgent');

  // The inbox shows it, unread, with a badge; mark it read.
  const item = page.locator('#inbox-list li.unread').first();
  await item.waitFor();
  assert.match(await item.innerText(), /booked sooner/);
  assert.equal(await page.locator('#unread-badge').isVisible(), true);
  await item.locator('button.mark-read').click();
  await eventually(async () => (await page.locator('#inbox-list li.unread').count()) === 0);
  assert.equal(await page.locator('#unread-badge').isVisible(), false);

  // The calendar feed: a link that works, then revoked.
  await page.click('#calendar-create');
  await page.waitForSelector('#calendar-link', { state: 'visible' });
  const url = await page.locator('#calendar-url').inputValue();
  assert.match(url, /\/calendar\/.+\.ics$/);
  const feedPath = new URL(url).pathname;
  assert.equal((await fetch(`${base}${feedPath}`)).status, 200);
  await page.click('#calendar-revoke');
  await page.waitForSelector('#calendar-link', { state: 'hidden' });
  assert.equal((await fetch(`${base}${feedPath}`)).status, 404);

  // Cancel the follow-up from the queue (confirmed).
  await row.locator('button.cancel').click();
  await page.waitForSelector('#queue-empty', { state: 'visible' });
  assert.deepEqual(await axeViolations(page), [], 'after the actions, still no serious violations');

  // French, on a phone: the same page, translated and within 360 pixels.
  const phone = await openSchedule(chromium, base, CLINICIAN, { width: 360, height: 740 }, 'fr-FR');
  assert.equal(await phone.locator('#availability-title').innerText(), 'Disponibilités de la semaine');
  assert.equal(await phone.evaluate(() => document.documentElement.lang), 'fr');
  assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth <= 360), 'fits a 360-pixel screen');
  assert.deepEqual(await axeViolations(phone), [], 'the French phone view has no serious violations');
  await screenshot(phone, 'schedule-2-phone-fr');
});

test('scheduling page: CSV import with a preview and a per-row report', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const { base } = server;
  // A French Excel export: BOM, semicolons, CRLF, dd/mm/yyyy, one bad row.
  const tomorrow = new Date(Date.now() + 2 * 86400000);
  const day = `${String(tomorrow.getDate()).padStart(2, '0')}/${String(tomorrow.getMonth() + 1).padStart(2, '0')}/${tomorrow.getFullYear()}`;
  const csv = '\ufeffEmail médecin;Nom du patient;IPP;Date et heure;Durée\r\n'
    + `${CLINICIAN};Élodie Bérard;IPP-7;${day} 09:00;20\r\n`
    + `${CLINICIAN};Luc Petit;IPP-8;${day} 09:20;20\r\n`
    + `${CLINICIAN};Paul Martin;IPP-9;31/02/2027 09:00;20\r\n`;
  const file = { name: 'export.csv', mimeType: 'text/csv', buffer: Buffer.from(csv, 'utf8') };

  // A clinician may preview but not import: told in plain words.
  const clinician = await openSchedule(chromium, base, CLINICIAN);
  await clinician.setInputFiles('#import-file', file);
  await clinician.click('#import-preview');
  await clinician.waitForFunction(() => document.getElementById('status').textContent === 'Only administrators can import.');

  const page = await openSchedule(chromium, base, ADMIN);
  await page.setInputFiles('#import-file', file);
  await page.click('#import-preview');
  const summary = page.locator('#import-report .report-summary');
  await summary.waitFor();
  assert.equal(await summary.innerText(), '3 rows read (separator ;, UTF-8): 2 to import, 1 refused, 0 to check.');
  const refused = page.locator('#import-report table').first();
  assert.match(await refused.locator('caption').innerText(), /Refused/);
  assert.deepEqual(await refused.locator('tbody td').allInnerTexts().then((c) => c.slice(0, 2)), ['4', 'start']);
  assert.equal(await page.locator('#import-commit').isDisabled(), true, 'not all rows are good: import needs the partial choice');
  assert.deepEqual(await axeViolations(page), [], 'the import report has no serious violations');
  await screenshot(page, 'schedule-3-import-preview');
  // Nothing was imported by the preview.
  const admin = await signIn(base, ADMIN);
  const before = await api(base, admin, 'GET', '/api/follow-ups');
  assert.ok(before);

  await page.check('#import-partial');
  await page.click('#import-preview');
  await eventually(async () => !(await page.locator('#import-commit').isDisabled()));
  await page.click('#import-commit');
  await page.waitForFunction(() => document.getElementById('import-report').textContent.includes('2 visits imported.'));
});

test('scheduling page: a group class, enrolments up to its places, a second click refused', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const page = await openSchedule(chromium, server.base, CLINICIAN);
  // Tuesdays and Fridays at 10:00 for two weeks, from next Monday.
  const monday = new Date();
  monday.setDate(monday.getDate() + ((8 - monday.getDay()) % 7 || 7));
  const first = `${monday.getFullYear()}-${String(monday.getMonth() + 1).padStart(2, '0')}-${String(monday.getDate()).padStart(2, '0')}`;
  await page.fill('#class-title', 'Gentle strength');
  await page.check('#class-day-tue');
  await page.check('#class-day-fri');
  await page.fill('#class-start', '10:00');
  await page.fill('#class-first', first);
  await page.fill('#class-weeks', '2');
  await page.fill('#class-capacity', '2');
  await page.click('#class-form button[type=submit]');
  const card = page.locator('.group-class', { hasText: 'Gentle strength' });
  await card.waitFor();
  assert.match(await page.textContent('#status'), /4 sessions/, 'four sessions booked');
  assert.match(await card.textContent(), /Tuesday, Friday at 10:00/);
  assert.match(await card.textContent(), /0 of 2 places taken/);

  // The same class again (a second click): refused, nothing booked twice.
  await page.fill('#class-title', 'Gentle strength');
  await page.click('#class-form button[type=submit]');
  await eventually(async () => /overlap/.test(await page.textContent('#status')), 10000);
  assert.equal(await page.locator('.group-class').count(), 1, 'still one class');

  // Two patients fill its places (the first with a double click, which
  // enrols once); each has a link to the next session. A third finds it full.
  for (const name of ['Alice Martin', 'Bruno Petit']) {
    await card.locator('.class-enrol input').fill(name);
    if (name === 'Alice Martin') await card.locator('.class-enrol button').dblclick();
    else await card.locator('.class-enrol button').click();
    await page.locator('.group-class tr', { hasText: name }).waitFor();
  }
  const links = await page.locator('.group-class tbody input[type=url]').evaluateAll((inputs) => inputs.map((i) => i.value));
  assert.equal(links.length, 2);
  assert.ok(links.every((l) => /\/join\//.test(l)) && links[0] !== links[1], `a link each: ${links}`);
  assert.match(await page.locator('.group-class').textContent(), /2 of 2 places taken/);
  await page.locator('.group-class .class-enrol input').fill('Chloé Durand');
  await page.locator('.group-class .class-enrol button').click();
  await eventually(async () => /full/.test(await page.textContent('#status')), 10000);
  assert.equal(await page.locator('.group-class tbody tr').count(), 2);
  assert.deepEqual(await axeViolations(page), [], 'the classes section has no serious accessibility violations');

  // Withdrawing frees a place.
  await page.locator('.group-class tr', { hasText: 'Bruno Petit' }).locator('button').click();
  await eventually(async () => /1 of 2 places taken/.test(await page.locator('.group-class').textContent()), 10000);
});
