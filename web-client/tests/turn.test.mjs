// TURN with a real coturn (Debian's package, started here with
// `use-auth-secret`): a visit whose two Chromium pages may use relayed
// candidates only (`?ice_transport=relay`) holds, with frames decoding both
// ways through coturn, on the credentials the server handed out in
// `joined` and `admitted`; and coturn itself refuses a wrong password and an
// expired username (both pages' browsers would see the same 401).
//
// The join time (admit → the patient's first decoded frame from the
// clinician) is printed for the relayed call and for a direct one, to
// compare (BENCHMARKS.md).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  admitAndTimeFirstFrame, decodesFrom, eventually, launchChromium, newPage, signInAndStart, startDemoServer, walkToWaitingRoom,
} from './harness.mjs';
import { startCoturn, turnCredentials } from './coturn.mjs';

/** `teleconsult_media_connections` by path, from `/metrics`. */
async function mediaPaths(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Object.fromEntries([...text.matchAll(/^teleconsult_media_connections\{path="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
}

/** The ops dashboard's "Media path" cells for `room`, once both participants show one. */
async function dashboardPaths(chromium, base, room) {
  const ops = await newPage(chromium.browser, 'ops');
  await ops.goto(`${base}/ops`);
  await ops.waitForSelector('#signin-form', { state: 'visible' });
  await ops.fill('#email', 'ops@demo.teleconsult.test');
  await ops.fill('#password', 'demo-password');
  await ops.click('#signin-form button[type=submit]');
  await ops.waitForSelector('#dashboard', { state: 'visible' });
  const cells = await eventually(async () => {
    const found = await ops.$$eval(`#rooms tbody tr[data-room="${room}"] .path`, (tds) => tds.map((td) => td.textContent));
    return found.length === 2 && found.every((c) => c !== '–') ? found : null;
  }, 10000, 200);
  await ops.context().close();
  return cells;
}

/**
 * A clinician and the demo patient in a visit, both pages opened with
 * `query`; returns the pages, their ids and the ms from the click on
 * "admit" to the patient's first decoded frame from the clinician.
 */
async function visit(server, chromium, query) {
  const desk = await newPage(chromium.browser, 'clinician');
  await signInAndStart(desk, server, { query });
  const patient = await newPage(chromium.browser, 'patient');
  await patient.goto(`${server.links.patientLink}${query}`);
  await walkToWaitingRoom(patient);
  const { clinicianId, patientId, joinMs } = await admitAndTimeFirstFrame(desk, patient);
  return { desk, patient, clinicianId, patientId, joinMs };
}

test('a visit through coturn with relayed candidates only, frames both ways; a direct one to compare', async (t) => {
  const coturn = await startCoturn();
  const turnFlags = ['--turn-urls', coturn.urls.join(','), '--turn-secret', coturn.secret];
  // A server per call: the demo visit is fresh in each.
  const server = await startDemoServer(turnFlags);
  const directServer = await startDemoServer(turnFlags);
  const chromium = await launchChromium();
  t.after(async () => {
    await chromium.close();
    await server.stop();
    await directServer.stop();
    await coturn.stop();
  });

  // Direct first. With TURN configured, Chromium allocates relays anyway
  // (it gathers every kind of candidate), but the pair it picks is direct.
  const direct = await visit(directServer, chromium, '');
  const directPaths = await direct.patient.evaluate(() => window.teleconsultJoin.state.media.paths());
  assert.equal(directPaths.publish?.type, 'host', `without the switch, media goes direct: ${JSON.stringify(directPaths)}`);
  assert.ok(await eventually(async () => (await mediaPaths(directServer.base)).udp === 2, 10000, 200),
    `/metrics counts two direct UDP connections: ${JSON.stringify(await mediaPaths(directServer.base))}`);
  assert.deepEqual(await dashboardPaths(chromium, directServer.base, directServer.links.visit), ['UDP', 'UDP'], 'the dashboard shows both as UDP');
  await direct.desk.context().close();
  await direct.patient.context().close();
  const logBefore = coturn.log().length;

  const relayed = await visit(server, chromium, '?ice_transport=relay');
  for (const [who, page, read, from] of [
    ['patient', relayed.patient, () => relayed.patient.evaluate(() => window.teleconsultJoin.stats()), relayed.clinicianId],
    ['clinician', relayed.desk, () => relayed.desk.evaluate(() => window.teleconsultConsole.stats()), relayed.patientId],
  ]) {
    assert.ok(await eventually(() => decodesFrom(read, from), 20000, 100), `the ${who} keeps decoding frames through the relay`);
    const state = who === 'patient' ? 'teleconsultJoin' : 'teleconsultConsole';
    const paths = await page.evaluate((s) => window[s].state.media.paths(), state);
    for (const connection of ['publish', 'subscribe']) {
      assert.equal(paths[connection]?.type, 'relay', `the ${who}'s ${connection} connection is relayed: ${JSON.stringify(paths)}`);
    }
  }
  assert.ok(await eventually(async () => (await mediaPaths(server.base)).relay === 2, 10000, 200),
    `/metrics counts two relayed connections: ${JSON.stringify(await mediaPaths(server.base))}`);
  assert.deepEqual(await dashboardPaths(chromium, server.base, server.links.visit), ['relay (TURN)', 'relay (TURN)'], 'the dashboard shows both relayed');
  // coturn saw the allocations, authenticated with what the server minted.
  const log = coturn.log().slice(logBefore);
  assert.match(log, /ALLOCATE processed, success/, 'coturn allocated relays');
  assert.match(log, new RegExp(`username=<\\d+:${relayed.patientId}>`), 'the patient authenticated with its own credentials');
  assert.match(log, new RegExp(`username=<\\d+:${relayed.clinicianId}>`), 'so did the clinician');
  // (The first request of each allocation gets a 401 with a nonce, as TURN
  // does; one that carried a username and still got 401 was refused.)
  assert.doesNotMatch(log, /user <\d+:[^>]+>: .*error 401/, 'no credential was refused');
  console.log(`join time (admit → first frame at the patient): direct UDP ${direct.joinMs} ms, TURN relay (UDP) ${relayed.joinMs} ms`);
});

test('coturn refuses a wrong password and an expired username; it takes a fresh one', async (t) => {
  const coturn = await startCoturn();
  const chromium = await launchChromium();
  t.after(async () => {
    await chromium.close();
    await coturn.stop();
  });
  const page = await newPage(chromium.browser, 'gatherer');
  await page.goto('about:blank');
  const now = Math.floor(Date.now() / 1000);
  const good = turnCredentials(coturn.secret, 'p-test', now + 600);
  const cases = {
    fresh: good,
    wrong: { username: good.username, credential: turnCredentials('not-the-secret', 'p-test', now + 600).credential },
    expired: turnCredentials(coturn.secret, 'p-test', now - 60),
  };
  for (const [name, creds] of Object.entries(cases)) {
    // Gathers with relay only: a relay candidate appears, or coturn's error.
    const result = await page.evaluate(async ({ urls, creds }) => {
      const pc = new RTCPeerConnection({ iceServers: [{ urls, ...creds }], iceTransportPolicy: 'relay' });
      const seen = { relay: 0, errors: [] };
      pc.addEventListener('icecandidate', (e) => { if (e.candidate?.type === 'relay') seen.relay += 1; });
      pc.addEventListener('icecandidateerror', (e) => seen.errors.push(e.errorCode));
      pc.createDataChannel('probe');
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
        setTimeout(resolve, 10000);
      });
      pc.close();
      return seen;
    }, { urls: [coturn.urls[0]], creds });
    if (name === 'fresh') {
      assert.ok(result.relay > 0, `fresh credentials get a relay candidate: ${JSON.stringify(result)}`);
    } else {
      assert.equal(result.relay, 0, `${name} credentials get no relay: ${JSON.stringify(result)}`);
      assert.ok(result.errors.includes(401), `coturn answers 401 to ${name} credentials: ${JSON.stringify(result)}`);
    }
  }
});
