"""Signed checkpoints: sent off the host as RFC 5424, and truncation after a checkpoint is caught."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import pytest

from edgesec import auditing
from edgesec.auditing.checkpoint import load_signer, make_checkpoint, parse_checkpoint, verify_checkpoint
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.syslog import BOM, format_rfc5424
from edgesec.errors import InputError, VerificationError
from tests._net import free_port

from .sitepki import SitePki

RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) (?P<host>\S+) edgesec (?P<proc>\S+) (?P<msgid>\S+) "
    rb"(?P<sd>-|\[edgesec@32473(?: [a-z]+=\"(?:[^\"\\\]]|\\.)*\")+\]) (?P<msg>.*)$",
    re.S,
)


class SyslogCatcher:
    """A loopback TCP receiver that reads octet-counted RFC 5424 messages (RFC 6587 3.4.1)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = b""
            with conn:
                while chunk := conn.recv(65536):
                    buf += chunk
                while buf:
                    n, _, rest = buf.partition(b" ")
                    size = int(n)
                    self.messages.append(rest[:size])
                    buf = rest[size:]

    def close(self) -> None:
        self.sock.close()


def fill(trail: Path, n: int) -> None:
    with auditing.configured(trail, durability="fsync"):
        for i in range(n):
            auditing.emit(
                AuditEvent(
                    action="test.cp",
                    category=("host",),
                    type=("info",),
                    part="test",
                    fields={"edgesec.test.i": i},
                )
            )


def config(tmp_path: Path, pki: SitePki, trail: Path, port: int) -> Path:
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[auditing]\ntrail_dir = "{trail}"\nsyslog = "tcp"\nsyslog_port = {port}\n'
        f'checkpoint_cert = "{pki.signing.cert}"\ncheckpoint_key = "{pki.signing.key}"\n'
        f'[pki]\ntrust_bundle_dir = "{pki.trust}"\n'
    )
    return cfg


