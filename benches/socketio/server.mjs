// benches/socketio/server.mjs — a Socket.IO 4 broadcast server speaking the benchmark contract, "for
// the record": the server most teams would otherwise pick (issue 16). Not a product: tokens (the
// CONNECT packet's `auth`) are accepted unverified and every room is open.
//
// Owns: the command line, the Socket.IO server (WebSocket transport only, no long-polling, no
// compression), and the three things the load generator does with it, mapped from the baseline's
// native contract:
//   subscribe  client emits "subscribe" (channel, ack)       -> joins the room; ack {channel, offset, epoch}
//   publish    client emits "publish" ({channel, event, data}, ack)
//                                                          -> emits event (or "Notification") to the room
//                                                             with {id, channel, event, data, offset,
//                                                             epoch, timestamp}; ack {id, offset, epoch},
//                                                             or {error: {code, message}} without a
//                                                             channel or data
//   heartbeat  Engine.IO's own ping ("2") / pong ("3")
// A room broadcast is encoded once by Socket.IO's in-memory adapter and written to every member.
//
// Usage: node server.mjs [--host 127.0.0.1] [--port 0]
// The first line on stdout is `listening on PORT`.

import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
  },
});

// The event name of a publish that names none (the baseline's default too).
const DEFAULT_EVENT = "Notification";

// Identity of this run: the history epoch and the message-id counter.
const epoch = process.hrtime.bigint().toString(16);
let nextMessage = 1;
// Each room's offset counter (room name -> last offset).
const offsets = new Map();

const httpServer = createServer((req, res) => {
  res.writeHead(404, { "Content-Type": "application/json" });
  res.end("{}");
});

const io = new Server(httpServer, {
  // WebSocket only: the load generator connects straight to
  // /socket.io/?EIO=4&transport=websocket, as a browser client with transports: ["websocket"].
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
});

io.on("connection", (socket) => {
  socket.on("subscribe", (channel, ack) => {
    if (typeof ack !== "function") return;
    if (typeof channel !== "string" || channel === "") {
      ack({ error: { code: "invalid_channel", message: "a channel is required" } });
      return;
    }
    socket.join(channel);
    ack({ channel, offset: offsets.get(channel) ?? 0, epoch });
  });

  socket.on("publish", (request, ack) => {
    if (typeof ack !== "function") return;
    const channel = request?.channel;
    if (typeof channel !== "string" || channel === "" || request.data === undefined) {
      ack({ error: { code: "bad_request", message: "publish: channel and data are required" } });
      return;
    }
    const event = typeof request.event === "string" && request.event !== "" ? request.event : DEFAULT_EVENT;
    const offset = (offsets.get(channel) ?? 0) + 1;
    offsets.set(channel, offset);
    const id = `${epoch}-${nextMessage++}`;
    io.to(channel).emit(event, {
      id,
      channel,
      event,
      data: request.data,
      offset,
      epoch,
      timestamp: new Date().toISOString(),
    });
    ack({ id, offset, epoch });
  });
});

httpServer.listen(Number(args.port), args.host, () => {
  process.stdout.write(`listening on ${httpServer.address().port}\n`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
