"""The lab's webhook receiver: records every deployment event it is sent, one JSON line each.

`python -m bluegreen.lab.receiver --listen 127.0.3.30:9095 --record events.jsonl --token-file F`
accepts `POST /events/<token>` (the token makes the URL a secret, as real webhook URLs are) and
appends `{"receivedAt", "headers", "event"}` to the record file. Anything else gets 404, a bad
token 403, a body that is not a JSON object 400. The token is never written to the record.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PREFIX = "/events/"
_MAX_BODY = 1 << 20


def read_events(record: Path) -> list[dict[str, Any]]:
    """The events recorded so far, oldest first."""
    try:
        lines = record.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line)["event"] for line in lines if line.strip()]


def make_handler(token: str, record: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "bluegreen-lab-receiver/1"

        def _answer(self, status: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if not self.path.startswith(PREFIX):
                self._answer(404, "not found")
                return
            if not hmac.compare_digest(self.path[len(PREFIX):].encode(), token.encode()):
                self._answer(403, "bad token")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= _MAX_BODY:
                self._answer(400, "expected a JSON body")
                return
            try:
                event = json.loads(self.rfile.read(length))
            except ValueError:
                event = None
            if not isinstance(event, dict):
                self._answer(400, "expected a JSON object")
                return
            entry = {"receivedAt": time.time(), "event": event,
                     "headers": {k: v for k, v in self.headers.items() if k.lower().startswith("x-bluegreen")}}
            with lock, open(record, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            self._answer(200, "recorded")

        def log_message(self, format: str, *args: Any) -> None:
            # The request line holds the secret token: log without it.
            print(f"{self.address_string()} {self.command} {PREFIX}*** {args[1] if len(args) > 1 else ''}",
                  flush=True)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.lab.receiver", description=__doc__)
    parser.add_argument("--listen", required=True, help="address:port (loopback)")
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--token-file", required=True, type=Path)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host.startswith("127."):
        parser.error("the lab receiver only listens on loopback addresses")
    token = args.token_file.read_text().strip()
    server = ThreadingHTTPServer((host, int(port)), make_handler(token, args.record))
    server.daemon_threads = True
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
