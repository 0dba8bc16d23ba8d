// Drives one real @microsoft/signalr HubConnection for the Rust test suite.
//
// Commands arrive as JSON lines on stdin; everything that happens is reported as JSON lines on
// stdout. The front-end code under test is the unmodified client: HubConnectionBuilder().withUrl(
// url, { accessTokenFactory, skipNegotiation, transport }).withAutomaticReconnect()…
//
// Commands:
//   {"cmd":"start","url":…,"token":…,"protocol":"json"|"messagepack","skipNegotiation":bool,
//    "reconnect":bool,"transport":"WebSockets"|"ServerSentEvents"|"LongPolling",
//    "events":["NewOrder",…]}   (transport: the one the client is forced to use; default WebSockets)
//   {"cmd":"on","event":"Name"}                 listen for one more event name
//   {"cmd":"invoke","id":"r1","method":"Ping","args":[…]}
//   {"cmd":"invokeAll","calls":[{"id":"r2","method":…,"args":[…]},…]}
//                                               invokes without awaiting in between (the client
//                                               sends them in one frame); one result each
//   {"cmd":"send","method":"…","args":[…]}      fire-and-forget
//   {"cmd":"token","token":…}                   what accessTokenFactory returns from now on
//   {"cmd":"noop","id":…}                     answered in order: proves earlier commands ran
//   {"cmd":"stop"}
// Reports: started, start_failed, event, result, send_done, reconnecting, reconnected, closed,
//          stopped, log.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import readline from "node:readline";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let connection = null;
let token = "";
const listening = new Set();

function listen(name) {
  if (listening.has(name) || !connection) return;
  listening.add(name);
  // A handler that returns a value answers a client-result invocation; events expect none.
  connection.on(name, (...args) => {
    out({ type: "event", name, args });
  });
}

const logger = {
  log(level, message) {
    if (level >= signalR.LogLevel.Warning) out({ type: "log", level, message });
  },
};

async function start(c) {
  token = c.token ?? "";
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(c.url, {
      accessTokenFactory: () => token,
      skipNegotiation: !!c.skipNegotiation,
      transport: signalR.HttpTransportType[c.transport ?? "WebSockets"],
    })
    .configureLogging(logger);
  if (c.protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (c.reconnect) builder = builder.withAutomaticReconnect([0, 200, 500, 1000, 1000, 2000, 2000, 2000, 5000]);
  if (c.statefulReconnect) builder = builder.withStatefulReconnect();
  connection = builder.build();
  connection.onreconnecting((e) => out({ type: "reconnecting", error: e ? String(e.message ?? e) : null }));
  connection.onreconnected((id) => out({ type: "reconnected", connectionId: id ?? null }));
  connection.onclose((e) => out({ type: "closed", error: e ? String(e.message ?? e) : null }));
  for (const name of c.events ?? []) listen(name);
  try {
    await connection.start();
    out({ type: "started", connectionId: connection.connectionId ?? null });
  } catch (e) {
    out({ type: "start_failed", error: String(e.message ?? e) });
  }
}

async function handle(c) {
  switch (c.cmd) {
    case "start":
      return start(c);
    case "on":
      return listen(c.event);
    case "noop":
      return out({ type: "noop", id: c.id });
    case "token":
      token = c.token;
      return;
    case "invoke":
      try {
        const value = await connection.invoke(c.method, ...(c.args ?? []));
        out({ type: "result", id: c.id, ok: true, value: value === undefined ? null : value });
      } catch (e) {
        out({ type: "result", id: c.id, ok: false, error: String(e.message ?? e) });
      }
      return;
    case "invokeAll":
      // Every invoke() starts in this tick: the client's send queue batches them into one frame.
      return Promise.all(
        (c.calls ?? []).map(async (call) => {
          try {
            const value = await connection.invoke(call.method, ...(call.args ?? []));
            out({ type: "result", id: call.id, ok: true, value: value === undefined ? null : value });
          } catch (e) {
            out({ type: "result", id: call.id, ok: false, error: String(e.message ?? e) });
          }
        }),
      );
    case "send":
      await connection.send(c.method, ...(c.args ?? []));
      return out({ type: "send_done", method: c.method });
    case "stop":
      if (connection) await connection.stop();
      out({ type: "stopped" });
      return process.exit(0);
    default:
      out({ type: "log", level: 99, message: `unknown command ${c.cmd}` });
  }
}

const rl = readline.createInterface({ input: process.stdin });
// Commands run in order; an invoke awaiting its completion does not block later commands.
rl.on("line", (line) => {
  if (!line.trim()) return;
  let c;
  try {
    c = JSON.parse(line);
  } catch (e) {
    return out({ type: "log", level: 99, message: `bad command ${line}` });
  }
  handle(c).catch((e) => out({ type: "log", level: 99, message: String(e.stack ?? e) }));
});
rl.on("close", () => process.exit(0));
