// Joins a room over the signaling WebSocket with the web client's own
// signaling module, the way a browser does: used by scripts/deploy-test.sh
// to prove that a TLS proxy forwards WebSocket upgrades to an installed
// server. Trust a self-signed proxy with NODE_EXTRA_CA_CERTS.
//
//   node scripts/deploy-ws-join.mjs wss://127.0.0.1:8443/ws <join token>

import { createRequire } from 'node:module';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: deploy-ws-join.mjs <ws url> <join token>');
  process.exit(2);
}
const require = createRequire(new URL('../web-client/package.json', import.meta.url));
globalThis.WebSocket = require('ws').WebSocket;
const { SignalingClient } = await import('../web-client/js/signaling.js');

const timer = setTimeout(() => {
  console.error('no answer within 10 s');
  process.exit(1);
}, 10000);
try {
  const client = await SignalingClient.connect(url);
  const joined = await client.request({ type: 'join', token });
  console.log(JSON.stringify({ welcome: client.welcome.type, joined: joined.type, room: joined.room_id, role: joined.role }));
  client.close?.();
  clearTimeout(timer);
  process.exit(joined.type === 'joined' ? 0 : 1);
} catch (e) {
  console.error(`join failed: ${e.code ?? ''} ${e.message}`);
  process.exit(1);
}
