// A Chromium pair on a cluster of four nodes (processes on 127.0.0.1 sharing
// the machine's Redis and a fresh PostgreSQL database). The clinician's
// console is served by node `y`, the patient's page by node `z`; with equal
// load a new room goes to the first node by id, so the call lives on `a`,
// and both WebSockets are bridged to it. Then:
//   - `a` is drained (SIGTERM): the call moves (to `b`) and frames decode
//     again on both pages within 5 s; `a` exits before its deadline;
//   - `b` is killed (SIGKILL): the call moves again (to `y`) and frames
//     decode again within 10 s, with nobody re-admitting the patient.
// The timings are printed (`# cluster: …`) for BENCHMARKS.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  eventually, framesOn, framesRise, freePort, launchChromium, newPage, serverBinary, signInAndStart, startDemoServer, walkToWaitingRoom,
} from './harness.mjs';

const SECRET = 'cluster-browser-test-secret-0123456789abcdef';
const ADMIN_DB = process.env.TELECONSULT_BROWSER_POSTGRES ?? process.env.TELECONSULT_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS = process.env.TELECONSULT_TEST_REDIS ?? 'redis://127.0.0.1:6379';

function freshDatabase() {
  const name = `tc_test_cluster_${process.pid}_${Date.now()}`;
  execFileSync('psql', [ADMIN_DB, '-q', '-c', `CREATE DATABASE ${name}`]);
  const url = new URL(ADMIN_DB);
  url.pathname = `/${name}`;
  return url.toString();
}

function clusterArgs(id, prefix) {
  return ['--redis', REDIS, '--redis-prefix', prefix, '--node-id', id, '--token-secret', SECRET, '--drain-timeout-secs', '8'];
}

/** A node without demo data; resolves once it is ready. */
async function startNode(id, prefix, db) {
  const port = await freePort();
  const child = spawn(serverBinary(), ['serve', '--http-addr', `127.0.0.1:${port}`, '--media-port', '0', '--media-ips', '127.0.0.1',
    '--db', db, ...clusterArgs(id, prefix)], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TELECONSULT_LOG: 'warn' } });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const base = `http://127.0.0.1:${port}`;
  const ready = await eventually(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 30000, 100);
  assert.ok(ready, `node ${id} ready; stderr: ${stderr}`);
  return { id, base, port, child, stderr: () => stderr };
}

/**
 * Ms from `since` until the page decodes frames on a *new* media session
 * (its count, `before` at the cut, starts again from zero after a move),
 * or null after `ms`.
 */
async function framesBack(page, reader, before, since, ms) {
  const reset = await eventually(async () => (await framesOn(page, reader)) < before, ms, 50);
  if (!reset) return null;
  return (await framesRise(page, reader, ms)) === null ? null : Date.now() - since;
}

/** Which node holds a room, from a node's metrics. */
async function holder(nodes) {
  for (const node of nodes) {
    const text = await (await fetch(`${node.base}/metrics`).catch(() => null))?.text().catch(() => '') ?? '';
    if (/^teleconsult_rooms_active 1$/m.test(text)) return node.id;
  }
  return null;
}

