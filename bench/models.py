"""Benchmark ``edgesec model verify`` against the hardware limit and the tools a site would otherwise use.

Builds a model directory (default 4 GiB: a few large files and many small ones; on tmpfs when the disk is
short), signs it with edgesec (and with the OpenSSF ``model_signing`` CLI), warms the page cache, then times,
in this one run:

* ``edgesec model verify`` -- the whole command (interpreter start included) and the verification itself
  (the ``seconds`` the command reports: signature, chain, CRL, listing and hashing);
* ``sha256sum`` over the same files (coreutils, one process);
* ``model_signing verify certificate`` of the same directory;
* the machine's limit: bytes / (cores x the single-core ``hashlib`` SHA-256 rate measured now);
* optionally a BLAKE3 manifest (``--hash blake3``).

Every figure is a ratio against a baseline measured in the same run; nothing is asserted. Peak memory is
each child's maximum resident set size (``wait4``).

    python bench/models.py [--size-gib 4] [--repeat 3] [--dir PATH] [--no-blake3] [--json]
    python bench/models.py --engine-only   # only the hashing engine (no PKI, no CLI, no model_signing)

``--engine-only`` needs nothing but this package and the standard library: it signs-side hashes the
directory into a manifest and verifies it, in a child process, against ``sha256sum`` and the limit --
for a machine where the rest of the toolchain is not installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIB = 1 << 20


def cores() -> int:
    return len(os.sched_getaffinity(0))


def hashlib_rate(seconds: float = 1.5) -> float:
    """Single-core SHA-256 bytes/s of this interpreter's hashlib, best of a few passes over 64 MiB."""
    buf = os.urandom(64 * MIB)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        t = time.perf_counter()
        hashlib.sha256(buf).digest()
        best = max(best, len(buf) / (time.perf_counter() - t))
    return best


LAYOUTS = {"mixed": (0.50, 0.25, 0.15), "single": (0.90,)}
"""Large-file shares: ``mixed`` is a sharded checkpoint; ``single`` one big file (a GGUF), where per-file
parallelism (model_signing's) leaves all cores but one idle and per-shard parallelism does not."""


def build_model(root: Path, total: int, layout: str = "mixed") -> list[Path]:
    """A few large files (``LAYOUTS``) and the rest (~10 %) in 400 small ones (config, tokenizer, adapters)."""
    root.mkdir(parents=True)
    block = bytearray(os.urandom(16 * MIB))
    files: list[Path] = []

    def write(path: Path, size: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left, i = size, 0
            while left > 0:
                block[:8] = i.to_bytes(8, "little")  # no two blocks alike
                n = min(left, len(block))
                f.write(memoryview(block)[:n])
                left -= n
                i += 1
        files.append(path)

    shares = LAYOUTS[layout]
    for i, share in enumerate(shares):
        write(root / f"model-{i + 1:05d}-of-{len(shares):05d}.safetensors", int(total * share))
    small_total = total - sum(p.stat().st_size for p in files)
    n_small = 400
    for i in range(n_small):
        write(root / "extra" / f"part-{i:04d}.bin", small_total // n_small)
    return files


TIME = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)


LAST_CPU = [0.0]


def run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS bytes, exit code, stdout) of one child process.

    Linux copies the parent's RSS high-water mark into a forked child, so ``wait4`` on a direct child
    reports at least this (big) process's peak; GNU ``time`` forks the command from a small process and
    reports the command's own peak (``%M``). Without it, ``wait4`` is the (pessimistic) fallback.
    """
    with tempfile.NamedTemporaryFile(prefix="edgesec-bench-rss-") as rss_file:
        cmd = [TIME, "-f", "%M", "-o", rss_file.name, *argv] if TIME else argv
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert p.stdout is not None
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        rc = os.waitstatus_to_exitcode(status)
        rss = usage.ru_maxrss * 1024
        # CPU seconds of the command and everything it waited for: unlike wall time, barely moved by
        # other processes competing for the same cores.
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        if TIME:
            lines = Path(rss_file.name).read_text().split()
            rss = int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else rss
    return wall, rss, rc, out.decode(errors="replace")


def edgesec(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgesec", "--home", str(home), *args]


def must(argv: list[str], env: dict[str, str] | None = None) -> str:
    _, _, rc, out = run_child(argv, env)
    if rc != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])}... failed with exit {rc}")
    return out


def pick_base(size: int, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    tmp = Path(tempfile.gettempdir())
    if shutil.disk_usage(tmp).free > size * 1.5:
        return tmp
    return Path("/dev/shm")  # the disk is short: tmpfs (counts against RAM, not against anyone's RSS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="where to build the model (default: temp dir, tmpfs if the disk is short)")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="mixed", help="large-file layout")
    ap.add_argument("--no-blake3", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--engine-only", action="store_true", help="time the hashing engine only")
    ap.add_argument("--engine-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.engine_child:
        return _engine_child(Path(args.engine_child))
    size = int(args.size_gib * GIB)
    base = pick_base(size, args.dir)
    work = Path(tempfile.mkdtemp(prefix="edgesec-bench-models-", dir=base))
    try:
        return _engine(work, size, args) if args.engine_only else _bench(work, size, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _engine_child(model: Path) -> int:
    """Verify ``model`` against a manifest built from it: prints verify seconds (hashing dominates)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edgesec.models import manifest

    m = manifest.build(model)
    t = time.perf_counter()
    cmp = manifest.compare(m, model)
    took = time.perf_counter() - t
    assert not cmp.differences
    print(json.dumps({"verify_s": took, "bytes": cmp.bytes_hashed}))
    return 0


