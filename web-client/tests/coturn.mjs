// A real coturn (Debian's `coturn` package) for tests: on 127.0.0.1, a
// free port, `use-auth-secret` with a secret of the test's own, plain
// TURN over UDP and TCP (no TLS), and loopback peers allowed, since the
// media server it relays to is on 127.0.0.1 too.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

async function freePort() {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolvePort(port));
    });
  });
}

/** TURN REST credentials, computed here independently of the server. */
export function turnCredentials(secret, id, expiresUnix) {
  const username = `${expiresUnix}:${id}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64') };
}

/**
 * Starts `turnserver` and resolves once it listens. Returns
 * { port, secret, urls, log(), stop() }.
 */
export async function startCoturn() {
  const port = await freePort();
  const secret = randomBytes(24).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), 'tc-coturn-'));
  const child = spawn('turnserver', [
    '-n', // no configuration file: everything is here
    '--listening-ip=127.0.0.1', `--listening-port=${port}`, '--relay-ip=127.0.0.1',
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=teleconsult.test',
    '--no-tls', '--no-dtls', '--allow-loopback-peers', '--no-cli', '--fingerprint',
    `--userdb=${join(dir, 'turndb')}`, `--pidfile=${join(dir, 'turnserver.pid')}`,
    '--log-file=stdout', '--simple-log', '--verbose',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`coturn did not start; log: ${log}`)), 10000);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`coturn exited with ${code}; log: ${log}`)); });
    const poll = setInterval(() => {
      // coturn prints these once it listens and can check credentials.
      if (/UDP listener opened/.test(log) && /auth thread/.test(log)) {
        clearInterval(poll);
        clearTimeout(timer);
        resolveReady();
      }
    }, 100);
  });
  return {
    port,
    secret,
    urls: [`turn:127.0.0.1:${port}?transport=udp`, `turn:127.0.0.1:${port}?transport=tcp`],
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
