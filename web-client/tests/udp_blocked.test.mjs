// A patient on a network that lets no UDP out: the patient's Chromium runs
// in a network namespace of its own (a veth pair to the host, 10.213.n.x)
// whose UDP is dropped by nftables inside that namespace only.
// - With ICE over TCP (--ice-tcp-port), the visit connects straight to the
//   media server's passive TCP candidate; /metrics and the patient's stats
//   say TCP.
// - With the media server's TCP closed (no --ice-tcp-port) and coturn
//   offering TURN over TLS only, it connects through TURN/TLS.
// Frames decode both ways in each. Needs root (namespaces).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  admitAndTimeFirstFrame, decodesFrom, eventually, freePort, launchChromium, newPage, signInAndStart, startDemoServer,
  walkToWaitingRoom,
} from './harness.mjs';
import { startCoturn } from './coturn.mjs';
import { createNamespace, namespacesAvailable } from './netns.mjs';

const skip = namespacesAvailable() ? false : 'needs root for network namespaces';

/**
 * Namespace `n` with UDP dropped inside, a demo server on its host address
 * with `serverArgs(hostIp)`, a clinician on the host and the patient inside,
 * in a visit. Returns the pages, ids, base URL and the join time (admit →
 * the patient's first frame from the clinician).
 */
async function visitWithoutUdp(t, n, serverArgs, { chromiumArgs = [] } = {}) {
  const ns = createNamespace(n);
  t.after(() => ns.destroy());
  // Inside the namespace only: every UDP packet out is dropped.
  execFileSync('ip', ['netns', 'exec', ns.name, 'nft', '-f', '-'], {
    input: 'table inet tc_no_udp {\n chain out {\n  type filter hook output priority 0; policy accept;\n  meta l4proto udp drop\n }\n}\n',
  });
  // Everything on the veth's host address, which both browsers reach.
  const server = await startDemoServer(await serverArgs(ns.hostIp), { httpHost: ns.hostIp, mediaIps: [ns.hostIp] });
  const base = `http://${ns.hostIp}:${server.port}`;
  // Camera and microphone need a secure context: vouch for the plain-HTTP test address.
  const secure = [`--unsafely-treat-insecure-origin-as-secure=${base}`];
  const host = await launchChromium({ args: secure });
  const inside = await launchChromium({ executablePath: ns.chromiumPath, args: [...secure, ...chromiumArgs] });
  t.after(async () => {
    await host.close();
    await inside.close();
    await server.stop();
  });

  const desk = await newPage(host.browser, 'clinician');
  await signInAndStart(desk, server, { base });
  const patient = await newPage(inside.browser, 'patient');
  await patient.goto(server.links.patientLink);
  await walkToWaitingRoom(patient);
  const { clinicianId, patientId, joinMs } = await admitAndTimeFirstFrame(desk, patient);
  assert.ok(await eventually(() => decodesFrom(() => desk.evaluate(() => window.teleconsultConsole.stats()), patientId), 20000, 100),
    'the clinician decodes the patient’s video');
  assert.ok(await eventually(() => decodesFrom(() => patient.evaluate(() => window.teleconsultJoin.stats()), clinicianId), 20000, 100),
    'the patient keeps decoding');
  const paths = await patient.evaluate(() => window.teleconsultJoin.state.media.paths());
  return { base, paths, joinMs };
}

test('a patient whose network drops UDP joins over ICE-TCP, frames both ways', { skip }, async (t) => {
  const tcpPort = await freePort();
  const { base, paths, joinMs } = await visitWithoutUdp(t, 41, () => ['--ice-tcp-port', String(tcpPort)]);
  for (const connection of ['publish', 'subscribe']) {
    // (Chromium's active TCP candidate shows as prflx once its port is known.)
    assert.ok(['host', 'prflx'].includes(paths[connection]?.type), `the patient's ${connection} connection is direct: ${JSON.stringify(paths)}`);
    assert.equal(paths[connection]?.protocol, 'tcp', `the patient's ${connection} connection is TCP: ${JSON.stringify(paths)}`);
  }
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /^teleconsult_media_connections\{path="tcp"\} 1$/m, 'the server counts one ICE-TCP participant');
  assert.match(metrics, /^teleconsult_media_connections\{path="udp"\} 1$/m, 'and the clinician on UDP');
  console.log(`join time (admit → first frame at the patient): ICE-TCP ${joinMs} ms`);
});

test('with the media server’s TCP closed, the same patient joins through TURN over TLS', { skip }, async (t) => {
  let coturn;
  t.after(async () => { await coturn?.stop(); });
  const { paths, joinMs } = await visitWithoutUdp(t, 42, async (hostIp) => {
    coturn = await startCoturn({ ip: hostIp, tls: true });
    // TURN over TLS only: the plain TURN URLs are not handed out.
    return ['--turn-urls', coturn.tlsUrl, '--turn-secret', coturn.secret];
  }, {
    // The test's coturn has a throw-away self-signed certificate.
    chromiumArgs: ['--ignore-certificate-errors'],
  });
  for (const connection of ['publish', 'subscribe']) {
    assert.equal(paths[connection]?.type, 'relay', `the patient's ${connection} connection is relayed: ${JSON.stringify(paths)}`);
    assert.equal(paths[connection]?.relayProtocol, 'tls', `and reaches coturn over TLS: ${JSON.stringify(paths)}`);
  }
  assert.match(coturn.log(), /ALLOCATE processed, success/, 'coturn allocated the relay');
  console.log(`join time (admit → first frame at the patient): TURN over TLS ${joinMs} ms`);
});
