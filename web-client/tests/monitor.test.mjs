// The patient's symptom-monitoring questionnaire on a phone (360 px), in
// Chromium against a real server: opened from the link a clinician's
// enrolment made, in the enrolment's language, answered once per half-day,
// a red flag reaching the clinician's inbox, and a revoked link explained;
// each screen checked with axe-core.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, axeViolations, screenshot, serverAndChromium, signIn } from './harness.mjs';

test('monitoring questionnaire on a phone: answer, red flag, revoked; accessible', async (t) => {
  const { server, chromium } = await serverAndChromium(t);
  const { base } = server;
  const token = await signIn(base, 'clinician@demo.teleconsult.test');
  const enrolled = await api(base, token, 'POST', `/api/visits/${server.links.visit}/monitoring`, { days: 7, language: 'fr' });
  const link = enrolled.link.url;

  const context = await chromium.browser.newContext({ bypassCSP: true, viewport: { width: 360, height: 740 }, locale: 'en-GB', isMobile: true });
  const page = await context.newPage();
  await page.goto(link);
  await page.waitForSelector('#screen-form', { state: 'visible' });
  // The enrolment asked for French, whatever the phone's language.
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'fr');
  assert.match(await page.locator('#form-title').innerText(), /^Ce (matin|soir)$/);
  assert.deepEqual(await axeViolations(page), [], 'the questionnaire has no serious accessibility violations');
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 360), 'fits a 360-pixel screen');
  await screenshot(page, 'monitor-1-questionnaire-fr');

  // The patient switches to English, reports fever and pain 6, and sends.
  await page.click('#lang');
  assert.equal(await page.locator('#screen-form label[for=pain]').innerText(), 'My pain now, from 0 (none) to 10 (the worst):');
  await page.check('input[name=fever]');
  await page.fill('#pain', '6');
  await page.fill('#new-symptoms', 'shivers at night');
  await page.click('#check-in button[type=submit]');
  await page.waitForSelector('#screen-done', { state: 'visible' });
  assert.equal(await page.locator('#done-flag').isVisible(), true, 'the patient is told their care team was alerted');
  assert.deepEqual(await axeViolations(page), [], 'the thank-you screen has no serious violations');
  await screenshot(page, 'monitor-2-done');

  // Opened again in the same half-day: already answered.
  await page.reload();
  await page.waitForSelector('#screen-done', { state: 'visible' });

  // The clinician sees the check-in in the trend and the red flag in the inbox.
  const trend = await api(base, token, 'GET', `/api/visits/${server.links.visit}/monitoring`);
  const checkIn = trend.enrolments[0].check_ins[0];
  assert.equal(checkIn.pain, 6);
  assert.deepEqual(checkIn.red_flags, ['fever']);
  assert.equal(checkIn.answers.new_symptoms, 'shivers at night');
  const inbox = await api(base, token, 'GET', '/api/notifications');
  assert.ok(inbox.notifications.some((n) => n.kind === 'red_flags' && n.detail === 'fever'), JSON.stringify(inbox));

  // Revoked: the page says so in plain words.
  await api(base, token, 'POST', `/api/monitoring/${enrolled.enrolment.id}/revoke`);
  await page.reload();
  await page.waitForSelector('#screen-error', { state: 'visible' });
  assert.equal(await page.locator('#error-title').innerText(), 'This monitoring has been stopped');
  assert.deepEqual(await axeViolations(page), [], 'the error screen has no serious violations');
});
