// Drives seed 004's own client code (NotificationClient.mjs, useEntitySubscription.mjs) from a
// Rust test (tests/api/compat_seed004.rs): one JSON command per line on stdin, one JSON report
// per line on stdout. Run with `node --experimental-websocket` (Node 20 has no global WebSocket
// otherwise).
//
// Commands: {cmd:"connect", url, token}; {cmd:"mount", key, entityType, entityId} renders one
// component using useEntitySubscription; {cmd:"unmount", key}; {cmd:"disconnect"}.
// Reports: {type:"open"}; {type:"frame", frame} for every frame the server sent (a tap on the
// socket, beside the SDK's own handler); {type:"close", code, reason};
// {type:"notification", key, notification, homeScore} for every notification the SDK hands the
// component's handler (homeScore: what a scoreboard reads, `notification.payload.homeScore`).

import { createInterface } from 'node:readline';

import { NotificationClient } from './NotificationClient.mjs';
import { mount } from './react-standin.mjs';
import { useEntitySubscription } from './useEntitySubscription.mjs';

const report = (v) => process.stdout.write(JSON.stringify(v) + '\n');
// The SDK logs with console.log; stdout carries the reports.
console.log = (...args) => console.error(...args);

if (typeof globalThis.WebSocket !== 'function') {
  report({ type: 'fatal', error: 'no global WebSocket: run node with --experimental-websocket' });
  process.exit(1);
}

// The tap: the same WebSocket the SDK uses, with listeners of the test's beside the SDK's.
const BrowserWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class TappedWebSocket extends BrowserWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    this.addEventListener('open', () => report({ type: 'open' }));
    this.addEventListener('message', (e) => report({ type: 'frame', frame: JSON.parse(e.data) }));
    this.addEventListener('close', (e) => report({ type: 'close', code: e.code, reason: e.reason }));
  }
};

let client = null;
const mounted = new Map();

function component(key, entityType, entityId) {
  const onNotification = (notification) =>
    report({ type: 'notification', key, notification, homeScore: notification.payload?.homeScore });
  return () => useEntitySubscription(client, entityType, entityId, onNotification);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  switch (cmd.cmd) {
    case 'connect':
      client = new NotificationClient(cmd.url, cmd.token);
      await client.connect();
      break;
    case 'mount':
      mounted.set(cmd.key, mount(component(cmd.key, cmd.entityType, cmd.entityId)));
      break;
    case 'unmount':
      mounted.get(cmd.key)();
      mounted.delete(cmd.key);
      break;
    case 'disconnect':
      client.disconnect();
      break;
    default:
      report({ type: 'fatal', error: `unknown command ${cmd.cmd}` });
  }
  report({ type: 'done', cmd: cmd.cmd, key: cmd.key });
}
process.exit(0);