def test_checkpoint_sent_and_truncation_caught(cli, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trail = tmp_path / "trail"
    fill(trail, 40)
    catcher = SyslogCatcher()
    cfg = config(tmp_path, pki, trail, catcher.port)
    try:
        code, out, err = cli("--config", str(cfg), "--json", "auditlog", "checkpoint")
        assert code == 0, err
        res = json.loads(out)["result"]
        assert res["seq"] == 40 and res["sent"] is True
        deadline = 50
        while not catcher.messages and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
    finally:
        catcher.close()
    msg = catcher.messages[0]
    m = RFC5424.match(msg)
    assert m, msg[:200]
    assert int(m["pri"]) == 13 * 8 + 6 and m["msgid"] == b"checkpoint"
    assert b'seq="40"' in m["sd"]
    assert m["msg"].startswith(BOM)
    # The copy that left the host is what an auditor verifies against.
    offsite = tmp_path / "offsite.json"
    offsite.write_bytes(m["msg"][len(BOM) :])
    cp = parse_checkpoint(offsite.read_bytes(), "offsite")
    assert cp.seq == 40 and cp.doc["site"] == "edge-site"

    args = (
        "--config",
        str(cfg),
        "auditlog",
        "verify",
        "--checkpoint",
        str(offsite),
        "--no-local-checkpoints",
    )
    code, out, err = cli(*args)
    assert code == 0, err
    assert "1 checkpoint(s) covered" in out
    # Truncate the last three records (the checkpoint's own event is record 41): the shorter chain is
    # valid, the checkpoint is not covered.
    cur = trail / "trail.jsonl"
    lines = cur.read_bytes().splitlines(keepends=True)
    cur.write_bytes(b"".join(lines[:-3]))
    code, out, err = cli("--json", *args)
    assert code == 1
    doc = json.loads(out)
    assert doc["error"]["details"]["problem"] == "truncated" and doc["error"]["details"]["seq"] == 40
    assert "trail ends at record 38" in doc["error"]["message"]
    # The local copy (checkpoints/) catches it too.
    code, _, err = cli("--config", str(cfg), "auditlog", "verify")
    assert code == 1 and "truncated" in err


def test_altered_or_foreign_checkpoints_refused(pki: SitePki, tmp_path: Path) -> None:
    from edgesec.pki.trust import TrustBundle, refuse_unless_accepted

    site = TrustBundle.load(pki.trust)
    cert, key = load_signer(pki.signing.cert, pki.signing.key)
    cp = make_checkpoint(7, "ab" * 32, cert, key)
    verify_checkpoint(cp, site)
    forged = dict(cp.doc, seq=6)
    with pytest.raises(VerificationError, match="signature is invalid"):
        verify_checkpoint(parse_checkpoint(json.dumps(forged).encode(), "x"), site)
    rcert, rkey = load_signer(pki.other_signing.cert, pki.other_signing.key)
    with pytest.raises(VerificationError):
        verify_checkpoint(make_checkpoint(7, "ab" * 32, rcert, rkey), site)
    # A client certificate loads (its key matches) but is refused before it signs anything.
    ccert, _ = load_signer(pki.client.cert, pki.client.key)
    with pytest.raises(InputError, match=r"refusing to sign.*wrong purpose"):
        refuse_unless_accepted(ccert, site)
    with pytest.raises(InputError, match=r"refusing to sign.*untrusted"):
        refuse_unless_accepted(rcert, site)
    with pytest.raises(InputError, match="does not belong"):
        load_signer(pki.signing.cert, pki.client.key)
    with pytest.raises(InputError, match="not a checkpoint"):
        parse_checkpoint(b"{nope", "garbage")


def test_checkpoint_without_signer_is_a_usage_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fill(tmp_path / "t", 2)
    code, _, err = cli("auditlog", "checkpoint", "--trail", str(tmp_path / "t"))
    assert code == 2 and "no signing certificate" in err


def test_rfc5424_escaping() -> None:
    msg = format_rfc5424("body", msgid="audit", params={"action": 'a"b]c\\d'}, hostname="h o\tst", procid=12)
    assert b'action="a\\"b\\]c\\\\d"' in msg
    assert b" hoost " not in msg and b" host " in msg  # spaces and controls removed from HOSTNAME
    assert RFC5424.match(msg)


def test_checkpoint_by_signer_name_from_the_site_ca(cli, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trail = tmp_path / "trail"
    fill(trail, 5)
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[auditing]\ntrail_dir = "{trail}"\n[pki]\nstore_dir = "{pki.store}"\ntrust_bundle_dir = "{pki.trust}"\n'
    )
    code, out, err = cli(
        "--config", str(cfg), "--json", "auditlog", "checkpoint", "--signer", "trail-signer", "--no-send"
    )
    assert code == 0, err
    assert json.loads(out)["result"]["seq"] == 5
    code, out, err = cli("--config", str(cfg), "auditlog", "verify")
    assert code == 0 and "1 checkpoint(s) covered" in out, err
    # The signer's name can come from the config, as the scheduled job runs it.
    cfg2 = tmp_path / "edgesec2.toml"
    cfg2.write_text(cfg.read_text().replace("[pki]", 'checkpoint_signer = "trail-signer"\n[pki]'))
    code, out, err = cli("--config", str(cfg2), "--json", "auditlog", "checkpoint", "--no-send")
    assert code == 0 and json.loads(out)["result"]["seq"] == 6, err
    # Each checkpoint is also a trail record carrying the signed document (it ships with the trail).
    last = json.loads((trail / "trail.jsonl").read_bytes().splitlines()[-1])
    assert last["event"]["action"] == "trail.checkpoint"
    carried = parse_checkpoint(last["edgesec"]["checkpoint"]["signed"].encode(), "trail")
    assert carried.seq == 6 and verify_checkpoint(carried, None)
    code, _, err = cli(
        "--config", str(cfg), "auditlog", "checkpoint", "--signer", "syslog-ng-client", "--no-send"
    )
    assert code == 2 and "refusing to sign" in err and "wrong purpose" in err
    code, _, err = cli("--config", str(cfg), "auditlog", "checkpoint", "--signer", "nobody", "--no-send")
    assert code == 2 and "nobody" in err
    # A checkpoint signed by a CA the site does not trust is refused by verify.
    from edgesec.auditing.checkpoint import load_signer, make_checkpoint, store_checkpoint

    rc, rk = load_signer(pki.other_signing.cert, pki.other_signing.key)
    store_checkpoint(trail, make_checkpoint(5, "00" * 32, rc, rk))
    code, _, err = cli("--config", str(cfg), "auditlog", "verify")
    assert code == 1 and "checkpoint" in err


def test_checkpoint_not_sent_is_a_failure_but_kept(cli, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trail = tmp_path / "trail"
    fill(trail, 3)
    port = free_port()  # nobody listens there
    cfg = config(tmp_path, pki, trail, port)
    code, _, err = cli("--config", str(cfg), "auditlog", "checkpoint")
    assert code == 1 and "kept in" in err and "not sent off the host" in err
    assert len(list((trail / "checkpoints").glob("*.json"))) == 1


def test_a_superseded_checkpoint_signer_is_proven_by_a_later_checkpoint(
    cli, home: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The time rule for checkpoints: once its signer is revoked as superseded, a checkpoint still counts
    when a later checkpoint (by a signer valid now) covers the record of its signing; not when the
    first signer's key was compromised (the reasons: ``tests/pki/test_corpus.py``)."""
    import datetime as dt

    from edgesec.pki.api import CertificateAuthority

    trail = tmp_path / "trail"
    fill(trail, 3)
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[auditing]\ntrail_dir = "{trail}"\n')
    c = ("--config", str(cfg))
    assert cli(*c, "pki", "init", "--no-encrypt")[0] == 0
    for name in ("first-signer", "second-signer"):
        assert cli(*c, "pki", "issue", "signing", name)[0] == 0
    assert cli(*c, "auditlog", "checkpoint", "--signer", "first-signer", "--no-send")[0] == 0
    assert cli(*c, "auditlog", "checkpoint", "--signer", "second-signer", "--no-send")[0] == 0
    code, out, err = cli(*c, "auditlog", "verify")
    assert code == 0 and "2 checkpoint(s) covered" in out, err

    def revoke(reason: str) -> None:
        # A CRL dates revocations to the second; a minute on, this one is clearly after both checkpoints.
        ca = CertificateAuthority.open(home)
        ca.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        try:
            ca.revoke("first-signer", reason)
        finally:
            ca.close()

    revoke("superseded")
    code, out, err = cli(*c, "auditlog", "verify")
    assert code == 0 and "2 checkpoint(s) covered" in out, err
    # Without the later checkpoint nothing proves when the first was signed.
    second = sorted((trail / "checkpoints").glob("*.json"))[-1]
    kept = second.read_bytes()
    second.unlink()
    code, _, err = cli(*c, "auditlog", "verify")
    assert code == 1 and "revoked" in err and "not proven" in err
    second.write_bytes(kept)
    assert cli(*c, "auditlog", "verify")[0] == 0


def test_checkpoint_event_goes_into_the_trail_given(cli, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`checkpoint --trail DIR` records its event in DIR, the trail it signed, not the configured one."""
    configured, other = tmp_path / "configured", tmp_path / "other"
    fill(configured, 3)
    fill(other, 7)
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[auditing]\ntrail_dir = "{configured}"\n[pki]\nstore_dir = "{pki.store}"\ntrust_bundle_dir = "{pki.trust}"\n'
    )
    before = (configured / "trail.jsonl").read_bytes()
    code, out, err = cli(
        "--config", str(cfg), "--json", "auditlog", "checkpoint", "--signer", "trail-signer", "--no-send",
        "--trail", str(other),
    )  # fmt: skip
    assert code == 0 and json.loads(out)["result"]["seq"] == 7, err
    assert (configured / "trail.jsonl").read_bytes() == before
    last = json.loads((other / "trail.jsonl").read_bytes().splitlines()[-1])
    assert last["event"]["action"] == "trail.checkpoint" and last["event"]["sequence"] == 8
    assert last["edgesec"]["checkpoint"]["seq"] == 7
    code, out, err = cli("--config", str(cfg), "auditlog", "verify", "--trail", str(other))
    assert code == 0 and "1 checkpoint(s) covered" in out, err
