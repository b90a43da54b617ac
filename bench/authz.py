"""Benchmark: authz decisions with the indexed engine vs plain ``casbin.Enforcer``, measured in one run.

    python bench/authz.py              decision latency, cache hits, memory and reload time
    python bench/authz.py --quick      fewer samples (a smoke run)
    python bench/authz.py --http       also the HTTP part: wrk against /auth vs a bare ASGI app
    python bench/authz.py --json F     also write every figure to F

Decision latency is measured per call on *distinct* requests (each one new to the decision cache), at
100, 10,000 and 100,000 rules, for two policy shapes:

* ``tenants``: many tenants (branches) and roles with few rules each, the same apps in every tenant;
* ``one-role``: one tenant where one role holds 90 % of the path rules (patterns with ``:id``, ``*``,
  literal paths and unescaped dots), the shape that defeats a tenant/role index alone.

The plain enforcer scans every rule on every call, so it is sampled (a few calls at 100,000 rules).
Ratios compare medians and 99th percentiles measured in the same run. Cache hits (the same requests
again) are reported separately. Memory is the resident size of a fresh process after loading 100,000
rules; reload time is a full load of that policy (parse, check, index).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "policies" / "casbin" / "model.conf"
SIZES = (100, 10_000, 100_000)
SHAPES = ("tenants", "one-role")
METHODS = ("GET", "POST", "PUT", "DELETE")

Request = tuple[str, str, str, str]


# --------------------------------------------------------------------------- policies


def make_policy(
    shape: str, n: int, seed: int = 7
) -> tuple[list[str], Callable[[random.Random, int], Request]]:
    """``n`` policy rules of ``shape`` and a generator of distinct requests against them."""
    lines: list[str] = []
    if shape == "tenants":
        roles = ("teller", "adviser", "kb-admin", "auditor")
        per_role = 10
        tenants = max(1, n // (len(roles) * per_role))
        for t in range(tenants):
            dom = f"branch{t}"
            for r, role in enumerate(roles):
                for k in range(per_role):
                    if len(lines) >= n:
                        break
                    app = f"/app{k}"
                    kind = k % 5
                    if kind == 0:
                        lines.append(f"p, {role}, {dom}, {app}/v1/items/:id, GET, allow")
                    elif kind == 1:
                        lines.append(f"p, {role}, {dom}, {app}/files/*, (GET|POST), allow")
                    elif kind == 2:
                        lines.append(f"p, {role}, {dom}, {app}/v1/chat-messages, POST, allow")
                    elif kind == 3:
                        lines.append(f"p, {role}, {dom}, {app}/report.json, GET, allow")
                    else:
                        lines.append(
                            f"p, {role}, {dom}, {app}/admin/*, .*, deny"
                            if r != 2
                            else f"p, {role}, {dom}, {app}/admin/*, .*, allow"
                        )
            for i in range(10):
                lines.append(f"g, u{t}-{i}, {roles[i % len(roles)]}, {dom}")
            lines.append(f"g, adviser, teller, {dom}")

        def gen(rr: random.Random, i: int) -> Request:
            t = rr.randrange(tenants)
            u = rr.randrange(10)
            k = rr.randrange(11)  # app10 exists nowhere: denied
            path, method = [
                (f"/app{k}/v1/items/{i}", "GET"),
                (f"/app{k}/files/f{i}.txt", rr.choice(("GET", "POST"))),
                (f"/app{k}/v1/chat-messages", "POST"),
                (f"/app{k}/report.json", "GET"),
                (f"/app{k}/admin/{i}", "DELETE"),
            ][k % 5]
            if rr.random() < 0.1:
                method = "PUT"  # no rule allows PUT
            return f"u{t}-{u}", f"branch{t}", path, method

        return lines, gen
    if shape == "one-role":
        dom = "hq"
        big = int(n * 0.9)
        for i in range(big):
            svc = f"/svc{i // 50}"
            kind = i % 4
            if kind == 0:
                lines.append(f"p, api, {dom}, {svc}/res{i}/:id, GET, allow")
            elif kind == 1:
                lines.append(f"p, api, {dom}, {svc}/res{i}/*, (GET|PUT), allow")
            elif kind == 2:
                lines.append(f"p, api, {dom}, {svc}/v1/doc{i}.json, GET, allow")
            else:
                lines.append(f"p, api, {dom}, {svc}/res{i}/secret/*, .*, deny")
        rest = n - big
        for i in range(rest):
            role = f"ops{i % 10}"
            lines.append(f"p, {role}, {dom}, /ops/{role}/task{i}/:id, (GET|POST), allow")
        for u in range(100):
            lines.append(f"g, user{u}, {'api' if u < 80 else f'ops{u % 10}'}, {dom}")
        lines.append(f"g, ops0, api, {dom}")

        def gen(rr: random.Random, i: int) -> Request:
            u = rr.randrange(100)
            if u >= 80:
                r = u % 10
                m = r + 10 * rr.randrange(max(rest // 10, 1))
                return f"user{u}", dom, f"/ops/ops{r}/task{m}/{i}", rr.choice(("GET", "POST"))
            j = rr.randrange(max(big, 1))
            svc = f"/svc{j // 50}"
            path, method = [
                (f"{svc}/res{j}/{i}", "GET"),
                (f"{svc}/res{j}/a/{i}", rr.choice(("GET", "PUT"))),
                (f"{svc}/v1/doc{j}.json", "GET"),
                (f"{svc}/res{j}/secret/{i}", "GET"),
            ][j % 4]
            if rr.random() < 0.1:
                path = path.replace("res", "rez")  # no such resource
            return f"user{u}", dom, path, method

        return lines, gen
    raise SystemExit(f"unknown shape {shape}")


def write_policy(tmp: Path, shape: str, n: int) -> tuple[Path, Callable[[random.Random, int], Request]]:
    lines, gen = make_policy(shape, n)
    path = tmp / f"{shape}-{n}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, gen


# --------------------------------------------------------------------------- measuring


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def time_calls(fn: Callable[[str, str, str, str], object], requests: list[Request]) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    for req in requests:
        # A server has just parsed these strings when it decides; touch them so that the timing does
        # not count the cache misses of fetching a request built long ago.
        hash(req)
        t0 = clock()
        fn(*req)
        out.append((clock() - t0) / 1000.0)  # microseconds
    return out


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_us": round(percentile(samples, 50), 2),
        "p99_us": round(percentile(samples, 99), 2),
        "mean_us": round(statistics.fmean(samples), 2),
    }


def bench_decisions(tmp: Path, quick: bool) -> dict[str, object]:
    import casbin

    from edgesec.authz.engine import PolicyEngine

    results: dict[str, object] = {}
    ours_n = 3_000 if quick else 20_000
    plain_n = {100: 300 if quick else 2_000, 10_000: 20 if quick else 100, 100_000: 3 if quick else 8}
    for shape in SHAPES:
        for n in SIZES:
            policy, gen = write_policy(tmp, shape, n)
            rr = random.Random(n)
            reqs = [gen(rr, i) for i in range(ours_n)]
            # Without a cache every call is a miss (the role cache is off too): the cost of a request
            # the engine has not seen.
            cold = PolicyEngine.load(MODEL, policy, cache_size=0)
            allowed = sum(cold.decide(*r).allowed for r in reqs[:1000])
            miss = time_calls(cold.decide, reqs)
            engine = PolicyEngine.load(MODEL, policy)
            time_calls(engine.decide, reqs)
            hit = time_calls(engine.decide, reqs)  # the same requests again: all cache hits
            plain = casbin.Enforcer(str(MODEL), str(policy))
            sample = reqs[: plain_n[n]]
            base = time_calls(plain.enforce, sample)
            # Same answers on the sampled requests (the full equivalence is a hypothesis test).
            for r in sample:
                assert engine.decide(*r).allowed == plain.enforce(*r), r
            key = f"{shape}/{n}"
            results[key] = {
                "rules": engine.rule_count,
                "allowed_share": round(allowed / 1000, 2),
                "ours_miss": summary(miss),
                "ours_hit": summary(hit),
                "casbin": summary(base),
            }
            r = results[key]
            assert isinstance(r, dict)
            r["speedup_p50"] = round(r["casbin"]["p50_us"] / r["ours_miss"]["p50_us"], 1)
            r["speedup_p99"] = round(r["casbin"]["p99_us"] / r["ours_miss"]["p99_us"], 1)
            print(
                f"{key:>17}: ours p50 {r['ours_miss']['p50_us']:8.1f} us  p99 {r['ours_miss']['p99_us']:8.1f} us"
                f" | hit p50 {r['ours_hit']['p50_us']:5.2f} us p99 {r['ours_hit']['p99_us']:5.2f} us"
                f" | casbin p50 {r['casbin']['p50_us']:10.1f} us p99 {r['casbin']['p99_us']:10.1f} us (n={len(base)})"
                f" | x{r['speedup_p50']:,.0f} (p50)  x{r['speedup_p99']:,.0f} (p99)",
                flush=True,
            )
            del engine, cold, plain
            gc.collect()
    for shape in SHAPES:
        small = results[f"{shape}/100"]
        large = results[f"{shape}/100000"]
        assert isinstance(small, dict) and isinstance(large, dict)
        ratio = large["ours_miss"]["p99_us"] / small["ours_miss"]["p99_us"]
        results[f"{shape}/p99_100k_over_100"] = round(ratio, 2)
        mid = results[f"{shape}/10000"]
        assert isinstance(mid, dict)
        print(
            f"{shape:>17}: speedup at 10,000 rules x{mid['speedup_p50']:,.0f} (p50), target >= 500;"
            f" our p99 at 100,000 / at 100 = {ratio:.2f}, target <= 2"
        )
    return results


CHILD = """
import gc, json, sys, time
sys.path.insert(0, {root!r})
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
which, model, policy = sys.argv[1:4]
if which == 'ours':
    from edgesec.authz.engine import PolicyEngine as E
    load = lambda: E.load(model, policy)
