"""While the audit trail cannot be written the service fails closed: allows are denied, /readyz is 503."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.trail import TrailWriteFailed
from edgesec.authz.service import readiness
from tests.auditing.test_trail_durability import grow, tiny_fs
from tests.authz.conftest import fwd


def test_full_trail_denies_allows_and_turns_not_ready(make_authorizer, site_ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    allow = fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice"))
    with tiny_fs(tmp_path / "fs", size="16k") as fs:
        with auditing.configured(fs / "audit", durability="group", group_commit_ms=5) as trail:
            assert a.authorize(allow, "10.1.2.3")[0] == 200
            assert readiness(a)["ready"] is True
            filler = AuditEvent(action="test.fill", category=("host",), type=("info",), message="x" * 2000)
            with contextlib.suppress(TrailWriteFailed):
                for _ in range(100):
                    auditing.emit(filler)
                    trail.flush(5)
            assert trail.failing
            status, _headers = a.authorize(allow, "10.1.2.3")
            assert status == 403
            body = readiness(a)
            assert body["ready"] is False and body["audit"]["ok"] is False
            assert "No space left on device" in body["audit"]["error"]
            grow(fs)
            trail.flush(30)  # the queued events go in; the service is ready and allows again
            assert readiness(a)["ready"] is True
            assert a.authorize(allow, "10.1.2.3")[0] == 200
