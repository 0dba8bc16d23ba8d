"""Drives one real Python `signalrcore` HubConnection for the Rust test suite
(tests/api/signalr_python.rs), speaking the same JSON lines as tests/js/signalr-driver.mjs.

Commands (stdin, one JSON object a line):
  {"cmd":"start","url":…,"token":…,"protocol":"json"|"messagepack",
   "transport":"WebSockets"|"ServerSentEvents"|"LongPolling","events":["NewOrder",…]}
  {"cmd":"on","event":"Name"}            listen for one more event name
  {"cmd":"invoke","id":"r1","method":"Ping","args":[…]}
  {"cmd":"noop","id":…}                  answered in order: proves earlier commands ran
  {"cmd":"stop"}
Reports (stdout): started, start_failed, event, result, noop, closed, stopped, log.

Run with the virtual environment scripts/test makes (target/pyenv, signalrcore pinned there).
"""

import json
import os
import sys
import threading

from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType

# How long start() may take before it is reported failed, seconds.
OPEN_TIMEOUT = 10
# How long stop() may take before the process ends anyway, seconds.
STOP_TIMEOUT = 2

_lock = threading.Lock()
connection = None
listening = set()


def out(obj):
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def listen(name):
    if name in listening or connection is None:
        return
    listening.add(name)
    connection.on(name, lambda args, name=name: out({"type": "event", "name": name, "args": args}))


def start(c):
    global connection
    token = c.get("token", "")
    transport = {
        "WebSockets": HttpTransportType.web_sockets,
        "ServerSentEvents": HttpTransportType.server_sent_events,
        "LongPolling": HttpTransportType.long_polling,
    }[c.get("transport") or "WebSockets"]
    builder = HubConnectionBuilder().with_url(
        c["url"],
        options={"access_token_factory": lambda: token, "transport": transport},
    )
    protocol = MessagePackHubProtocol() if c.get("protocol") == "messagepack" else JsonHubProtocol()
    builder = builder.with_hub_protocol(protocol)
    connection = builder.build()
    opened = threading.Event()
    connection.on_open(opened.set)
    connection.on_close(lambda: out({"type": "closed", "error": None}))
    connection.on_error(on_error)
    for name in c.get("events", []):
        listen(name)
    try:
        connection.start()
    except Exception as e:  # the client raises on a refused negotiate or connection
        return out({"type": "start_failed", "error": str(e)})
    if opened.wait(OPEN_TIMEOUT):
        out({"type": "started", "connectionId": None})
    else:
        out({"type": "start_failed", "error": "the connection did not open"})


def on_error(e):
    # signalrcore reports a completion carrying an error here, not to the invocation's callback.
    call_id = getattr(e, "invocation_id", None)
    if call_id is not None:
        out({"type": "result", "id": call_id, "ok": False, "error": str(e.error)})
    else:
        out({"type": "log", "level": 4, "message": str(getattr(e, "error", e))})


def invoke(c):
    call_id = c["id"]

    def done(completion):
        if isinstance(completion, list):
            completion = completion[0]
        if getattr(completion, "error", None):
            out({"type": "result", "id": call_id, "ok": False, "error": str(completion.error)})
        else:
            out({"type": "result", "id": call_id, "ok": True, "value": getattr(completion, "result", None)})

    try:
        # The command's id is the invocation id, so on_error can name the call.
        connection.invoke(c["method"], c.get("args", []), on_invocation=done, invocation_id=call_id)
    except Exception as e:
        out({"type": "result", "id": call_id, "ok": False, "error": str(e)})


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            c = json.loads(line)
        except ValueError:
            out({"type": "log", "level": 99, "message": f"bad command {line}"})
            continue
        cmd = c.get("cmd")
        if cmd == "start":
            start(c)
        elif cmd == "on":
            listen(c["event"])
        elif cmd == "invoke":
            invoke(c)
        elif cmd == "noop":
            out({"type": "noop", "id": c.get("id")})
        elif cmd == "stop":
            if connection is not None:
                # stop() can block for a long while in some modes (seen with MessagePack);
                # it is given a moment, then the process ends regardless.
                stopping = threading.Thread(target=connection.stop, daemon=True)
                stopping.start()
                stopping.join(STOP_TIMEOUT)
            out({"type": "stopped"})
            # The client's threads may linger; the test is done with this process.
            os._exit(0)
        else:
            out({"type": "log", "level": 99, "message": f"unknown command {cmd}"})


if __name__ == "__main__":
    main()
