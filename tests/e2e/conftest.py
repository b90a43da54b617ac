"""One running demo site for the end-to-end tests: built once per session, always stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from edgesec.deploy.demo import DemoSite
from tests.conftest import require_tool

TOOLS = ("nginx", "caddy", "syslog-ng", "curl")


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    require_tool(*TOOLS)
    site = DemoSite(tmp_path_factory.mktemp("demo-site"))
    site.build()
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.fixture
def site(demo_site: DemoSite) -> DemoSite:
    """The running site, with both replicas up (a failure drill may have killed one)."""
    for name in ("authz-a", "authz-b"):
        proc = demo_site.procs.get(name)
        if proc is None or proc.poll() is not None:
            demo_site.start_replica(name)
    return demo_site


def trail_records(site: DemoSite) -> list[dict[str, Any]]:
    text = (site.trail / "trail.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def archive_lines(site: DemoSite) -> list[str]:
    """What syslog-ng delivered to the archive from the trail, in the order it wrote it."""
    out: list[str] = []
    for f in sorted(site.archive.glob("*/*/*/audit.log")):
        out += [ln for ln in f.read_text().splitlines() if ln.strip()]
    return out
