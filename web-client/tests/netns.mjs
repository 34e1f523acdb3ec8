// A network namespace for one browser, joined to the host by a veth pair
// with private addresses of its own, whose link a test can cut for a real
// outage (both directions, media and WebSocket alike). Needs root.

import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, startDemoServer } from './harness.mjs';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** Whether this process may create network namespaces. */
export function namespacesAvailable() {
  try {
    ip('netns', 'list');
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

/**
 * Creates namespace `tc-<n>` with the host at 10.213.<n>.1 and the
 * namespace at 10.213.<n>.2 (a /30 on a veth pair: nothing leaves the
 * machine). Returns { hostIp, nsIp, chromiumPath, cut(), restore(), limitDownlink(kbit), destroy() }.
 */
export function createNamespace(n) {
  const name = `tc-${n}`;
  const hostIf = `tcvh${n}`;
  const nsIf = `tcvn${n}`;
  const hostIp = `10.213.${n}.1`;
  const nsIp = `10.213.${n}.2`;
  // Leftovers of a killed run.
  try { ip('link', 'del', hostIf); } catch { /* none */ }
  try { ip('netns', 'del', name); } catch { /* none */ }
  ip('netns', 'add', name);
  ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
  ip('link', 'set', nsIf, 'netns', name);
  ip('addr', 'add', `${hostIp}/30`, 'dev', hostIf);
  ip('link', 'set', hostIf, 'up');
  ip('netns', 'exec', name, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', nsIf);
  ip('netns', 'exec', name, 'ip', 'link', 'set', nsIf, 'up');
  ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  ip('netns', 'exec', name, 'ip', 'route', 'add', 'default', 'via', hostIp);
  // Chromium started inside the namespace (Playwright talks to it over a pipe).
  const dir = mkdtempSync(join(tmpdir(), 'tc-netns-'));
  const chromiumPath = join(dir, 'chromium-in-namespace');
  writeFileSync(chromiumPath, `#!/bin/sh\nexec ip netns exec ${name} ${process.env.CHROMIUM ?? '/usr/bin/chromium'} "$@"\n`);
  chmodSync(chromiumPath, 0o755);
  return {
    name,
    hostIp,
    nsIp,
    chromiumPath,
    /** Cuts the link: nothing gets in or out of the namespace. */
    cut: () => ip('link', 'set', hostIf, 'down'),
    /** Brings the link back. */
    restore: () => ip('link', 'set', hostIf, 'up'),
    /**
     * Holds what reaches the namespace to `kbit` kbit/s (a token bucket on
     * the host side of the link, with up to 50 ms of queue): a slow home
     * connection's downlink.
     */
    limitDownlink: (kbit) => execFileSync('tc', ['qdisc', 'replace', 'dev', hostIf, 'root', 'tbf', 'rate', `${kbit}kbit`,
      'burst', '16kbit', 'latency', '50ms'], { stdio: ['ignore', 'pipe', 'pipe'] }),
    destroy() {
      try { ip('link', 'del', hostIf); } catch { /* gone */ }
      try { ip('netns', 'del', name); } catch { /* gone */ }
    },
  };
}

/**
 * Namespace `tc-<n>`, a demo server (with `serverArgs`) listening on the
 * host and on the namespace's side of the link, a Chromium on the host
 * (`host`) and one inside the namespace (`away`); all gone when the test
 * ends. Returns { ns, server, host, away }.
 */
export async function serverAndNamespacedChromium(t, n, serverArgs = []) {
  const ns = createNamespace(n);
  const server = await startDemoServer(serverArgs, { httpHost: '0.0.0.0', mediaIps: ['127.0.0.1', ns.hostIp] });
  const host = await launchChromium();
  // Camera and microphone need a secure context: vouch for the plain-HTTP test address.
  const away = await launchChromium({
    executablePath: ns.chromiumPath,
    args: [`--unsafely-treat-insecure-origin-as-secure=http://${ns.hostIp}:${server.port}`],
  });
  t.after(async () => {
    await away.close().catch(() => {});
    await host.close().catch(() => {});
    await server.stop();
    ns.destroy();
  });
  return { ns, server, host, away };
}
