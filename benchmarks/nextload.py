"""Keep-alive clients on the real Next.js app, with NO retry of any kind (issue 21).

    python benchmarks/nextload.py URL GET_CLIENTS POST_CLIENTS PAUSE MAX_SECONDS OUT_FILE ACTION_ID [CA SERVER_NAME]

GET clients load the home page (server-rendered, chunked) or, every other one, the light health
route (many more requests, so many more reused connections); POST clients submit the page's
Server Action the way the browser does with JavaScript on (`Next-Action: <id>`, the FormData
encoded as React's `encodeReply` writes it, see `bluegreen.lab.nextapp.submit`), each writing one
row. Every client keeps ONE connection open across its requests (HTTP/1.1 keep-alive, honouring
`Connection: close` and chunked bodies, which http.client does) and never retries: a request
whose connection closed before an answer is a failure, as it is for a browser's POST. Prints
`ready` once each kind has answered, runs until a line arrives on stdin (or MAX_SECONDS pass),
then writes every sample as JSON rows `[started, latency_ms, status, served_by, error, kind, attempts]`
to OUT_FILE (`attempts`: how many times the request was sent; 1, since nothing is ever sent again).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from bluegreen.hosts import health
from bluegreen.lab.loadgen import _require_loopback, _TlsConnection

BOUNDARY = "----bluegreen-bench-boundary"
HEALTH_PATH = "/api/health"


def _form_body(values: dict[str, str]) -> bytes:
    """multipart/form-data as the browser sends a Server Action: the `_1_` fields, then `0`."""
    parts = [*((f"_1_{k}", v) for k, v in values.items()), ("0", '["$K1"]')]
    out = []
    for name, value in parts:
        out.append(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    out.append(f"--{BOUNDARY}--\r\n")
    return "".join(out).encode()


class Clients:
    def __init__(self, url: str, *, gets: int, posts: int, pause: float, action_id: str,
                 ca_file: str | None, server_name: str | None) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        _require_loopback(parts.hostname)
        self.host, self.path = parts.hostname, parts.path or "/"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = health.ssl_context(ca_file) if parts.scheme == "https" else None
        self.server_name = server_name
        self.gets, self.posts, self.pause, self.action_id = gets, posts, pause, action_id
        self.samples: list[list[object]] = []
        self.answered = {"GET": 0, "POST": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=10)
        return _TlsConnection(self.host, self.port, timeout=10, context=self.tls,
                              server_name=self.server_name or self.host)

    def start(self, deadline: float) -> None:
        kinds = ["GET"] * self.gets + ["POST"] * self.posts
        for i, kind in enumerate(kinds):
            thread = threading.Thread(target=self._client, args=(kind, i, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _request(self, conn: http.client.HTTPConnection, kind: str, n: int, client: int) -> http.client.HTTPResponse:
        headers = {"Host": self.server_name} if self.server_name else {}
        if kind == "GET":
            conn.request("GET", self.path if client % 2 == 0 else HEALTH_PATH, headers=headers)
        else:
            body = _form_body({"name": f"bench {client}-{n}", "post": f"cutover-{uuid.uuid4().hex[:8]}"})
            conn.request("POST", self.path, body=body, headers={
                **headers, "Next-Action": self.action_id, "Accept": "text/x-component",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        return conn.getresponse()

    def _client(self, kind: str, client: int, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            started = time.monotonic()
            status: int | None = None
            served = error = None
            current = conn or self._connection()
            conn = current
            attempts = 1  # one send per request, whatever happens to it
            try:
                response = self._request(current, kind, n, client)
                response.read()
                status, served = response.status, response.getheader("X-Served-By")
                if response.will_close:
                    current.close()
                    conn = None
                if not 200 <= status < 400:
                    error = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__  # no retry: the request failed
                current.close()
                conn = None
            with self._lock:
                self.samples.append([started, (time.monotonic() - started) * 1000, status, served, error, kind,
                                     attempts])
                if error is None:
                    self.answered[kind] += 1
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()


def main(argv: list[str]) -> int:
    if len(argv) not in (7, 9):
        sys.stderr.write(__doc__ or "")
        return 2
    url, gets, posts, pause, max_seconds, out, action_id = argv[:7]
    ca_file, server_name = [*argv[7:], "", ""][:2]
    clients = Clients(url, gets=int(gets), posts=int(posts), pause=float(pause), action_id=action_id,
                      ca_file=ca_file or None, server_name=server_name or None)
    clients.start(time.monotonic() + float(max_seconds))
    try:
        wait_until = time.monotonic() + 60
        while time.monotonic() < wait_until and not all(
                clients.answered[k] > 0 for k, n in (("GET", int(gets)), ("POST", int(posts))) if n):
            time.sleep(0.05)
        print("ready", flush=True)
        sys.stdin.readline()
    finally:
        clients.stop()
    rows = sorted(clients.samples, key=lambda r: float(r[0]))  # type: ignore[arg-type]
    Path(out).write_text(json.dumps(rows))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
