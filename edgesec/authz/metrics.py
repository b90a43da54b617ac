"""The service's Prometheus metrics, correct across ``--workers N``: one shared block, summed on scrape.

``edgesec authz serve --workers N`` forks N workers that share the listening socket, so a scrape of
``/metrics`` lands on whichever worker accepts it. Each worker's own counters would make the series jump
between workers (18 -> 29 -> 18, which Prometheus reads as counter resets). Instead every counter lives in
an anonymous shared memory block made before the fork, one slot of values per worker: a worker only ever
adds to its own slot (under a per-process lock, so its threads cannot lose or undo an increment), and a
scrape sums every slot. A worker that dies is replaced in the same slot and goes on counting from there;
nothing ever subtracts, so no series goes backwards between scrapes, whichever worker answers.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["MAX_WORKERS", "SharedMetrics", "set_worker_slot", "worker_slot"]

MAX_WORKERS = 64
OUTCOMES = ("allow", "unauthenticated", "deny")
RELOAD_KINDS = ("policy", "trust", "jwt", "other")
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_slot = 0


def set_worker_slot(slot: int) -> None:
    """Called in a forked worker (by the supervisor) before it serves: which slot it adds to."""
    global _slot
    if not 0 <= slot < MAX_WORKERS:
        raise ValueError(f"worker slot {slot} outside 0..{MAX_WORKERS - 1}")
    _slot = slot


def worker_slot() -> int:
    return _slot


class SharedMetrics:
    """Decisions by outcome, decision latency (a histogram), reloads by kind and result, and the engine's
    cache counters, for up to :data:`MAX_WORKERS` processes."""

    def __init__(self) -> None:
        self._idx: dict[str, int] = {}
        names = [f"decisions:{o}" for o in OUTCOMES]
        names += [f"latency_bucket:{i}" for i in range(len(BUCKETS) + 1)]  # the last is +Inf
        names += ["latency_sum"]
        names += [f"reloads:{k}:{r}" for k in RELOAD_KINDS for r in ("ok", "error")]
        names += ["cache_hits", "cache_misses"]
        self._idx = {n: i for i, n in enumerate(names)}
        self._width = len(names)
        self._map = mmap.mmap(-1, 8 * self._width * MAX_WORKERS, flags=mmap.MAP_SHARED)
        self._v = memoryview(self._map).cast("d")
        self._lock = threading.Lock()
        self._outcome_at = {200: self._idx["decisions:allow"], 401: self._idx["decisions:unauthenticated"]}
        self._deny_at = self._idx["decisions:deny"]
        self._bucket0 = self._idx["latency_bucket:0"]
        self._sum_at = self._idx["latency_sum"]
        # The engine's own counters restart with each reloaded engine; what is published is a running total.
        self._engine: Any = None
        self._engine_base = (0.0, 0.0)
        self._engine_last = (0.0, 0.0)

    def _base(self) -> int:
        return _slot * self._width

    def observe(self, status: int, seconds: float) -> None:
        """One decision: its outcome (200 allow, 401 unauthenticated, anything else deny) and latency."""
        base = _slot * self._width
        v = self._v
        bucket = self._bucket0 + bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            v[base + self._outcome_at.get(status, self._deny_at)] += 1.0
            v[base + bucket] += 1.0
            v[base + self._sum_at] += seconds

    def reload(self, kind: str, ok: bool) -> None:
        k = kind if kind in RELOAD_KINDS else "other"
        at = self._base() + self._idx[f"reloads:{k}:{'ok' if ok else 'error'}"]
        with self._lock:
            self._v[at] += 1.0

    def publish_engine(self, engine: Any, hits: float, misses: float) -> None:
        """Record the current engine's cache counters (a new engine's restart from 0 adds to the total)."""
        with self._lock:
            if engine is not self._engine:
                if self._engine is not None:
                    self._engine_base = (
                        self._engine_base[0] + self._engine_last[0],
                        self._engine_base[1] + self._engine_last[1],
                    )
                self._engine = engine
                self._engine_last = (0.0, 0.0)
            last = self._engine_last
            self._engine_last = (max(hits, last[0]), max(misses, last[1]))
            base = self._base()
            v = self._v
            v[base + self._idx["cache_hits"]] = max(
                v[base + self._idx["cache_hits"]], self._engine_base[0] + self._engine_last[0]
            )
            v[base + self._idx["cache_misses"]] = max(
                v[base + self._idx["cache_misses"]], self._engine_base[1] + self._engine_last[1]
            )

    def totals(self) -> dict[str, float]:
        """Every series summed over the workers' slots."""
        v, w = self._v, self._width
        return {n: sum(v[s * w + i] for s in range(MAX_WORKERS)) for n, i in self._idx.items()}

    def collector(self, extra: Callable[[], Iterator[Any]] | None = None) -> Any:
        """A prometheus_client collector of the summed series (``extra`` adds per-process gauges)."""
        return _Collector(self, extra)


class _Collector:
    def __init__(self, shared: SharedMetrics, extra: Callable[[], Iterator[Any]] | None) -> None:
        self._shared = shared
        self._extra = extra

    def describe(self) -> Sequence[Any]:
        return []  # no auto-describe: a collector that would read the block at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        t = self._shared.totals()
        dec = CounterMetricFamily(
            "edgesec_authz_decisions", "ForwardAuth decisions by outcome (all workers)", labels=["outcome"]
        )
        for o in OUTCOMES:
            dec.add_metric([o], t[f"decisions:{o}"])
        yield dec
        cumulative, buckets = 0.0, []
        for i, le in enumerate((*BUCKETS, float("inf"))):
            cumulative += t[f"latency_bucket:{i}"]
            buckets.append(("+Inf" if le == float("inf") else repr(le), cumulative))
        yield HistogramMetricFamily(
            "edgesec_authz_decision_seconds",
            "Time to decide one /auth call (all workers)",
            buckets=buckets,
            sum_value=t["latency_sum"],
        )
        rel = CounterMetricFamily(
            "edgesec_authz_reloads",
            "Policy and trust bundle reloads (all workers)",
            labels=["kind", "result"],
        )
        for k in RELOAD_KINDS:
            for r in ("ok", "error"):
                if t[f"reloads:{k}:{r}"] or k != "other":
                    rel.add_metric([k, r], t[f"reloads:{k}:{r}"])
        yield rel
        for name, help_text in (
            ("cache_hits", "Decision cache hits (all workers, all loaded engines)"),
            ("cache_misses", "Decision cache misses (all workers, all loaded engines)"),
        ):
            yield CounterMetricFamily(f"edgesec_authz_engine_{name}", help_text, value=t[name])
        if self._extra is not None:
            yield from self._extra()