def _engine(work: Path, size: int, args: argparse.Namespace) -> int:
    model = work / "model"
    files = build_model(model, size, args.layout)
    total = sum(p.stat().st_size for p in files)
    for p in files:
        with open(p, "rb") as f:
            while f.read(16 * MIB):
                pass
    rate = hashlib_rate()
    n = cores()
    limit_s = total / (n * rate)
    eng, ssum = [], []
    for _ in range(args.repeat):
        _, rss, rc, out = run_child([sys.executable, __file__, "--engine-child", str(model)])
        if rc != 0:
            raise SystemExit("bench: engine child failed")
        eng.append((json.loads(out)["verify_s"], rss))
        ssum.append(run_child(["sha256sum", *map(str, files)])[0])
    v = statistics.median(e[0] for e in eng)
    fig = {
        "bytes": total,
        "cores": n,
        "hashlib_sha256_single_core_GBps": rate / 1e9,
        "limit_s": limit_s,
        "engine_verify_s": v,
        "engine_of_limit": limit_s / v,
        "engine_peak_rss_MB": max(e[1] for e in eng) / 1e6,
        "sha256sum_s": statistics.median(ssum),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(fig, indent=2))
    return 0


def _bench(work: Path, size: int, args: argparse.Namespace) -> int:
    home, model, keys = work / "home", work / "model", work / "keys"
    print(f"building {size / GIB:.1f} GiB model in {model} ...", file=sys.stderr)
    files = build_model(model, size, args.layout)
    total = sum(p.stat().st_size for p in files)
    env = {**os.environ, "EDGESEC_HOME": str(home)}
    must(edgesec(home, "pki", "init", "--org", "Bench", "--no-encrypt"), env)
    must(edgesec(home, "pki", "issue", "signing", "bench-publisher"), env)
    must(edgesec(home, "pki", "export", "bench-publisher", "--pem", str(keys)), env)
    sign_wall, sign_rss, _, _ = run_child(
        edgesec(home, "model", "sign", str(model), "--signer", "bench-publisher"), env
    )
    ms_sig = work / "model_signing.sig"
    ms_sign_wall, _, rc, _ = run_child(
        [
            "model_signing", "sign", "certificate", str(model), "--signature", str(ms_sig),
            "--private_key", str(keys / "key.pem"), "--signing_certificate", str(keys / "cert.pem"),
            "--certificate_chain", str(keys / "chain.pem"),
        ]
    )  # fmt: skip
    have_ms = rc == 0
    b3_sig = work / "blake3.sig"
    have_b3 = False
    if not args.no_blake3:
        b3 = edgesec(home, "model", "sign", str(model), "--signer", "bench-publisher", "--hash", "blake3")
        have_b3 = run_child([*b3, "--signature", str(b3_sig)], env)[2] == 0

    # Warm the page cache: every tool then reads from memory, and the limit is the CPU's.
    for p in files:
        with open(p, "rb") as f:
            while f.read(16 * MIB):
                pass

    rate = hashlib_rate()
    n = cores()
    limit_s = total / (n * rate)
    ver = edgesec(home, "--json", "model", "verify", str(model))
    runs: dict[str, list[tuple[float, int, float | None, float]]] = {
        "edgesec": [],
        "sha256sum": [],
        "model_signing": [],
        "blake3": [],
    }
    for _ in range(args.repeat):
        wall, rss, rc, out = run_child(ver, env)
        if rc != 0:
            raise SystemExit(f"bench: edgesec model verify failed (exit {rc})")
        runs["edgesec"].append((wall, rss, float(json.loads(out)["result"]["seconds"]), LAST_CPU[0]))
        wall, rss, rc, _ = run_child(["sha256sum", *map(str, files)])
        runs["sha256sum"].append((wall, rss, None, LAST_CPU[0]))
        if have_ms:
            wall, rss, rc, _ = run_child(
                ["model_signing", "verify", "certificate", str(model), "--signature", str(ms_sig),
                 "--certificate_chain", str(keys / "ca.pem")]
            )  # fmt: skip
            if rc == 0:
                runs["model_signing"].append((wall, rss, None, LAST_CPU[0]))
        if have_b3:
            wall, rss, rc, out = run_child([*ver, "--signature", str(b3_sig)], env)
            if rc == 0:
                runs["blake3"].append((wall, rss, float(json.loads(out)["result"]["seconds"]), LAST_CPU[0]))

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[name])  # type: ignore[misc]

    def peak(name: str) -> int:
        return max(r[1] for r in runs[name])

    fig: dict[str, Any] = {
        "bytes": total,
        "files": len(files),
        "cores": n,
        "hashlib_sha256_single_core_GBps": rate / 1e9,
        "limit_s": limit_s,
        "sign_s": sign_wall,
        "sign_peak_rss_MB": sign_rss / 1e6,
        "model_signing_sign_s": ms_sign_wall if have_ms else None,
        "edgesec_cli_s": med("edgesec", 0),
        "edgesec_verify_s": med("edgesec", 2),
        "edgesec_peak_rss_MB": peak("edgesec") / 1e6,
        "edgesec_cpu_s": med("edgesec", 3),
        "sha256sum_cpu_s": med("sha256sum", 3),
        "limit_cpu_s": total / rate,
        "sha256sum_s": med("sha256sum", 0),
        "sha256sum_peak_rss_MB": peak("sha256sum") / 1e6,
    }
    if runs["model_signing"]:
        fig["model_signing_s"] = med("model_signing", 0)
        fig["model_signing_peak_rss_MB"] = peak("model_signing") / 1e6
        fig["model_signing_cpu_s"] = med("model_signing", 3)
    if runs["blake3"]:
        fig["blake3_cli_s"] = med("blake3", 0)
        fig["blake3_verify_s"] = med("blake3", 2)
        fig["blake3_peak_rss_MB"] = peak("blake3") / 1e6
        fig["blake3_cpu_s"] = med("blake3", 3)
    fig["of_limit_verify"] = limit_s / fig["edgesec_verify_s"]
    fig["of_limit_cli"] = limit_s / fig["edgesec_cli_s"]
    fig["vs_sha256sum"] = fig["sha256sum_s"] / fig["edgesec_cli_s"]
    if "model_signing_s" in fig:
        fig["vs_model_signing"] = fig["model_signing_s"] / fig["edgesec_cli_s"]
        fig["vs_model_signing_cpu"] = fig["model_signing_cpu_s"] / fig["edgesec_cpu_s"]
    fig["cpu_efficiency"] = fig["limit_cpu_s"] / fig["edgesec_cpu_s"]
    fig["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(fig, indent=2))
        return 0
    gb = total / 1e9
    print(
        f"model: {total / GIB:.2f} GiB in {len(files)} files; {n} cores; load average {fig['load_average'][0]:.2f}"
    )
    print(
        f"hashlib SHA-256, one core: {rate / 1e9:.2f} GB/s  ->  limit {limit_s:.2f} s ({gb / limit_s:.2f} GB/s)"
    )
    print(f"{'':34}{'seconds':>9}{'GB/s':>8}{'of limit':>10}{'peak RSS':>11}{'CPU s':>8}")

    def row(label: str, s: float, rss: float | None, cpu: float | None = None) -> None:
        mem = f"{rss:8.0f} MB" if rss is not None else " " * 11
        cpu_text = f"{cpu:8.2f}" if cpu is not None else ""
        print(f"{label:34}{s:9.2f}{gb / s:8.2f}{limit_s / s:9.0%} {mem}{cpu_text}")

    row(
        "edgesec model verify (command)",
        fig["edgesec_cli_s"],
        fig["edgesec_peak_rss_MB"],
        fig["edgesec_cpu_s"],
    )
    row("  of which verification itself", fig["edgesec_verify_s"], None)
    row("sha256sum (coreutils)", fig["sha256sum_s"], fig["sha256sum_peak_rss_MB"], fig["sha256sum_cpu_s"])
    if "model_signing_s" in fig:
        row(
            "model_signing verify certificate",
            fig["model_signing_s"],
            fig["model_signing_peak_rss_MB"],
            fig["model_signing_cpu_s"],
        )
    if "blake3_cli_s" in fig:
        row(
            "edgesec verify, BLAKE3 manifest",
            fig["blake3_cli_s"],
            fig["blake3_peak_rss_MB"],
            fig["blake3_cpu_s"],
        )
    print(
        f"CPU seconds (robust to other load): limit {fig['limit_cpu_s']:.2f}, edgesec {fig['edgesec_cpu_s']:.2f} "
        f"({fig['cpu_efficiency']:.0%} efficient)"
        + (
            f", model_signing {fig['model_signing_cpu_s']:.2f} ({fig['vs_model_signing_cpu']:.2f}x)"
            if "vs_model_signing_cpu" in fig
            else ""
        )
    )
    print(
        f"sign: edgesec {sign_wall:.2f} s (peak {sign_rss / 1e6:.0f} MB)"
        + (f", model_signing {ms_sign_wall:.2f} s" if have_ms else "")
    )
    print(
        f"targets: >= 85% of limit: {fig['of_limit_verify']:.0%} (verification), {fig['of_limit_cli']:.0%} (command); "
        + (f">= 1.3x model_signing: {fig['vs_model_signing']:.2f}x; " if "vs_model_signing" in fig else "")
        + f"peak RSS <= 150 MB: {fig['edgesec_peak_rss_MB']:.0f} MB; vs sha256sum {fig['vs_sha256sum']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
