// Runs a seed's front-end code from tests/compat/ (as written, see each file's header) against a
// real node, with the real @microsoft/signalr client, for the Rust test suite
// (tests/api/compat_seeds.rs). The code runs as a classic script in this process's global scope;
// this driver provides what its page or framework would have: the `signalR` global, toastr,
// location, a browser-like `window`, and tiny stand-ins for Pinia/Vue (seed 003) and React with
// the seed's SignalR context (seed 001). What the code does with them is reported.
//
// Commands (JSON lines on stdin):
//   {"cmd":"load","file":…,"hubUrl":…,"token":…,"userId":…}  runs the file ("files": several, in
//                                     order; "baseUrl": seed 001's VITE_API_BASE_URL)
//   {"cmd":"react"}                   the real React 18 for what is loaded next (seed 001's context
//                                     and components): its hooks, createContext and useContext as
//                                     globals, useAppContext with the token as the JWT
//   {"cmd":"render","id":…,"provider":"SignalRProvider","components":[…]}  renders the components
//                                     inside the provider with react-test-renderer
//   {"cmd":"handlers","id":…}         the event names seed 001's signalRService has handlers for
//                                     (the client's own map, lower-cased), to know its effects ran
//   {"cmd":"store","name":"useSignalRStore"}                  makes the Pinia store (seed 003)
//   {"cmd":"call","id":…,"fn":…,"args":[…]}                   awaits store[fn](...args)
//   {"cmd":"listen","event":…}        one more handler on the store's connection (for events the
//                                     store itself does not handle), reported as "event"
//   {"cmd":"mount","id":…,"component":"Orders"}  opens the seed 001 context's connection, then
//                                     renders the component once (its useEffect subscribes)
//   {"cmd":"state","id":…}           what the code holds now
// Reports: loaded, result, state, toast, reload, console, event, mounted, rendered, error.
import * as signalR from "@microsoft/signalr";
import fs from "node:fs";
import readline from "node:readline";
import vm from "node:vm";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
// A value as JSON can carry it (Sets and Maps become arrays and objects).
const plain = (v) =>
  JSON.parse(
    JSON.stringify(v ?? null, (_, x) =>
      x instanceof Set ? [...x] : x instanceof Map ? Object.fromEntries([...x].map(([k, s]) => [k, s])) : x,
    ),
  );
const text = (args) => args.map((a) => (typeof a === "string" ? a : String(a))).join(" ");

// The page's globals.
globalThis.signalR = signalR;
const toaster = (kind) =>
  Object.fromEntries(
    ["success", "error", "info", "warning"].map((level) => [
      level,
      (message, options) => out({ type: "toast", kind, level, text: message, options: plain(options) }),
    ]),
  );
globalThis.toastr = toaster("toastr");
globalThis.toast = toaster("toast");
globalThis.location = { reload: () => out({ type: "reload" }) };
globalThis.window = { location: { pathname: "/" }, toast: toaster("window.toast") };
globalThis.playNotificationSound = () => out({ type: "sound" });
const stored = new Map();
globalThis.localStorage = {
  getItem: (k) => stored.get(k) ?? null,
  setItem: (k, v) => stored.set(k, String(v)),
  removeItem: (k) => stored.delete(k),
};
const logTo = (level) => (...args) => out({ type: "console", level, text: text(args), args: plain(args) });
console.log = logTo("log");
console.error = logTo("error");
console.warn = logTo("warn");
console.info = logTo("info");
console.debug = logTo("debug");

// Pinia and Vue, as far as a setup store uses them.
globalThis.defineStore = (_name, setup) => setup;
globalThis.ref = (value) => ({ value });
globalThis.computed = (get) => ({ get value() { return get(); } });
let auth = { isAuthenticated: true, token: "", user: { id: "" } };
globalThis.useAuthStore = () => auth;

// React, as far as one render of a component with effects uses it, and the seed's SignalR
// context (section 7.2: `on`, `off`, `isConnected` over one HubConnection).
const componentState = [];
let context = null;
globalThis.useSignalR = () => context;
globalThis.useState = (initial) => {
  const slot = { value: initial };
  componentState.push(slot);
  return [slot.value, (next) => { slot.value = typeof next === "function" ? next(slot.value) : next; }];
};
globalThis.useEffect = (effect) => { effect(); };

let store = null;

async function handle(c) {
  switch (c.cmd) {
    case "load": {
      globalThis.HUB_URL = c.hubUrl;
      globalThis.VITE_API_BASE_URL = c.baseUrl;
      globalThis.ACCESS_TOKEN = c.token;
      auth = { isAuthenticated: true, token: c.token, user: { id: c.userId ?? "" } };
      for (const file of c.files ?? [c.file]) {
        vm.runInThisContext(fs.readFileSync(file, "utf8"), { filename: file });
      }
      return out({ type: "loaded" });
    }
    case "react": {
      const React = (await import("react")).default;
      Object.assign(globalThis, {
        React,
        createContext: React.createContext,
        useContext: React.useContext,
        useEffect: React.useEffect,
        useState: React.useState,
        useAppContext: () => ({ jwt: globalThis.ACCESS_TOKEN }),
      });
      return out({ type: "loaded" });
    }
    case "render": {
      const React = globalThis.React;
      const TestRenderer = (await import("react-test-renderer")).default;
      const children = c.components.map((name) => React.createElement(vm.runInThisContext(name), { key: name }));
      TestRenderer.create(React.createElement(vm.runInThisContext(c.provider), null, ...children));
      return out({ type: "rendered", id: c.id });
    }
    case "store": {
      store = vm.runInThisContext(c.name)();
      return out({ type: "loaded" });
    }
    case "call": {
      const value = await store[c.fn](...(c.args ?? []));
      return out({ type: "result", id: c.id, value: plain(value) });
    }
    case "listen": {
      // A handler returning a value would answer a client-result invocation; events expect none.
      store.connection.value.on(c.event, (...args) => {
        out({ type: "event", name: c.event, args: plain(args) });
      });
      return out({ type: "listening", event: c.event });
    }
    case "mount": {
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(globalThis.HUB_URL, { accessTokenFactory: () => globalThis.ACCESS_TOKEN })
        .build();
      await connection.start();
      context = {
        on: (name, handler) => connection.on(name, handler),
        off: (name, handler) => connection.off(name, handler),
        isConnected: true,
      };
      vm.runInThisContext(c.component)();
      return out({ type: "mounted", id: c.id });
    }
    case "handlers": {
      // A top-level const of a classic script is a global binding, not a property of globalThis.
      const service = vm.runInThisContext("typeof signalRService === 'undefined' ? null : signalRService");
      const methods = service?.connection?._methods ?? {};
      return out({ type: "handlers", id: c.id, value: Object.keys(methods) });
    }
    case "state": {
      const value = store
        ? {
            isConnected: store.isConnected.value,
            connectionError: store.connectionError.value,
            messages: plain(store.messages.value),
            notifications: plain(store.notifications.value),
            onlineUsers: plain(store.onlineUsers.value),
            typingUsers: plain(store.typingUsers.value),
          }
        : { component: plain(componentState.map((s) => s.value)) };
      return out({ type: "state", id: c.id, value });
    }
    default:
      return out({ type: "error", error: `unknown command ${c.cmd}` });
  }
}

// Commands run one after another, in order.
let chain = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  const c = JSON.parse(line);
  chain = chain.then(() => handle(c)).catch((e) => out({ type: "error", error: String(e?.stack ?? e) }));
});
process.stdin.on("end", () => chain.then(() => process.exit(0)));