test('a call on a cluster moves when its node drains, and again when its node dies', async (t) => {
  const db = freshDatabase();
  const prefix = `tc-test-browser-${process.pid}-${Date.now()}`;
  // `a` creates the demo accounts and visit; the others share its database.
  const a = await startDemoServer(clusterArgs('a', prefix), { db });
  const b = await startNode('b', prefix, db);
  const y = await startNode('y', prefix, db);
  const z = await startNode('z', prefix, db);
  const { browser } = await launchChromium();
  t.after(async () => {
    await browser.close().catch(() => {});
    for (const node of [b, y, z]) node.child.kill('SIGKILL');
    await a.stop();
  });
  // Every node has seen the others' heartbeats.
  await new Promise((r) => setTimeout(r, 1500));

  const desk = await newPage(browser, 'clinician');
  await signInAndStart(desk, a, { base: y.base });
  const patient = await newPage(browser, 'patient');
  if (process.env.DEBUG_CLUSTER) {
    patient.on('console', (m) => console.log('# [patient]', m.text()));
    patient.on('response', (r) => r.status() >= 400 && console.log('# [patient]', r.status(), r.url()));
    patient.on('websocket', (ws) => { ws.on('framereceived', (f) => console.log('# [patient ws]', String(f.payload).slice(0, 80))); ws.on('close', () => console.log('# [patient ws] closed')); });
  }
  await patient.goto(a.links.patientLink.replace(`127.0.0.1:${a.port}`, `127.0.0.1:${z.port}`));
  await walkToWaitingRoom(patient);
  await desk.locator('#waiting-list li', { hasText: 'Demo Patient' }).locator('button.admit').click();
  assert.ok(await framesRise(desk, 'teleconsultConsole', 20000) !== null, 'the clinician decodes the patient');
  assert.ok(await framesRise(patient, 'teleconsultJoin', 20000) !== null, 'the patient decodes the clinician');
  const nodes = [{ id: 'a', base: a.base }, b, y, z];
  assert.equal(await holder(nodes), 'a', 'the room lives on a, the node neither page reached');

  // Drain `a`.
  let before = [await framesOn(desk, 'teleconsultConsole'), await framesOn(patient, 'teleconsultJoin')];
  const drainedAt = Date.now();
  const aExit = a.stop().then(() => Date.now() - drainedAt);
  const [deskDrainMs, patientDrainMs] = await Promise.all([
    framesBack(desk, 'teleconsultConsole', before[0], drainedAt, 15000),
    framesBack(patient, 'teleconsultJoin', before[1], drainedAt, 15000),
  ]);
  console.log(`# cluster: drain: frames again after ${deskDrainMs} ms (clinician), ${patientDrainMs} ms (patient)`);
  assert.ok(deskDrainMs !== null && deskDrainMs < 5000, `the clinician's frames are back within 5 s (${deskDrainMs} ms)`);
  if (patientDrainMs === null) {
    const shown = await patient.evaluate(() => [...document.querySelectorAll('main > section, section')].filter((e) => !e.hidden).map((e) => e.id));
    console.log('# patient shows', shown, await patient.textContent('#reconnecting').catch(() => ''));
    console.log('# patient stats', JSON.stringify(await patient.evaluate(async () => window.teleconsultJoin.stats())).slice(0, 600));
  }
  assert.ok(patientDrainMs !== null && patientDrainMs < 5000, `the patient's frames are back within 5 s (${patientDrainMs} ms)`);
  const drainExit = await Promise.race([aExit, new Promise((r) => setTimeout(() => r(null), 9000))]);
  console.log(`# cluster: drain: node exited after ${drainExit} ms (deadline 8000 ms)`);
  assert.ok(drainExit !== null && drainExit < 8000, 'the drained node exits before its deadline');
  assert.equal(await eventually(async () => (await holder(nodes.slice(1))) === 'b' && 'b', 5000), 'b', 'the room moved to b');
  assert.ok(await patient.isHidden('#screen-waiting'), 'the patient was not sent back to the waiting room');

  // Kill `b`.
  before = [await framesOn(desk, 'teleconsultConsole'), await framesOn(patient, 'teleconsultJoin')];
  const killedAt = Date.now();
  b.child.kill('SIGKILL');
  const [deskKillMs, patientKillMs] = await Promise.all([
    framesBack(desk, 'teleconsultConsole', before[0], killedAt, 20000),
    framesBack(patient, 'teleconsultJoin', before[1], killedAt, 20000),
  ]);
  console.log(`# cluster: node lost: frames again after ${deskKillMs} ms (clinician), ${patientKillMs} ms (patient)`);
  assert.ok(deskKillMs !== null && deskKillMs < 10000, `the clinician's frames are back within 10 s (${deskKillMs} ms)`);
  assert.ok(patientKillMs !== null && patientKillMs < 10000, `the patient's frames are back within 10 s (${patientKillMs} ms)`);
  assert.ok(await patient.isHidden('#screen-waiting'), 'nobody had to admit the patient again');
  assert.equal(await holder([y, z]), 'y', 'the room moved to y');

  // The patient reloads: the page's resume token reaches z, which bridges
  // it to y, where the seat is waiting.
  before = [await framesOn(desk, 'teleconsultConsole'), await framesOn(patient, 'teleconsultJoin')];
  const reloadedAt = Date.now();
  await patient.reload();
  const reloadMs = await framesBack(patient, 'teleconsultJoin', before[1], reloadedAt, 20000);
  console.log(`# cluster: patient reload through another node than the room's: frames again after ${reloadMs} ms`);
  assert.ok(reloadMs !== null, 'the reloaded patient page decodes the clinician again');
  assert.ok(await framesRise(desk, 'teleconsultConsole', 15000) !== null, 'and the clinician decodes the patient');
  assert.ok(await patient.isHidden('#screen-waiting'), 'the reloaded patient is still in the call');

  // Ops see every live node, and which holds the room, from any node.
  // The dead node's heartbeat lapses within 3 s (then the next heartbeat reads the registry).
  const metrics = await eventually(async () => {
    const text = await (await fetch(`${z.base}/metrics`)).text();
    return /teleconsult_cluster_node_up\{node="b"/.test(text) ? null : text;
  }, 8000);
  assert.ok(metrics, 'the dead node is gone from the registry');
  assert.match(metrics, /^teleconsult_cluster_node_up\{node="y",state="active"\} 1$/m);
  const ops = await newPage(browser, 'ops');
  await ops.goto(`${z.base}/ops`);
  await ops.fill('#email', 'ops@demo.teleconsult.test');
  await ops.fill('#password', 'demo-password');
  await ops.click('#signin-form button[type=submit]');
  const rowsOf = () => ops.$$eval('#cluster tbody tr', (trs) => trs.map((tr) => [tr.dataset.node, tr.querySelector('.node-rooms')?.textContent]));
  const shown = await eventually(async () => {
    const rows = await rowsOf();
    return rows.length === 2 && rows[0][0] === 'y' && rows[1][0] === 'z' && rows[0][1].includes(a.links.visit);
  }, 10000);
  assert.ok(shown, `the dashboard lists the live nodes, and y holding the visit's room: ${JSON.stringify(await rowsOf())}`);
});
