// A real coturn (Debian's `coturn` package) for tests: on 127.0.0.1, a
// free port, `use-auth-secret` with a secret of the test's own, plain
// TURN over UDP and TCP (and, if asked, TLS with a throw-away self-signed
// certificate), and loopback peers allowed, since the media server it
// relays to is on 127.0.0.1 too.

import { execFileSync, spawn } from 'node:child_process';
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
 * Starts `turnserver` on `ip` and resolves once it listens. With `tls`, it
 * also listens for TURN over TLS (a self-signed certificate made here; the
 * browser must be told to accept it). Returns { port, tlsPort, secret,
 * urls, tlsUrl, log(), stop() }.
 */
export async function startCoturn({ ip = '127.0.0.1', tls = false } = {}) {
  const port = await freePort();
  const tlsPort = tls ? await freePort() : null;
  const secret = randomBytes(24).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), 'tc-coturn-'));
  const tlsArgs = ['--no-tls'];
  if (tls) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=turn.teleconsult.test',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    tlsArgs.splice(0, 1, `--tls-listening-port=${tlsPort}`, `--cert=${join(dir, 'cert.pem')}`, `--pkey=${join(dir, 'key.pem')}`);
  }
  const child = spawn('turnserver', [
    '-n', // no configuration file: everything is here
    `--listening-ip=${ip}`, `--listening-port=${port}`, `--relay-ip=${ip}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=teleconsult.test',
    ...tlsArgs, '--no-dtls', '--allow-loopback-peers', '--no-cli', '--fingerprint',
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
    tlsPort,
    secret,
    urls: [`turn:${ip}:${port}?transport=udp`, `turn:${ip}:${port}?transport=tcp`],
    tlsUrl: tls ? `turns:${ip}:${tlsPort}?transport=tcp` : null,
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