else:
    import casbin
    load = lambda: casbin.Enforcer(model, policy)
gc.collect(); before = rss()
t0 = time.perf_counter(); obj = load(); first = time.perf_counter() - t0
gc.collect(); after = rss()
times = []
for _ in range(2):
    t0 = time.perf_counter(); new = load(); times.append(time.perf_counter() - t0)
    obj = new; gc.collect()
print(json.dumps({{'rss_before': before, 'rss_after': after, 'first_load_s': first, 'reload_s': min(times)}}))
"""


def bench_memory(tmp: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for shape in SHAPES:
        policy, _ = write_policy(tmp, shape, 100_000)
        for which in ("ours", "casbin"):
            proc = subprocess.run(
                [sys.executable, "-c", CHILD.format(root=str(ROOT)), which, str(MODEL), str(policy)],
                capture_output=True,
                text=True,
                check=True,
            )
            data = json.loads(proc.stdout)
            mb = (data["rss_after"] - data["rss_before"]) / 2**20
            out[f"{shape}/{which}"] = {
                "rss_total_mb": round(data["rss_after"] / 2**20, 1),
                "rss_policy_mb": round(mb, 1),
                "reload_s": round(data["reload_s"], 3),
            }
            print(
                f"{shape + '/' + which:>17}: 100,000 rules: RSS {data['rss_after'] / 2**20:6.1f} MB"
                f" ({mb:5.1f} MB for the policy), reload {data['reload_s']:.2f} s",
                flush=True,
            )
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--http", action="store_true", help="also run the wrk HTTP benchmark")
    ap.add_argument("--no-decisions", action="store_true", help="skip the decision benchmark")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results: dict[str, object] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if not args.no_decisions:
            print("== decisions (distinct requests; microseconds per call)")
            results["decisions"] = bench_decisions(tmp, args.quick)
            print("== memory and reload (fresh process, 100,000 rules)")
            results["memory"] = bench_memory(tmp)
        if args.http:
            if shutil.which("wrk") is None:
                print("wrk not found: HTTP benchmark skipped")
            else:
                results["http"] = bench_http(tmp, args.quick)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
