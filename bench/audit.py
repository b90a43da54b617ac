"""Benchmark the full ``edgesec audit`` against ``lynis audit system --quick`` on the same machine, same run.

Times, as whole commands (interpreter start included):

* ``edgesec audit --report json --report html`` with the baseline profile and a fresh home (no model
  directories configured, so no model hashing), repeated ``--repeat`` times (median);
* the same inside a fresh network namespace (``unshare --net``), the condition lynis runs in below;
* ``lynis audit system --quick`` (Debian's lynis), once by default.

lynis looks up its latest version over DNS during an audit; so that no benchmark traffic leaves the host it
runs in a fresh network namespace with no interfaces up (``unshare --net``, root). Prints both times and the
ratio; nothing is asserted. Target: edgesec <= 3 s here.

    python bench/audit.py [--repeat 5] [--lynis-repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    cp = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, cp.returncode, cp.stdout[-2000:] + cp.stderr[-2000:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--lynis-repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgesec-bench-audit-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "EDGESEC_HOME": str(work / "home")}
    env.pop("EDGESEC_CONFIG", None)
    edgesec = [
        sys.executable,
        "-m",
        "edgesec",
        "audit",
        "--report",
        "json",
        "--report",
        "html",
        "--out",
        str(work),
    ]
    isolate = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else None

    # The floor: starting the interpreter and importing the CLI, with no audit at all.
    startup = statistics.median(
        timed([sys.executable, "-m", "edgesec", "--version"], env, work)[0] for _ in range(3)
    )
    runs, findings = [], None
    for _ in range(args.repeat):
        s, rc, _out = timed(edgesec, env, work)
        if rc not in (0, 1, 3):
            print(f"edgesec audit failed (exit {rc}): {_out}", file=sys.stderr)
            return 2
        runs.append(s)
    res = json.loads((work / "edgesec-result.json").read_text())
    findings = {
        "checks": len(res["checks"]),
        "findings": res["summary"]["findings"],
        "in_run_seconds": res["run"]["duration_s"],
    }
    netns_runs = []
    if isolate:
        for _ in range(args.repeat):
            s, rc, _out = timed(isolate + edgesec, env, work)
            netns_runs.append(s)

    lynis = shutil.which("lynis")
    lynis_runs: list[float] = []
    lynis_tests = None
    out = ""
    if lynis is None:
        print("lynis is not installed: only edgesec was timed", file=sys.stderr)
    elif isolate is None:
        print(
            "lynis needs an isolated network namespace (root + unshare) so its update check stays local",
            file=sys.stderr,
        )
    else:
        for _ in range(args.lynis_repeat):
            s, rc, out = timed(
                [
                    *isolate,
                    lynis,
                    "audit",
                    "system",
                    "--quick",
                    "--no-colors",
                    "--logfile",
                    str(work / "lynis.log"),
                    "--report-file",
                    str(work / "lynis-report.dat"),
                ],
                {**os.environ, "TERM": "dumb"},
                work,
            )
            lynis_runs.append(s)
        for line in out.splitlines():
            if "Tests performed" in line:
                lynis_tests = line.split(":")[-1].strip()

    med = statistics.median(runs)
    doc = {
        "edgesec_audit_s_median": round(med, 3),
        "edgesec_audit_s_all": [round(x, 3) for x in runs],
        "edgesec_startup_s": round(startup, 3),
        "edgesec_audit_netns_s_median": round(statistics.median(netns_runs), 3) if netns_runs else None,
        "edgesec": findings,
        "lynis_quick_s": round(statistics.median(lynis_runs), 3) if lynis_runs else None,
        "lynis_tests_performed": lynis_tests,
        "ratio_lynis_over_edgesec": round(statistics.median(lynis_runs) / med, 1) if lynis_runs else None,
        "target_edgesec_s": 3.0,
        "cores": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(
            f"edgesec audit (full baseline, json+html): median {med:.2f} s over {len(runs)} runs "
            f"({findings['checks']} checks, {findings['findings']} findings; checks ran in "
            f"{findings['in_run_seconds']:.2f} s) -- target <= 3 s: {'met' if med <= 3 else 'MISSED'}"
        )
        print(f"  of which interpreter start + CLI import (edgesec --version): {startup:.2f} s")
        if netns_runs:
            print(f"edgesec audit in a fresh netns:            median {statistics.median(netns_runs):.2f} s")
        if lynis_runs:
            print(
                f"lynis audit system --quick (fresh netns):   {statistics.median(lynis_runs):.2f} s"
                f" ({lynis_tests or '?'} tests)"
            )
            print(f"ratio lynis / edgesec: {statistics.median(lynis_runs) / med:.1f}x")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
