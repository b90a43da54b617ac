"""The HTML report of the demo site in a real browser, with every network request caught on loopback."""

from __future__ import annotations

import socket
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgesec.deploy.demo import DemoSite

pytestmark = pytest.mark.real("nginx", "caddy", "syslog-ng", "curl")


class _Sink:
    """A loopback 'proxy' that counts every connection the browser tries to make anywhere."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.seen.append(conn.recv(4096)[:200])
                except OSError:
                    self.seen.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.sock.close()


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href", "action", "poster", "data") and v and ("//" in v.split("#", 1)[0]):
                self.external.append(f"<{tag} {k}={v}>")


# Chromium's own background services (update, sign-in, network time), which no flag fully silences in
# headless Debian builds. They only ever reach the loopback sink. A page's requests are anything else.
BROWSER_SERVICE_HOSTS = frozenset(
    {
        "update.googleapis.com",
        "accounts.google.com",
        "clients2.google.com",
        "optimizationguide-pa.googleapis.com",
    }
)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--no-default-browser-check", "--no-pings", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--disable-breakpad", "--metrics-recording-only",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,SafeBrowsing",
    "--virtual-time-budget=3000",
)  # fmt: skip


def _hosts(requests: list[bytes]) -> set[str]:
    out = set()
    for r in requests:
        parts = r.split(b" ")
        if len(parts) > 1:
            target = parts[1].decode(errors="replace")
            out.add(target.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0])
    return out


def _render(url: str, profile: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Dump the DOM of ``url`` with every network request routed into a loopback sink."""
    sink = _Sink()
    try:
        cp = subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--proxy-server=http://127.0.0.1:{sink.port}", "--proxy-bypass-list=<-loopback>", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        sink.close()
    return cp, _hosts(sink.seen)


@pytest.mark.real("chromium")
def test_html_report_renders_in_headless_chromium_without_external_requests(
    site: DemoSite, tmp_path: Path
) -> None:
    site.audit()
    report = site.html_report()
    refs = _Refs()
    refs.feed(report.read_text())
    assert refs.external == []
    cp, hosts = _render(report.as_uri(), tmp_path / "profile")
    assert cp.returncode == 0, cp.stderr[-2000:]
    for check_id in ("authz.proxy", "authz.policy", "auditing.trail", "models.signature", "host.time-sync"):
        assert check_id in cp.stdout, check_id
    assert hosts <= BROWSER_SERVICE_HOSTS, f"the report asked the network for {hosts - BROWSER_SERVICE_HOSTS}"
    # The control: a page that does load a remote image is caught by the same sink.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://report-assets.invalid/logo.png"></body></html>')
    _, control_hosts = _render(control.as_uri(), tmp_path / "profile2")
    assert "report-assets.invalid" in control_hosts
