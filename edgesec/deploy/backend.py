"""A tiny stand-in for a Dify-style LLM app behind the proxies (``python -m edgesec.deploy.backend PORT``).

It answers every path with a JSON echo of what reached it -- method, path and the identity headers the
proxy set from ForwardAuth's answer -- so the demo and its tests can see who the app believes it is
talking to. It listens on loopback only and keeps no state.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDENTITY = ("X-User-ID", "X-Roles", "X-Tenant", "X-Auth-Method")


class EchoHandler(BaseHTTPRequestHandler):
    """Echo the request as the app sees it."""

    server_version = "demo-app"
    sys_version = ""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        body = {
            "app": "demo-dify",
            "method": self.command,
            "path": self.path,
            "identity": {h: self.headers.get_all(h) or [] for h in IDENTITY},
            "client_cert_header": self.headers.get("X-Forwarded-Tls-Client-Cert"),
        }
        if self.path.startswith("/v1/chat-messages") and self.command == "POST":
            body["answer"] = "Hello from the on-site assistant."
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str]) -> int:
    port = int(argv[0])
    server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
