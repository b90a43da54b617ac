"""A loopback HTTPS endpoint that speaks enough of Elasticsearch 8 for the pipeline tests -- and checks it.

No Elasticsearch can be installed here, so this double stands in for it, and is strict where ES is:

* every request (method, path, query parameters, content type) is checked against the Elasticsearch
  REST spec in ``$EDGESEC_CONFORMANCE_DATA/elasticsearch/`` (the 8.19 JSON spec for the APIs it has,
  the 8.17 OpenAPI document for everything else, such as ``GET /``);
* every bulk action line is checked against the bulk types of the spec (one of index/create/update/
  delete, only the metadata keys the spec defines), and every document against the ECS 8.17 field
  types and allowed values in ``$EDGESEC_CONFORMANCE_DATA/ecs/``;
* a ``create`` of an existing ``_id`` answers ``409`` for that item, as Elasticsearch does;
* it requires a client certificate chained to the site CA (mutual TLS) and answers with the
  ``X-Elastic-Product: Elasticsearch`` header the official client insists on.

Anything that breaks a rule is recorded in :attr:`FakeElasticsearch.violations` (and answered ``400``);
the tests assert that list stays empty.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import yaml

from edgesec.auditing.elastic import AUDITD_EXTENSION_FIELDS
from tests._net import free_port

# Parameters every ES API accepts (the spec's "common parameters").
COMMON_PARAMS = {"pretty", "human", "error_trace", "filter_path", "source"}
KNOWN_CUSTOM_ROOTS = ("edgesec", "auditd")
# Not ECS, but declared: the user.* fields Filebeat's auditd module adds (its fields.yml), mapped as keyword
# by the generated index templates (AUDITD_EXTENSION_FIELDS).


class RestSpec:
    """Paths, methods and query parameters of the ES REST API, from the conformance data."""

    def __init__(self, es_dir: Path) -> None:
        self.routes: list[tuple[re.Pattern[str], set[str], set[str], str, set[str]]] = []
        for f in sorted((es_dir / "json_spec-8.19").glob("*.json")):
            for name, api in json.loads(f.read_text()).items():
                ctypes = set(api.get("headers", {}).get("content_type", []))
                params = set(api.get("params", {}))
                for p in api["url"]["paths"]:
                    self.routes.append((self._regex(p["path"]), set(p["methods"]), params, name, ctypes))
        oa = json.loads((es_dir / "openapi-8.17" / "elasticsearch-openapi.json").read_text())
        comps = oa.get("components", {}).get("parameters", {})
        for path, ops in oa["paths"].items():
            for method, op in ops.items():
                if method not in ("get", "put", "post", "delete", "head"):
                    continue
                params = set()
                for prm in op.get("parameters", []):
                    if "$ref" in prm:
                        prm = comps.get(prm["$ref"].rsplit("/", 1)[-1], {})
                    if prm.get("in") == "query":
                        params.add(prm["name"])
                self.routes.append(
                    (self._regex(path), {method.upper()}, params, op.get("operationId", path), set())
                )

    @staticmethod
    def _regex(path: str) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")

    def check(self, method: str, path: str, query: list[tuple[str, str]], ctype: str | None) -> str | None:
        """``None`` when the request is valid, else why not."""
        matched_path = False
        for rx, methods, params, name, ctypes in self.routes:
            if not rx.match(path):
                continue
            matched_path = True
            if method not in methods:
                continue
            bad = [k for k, _ in query if k not in params and k not in COMMON_PARAMS]
            if bad:
                return f"{method} {path}: unknown query parameter(s) {bad} for {name}"
            if ctypes and ctype is not None:
                base = ctype.split(";")[0].strip()
                norm = base.replace("application/vnd.elasticsearch+", "application/")
                if norm not in ctypes and norm != "application/json":
                    return f"{method} {path}: content type {ctype} not accepted by {name}"
            return None
        return f"{method} {path}: " + ("method not allowed" if matched_path else "no such API")


def _ts_props(text: str, start: str) -> dict[str, bool]:
    """Properties of a TypeScript class/body block in the ES spec: name -> required."""
    i = text.index(start)
    depth, j = 0, i
    while True:
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        j += 1
    block = re.sub(r"/\*\*.*?\*/", "", text[i:j], flags=re.S)
    props = {}
    for m in re.finditer(r"^\s{2,4}([A-Za-z_@][\w]*)(\??):", block, flags=re.M):
        props[m.group(1)] = m.group(2) != "?"
    return props


class BodySpec:
    """Body shapes of the PUT APIs ``push`` calls, from the spec's TypeScript request definitions."""

    FILES: ClassVar[dict[str, str]] = {
        "/_component_template/": "cluster_put_component_template_ClusterPutComponentTemplateRequest.ts",
        "/_index_template/": "indices_put_index_template_IndicesPutIndexTemplateRequest.ts",
        "/_ilm/policy/": "ilm_put_lifecycle_PutLifecycleRequest.ts",
        "/_ingest/pipeline/": "ingest_put_pipeline_PutPipelineRequest.ts",
    }

    def __init__(self, ts_dir: Path) -> None:
        self.bodies = {k: _ts_props((ts_dir / f).read_text(), "body: {") for k, f in self.FILES.items()}
        phase = (ts_dir / "ilm__types_Phase.ts").read_text()
        self.phases = _ts_props(phase, "export class Phases {")
        self.phase = _ts_props(phase, "export class Phase {")
        self.actions = _ts_props(phase, "export class Actions {")

    def check(self, path: str, body: Any) -> str | None:
        for prefix, props in self.bodies.items():
            if not path.startswith(prefix):
                continue
            if not isinstance(body, dict):
                return f"PUT {path}: body is not an object"
            extra = set(body) - set(props)
            missing = {k for k, req in props.items() if req} - set(body)
            if extra or missing:
                return f"PUT {path}: unknown keys {sorted(extra)}, missing {sorted(missing)}"
            if prefix == "/_ilm/policy/":
                pol = body.get("policy") or {}
                for name, ph in (pol.get("phases") or {}).items():
                    if name not in self.phases:
                        return f"PUT {path}: unknown ILM phase {name}"
                    if set(ph) - set(self.phase):
                        return f"PUT {path}: unknown keys in phase {name}"
                    bad = set(ph.get("actions") or {}) - set(self.actions)
                    if bad:
                        return f"PUT {path}: unknown ILM actions {sorted(bad)}"
            if prefix == "/_index_template/" and not body.get("index_patterns"):
                return f"PUT {path}: an index template needs index_patterns"
            if prefix == "/_ingest/pipeline/" and not isinstance(body.get("processors"), list):
                return f"PUT {path}: a pipeline needs a processors list"
            return None
        return None


class EcsSchema:
    """ECS 8.17 field types and allowed values."""

    def __init__(self, ecs_dir: Path) -> None:
        flat = yaml.safe_load((ecs_dir / "v8.17.0" / "ecs_flat.yml").read_text())
        self.types: dict[str, str] = {k: v["type"] for k, v in flat.items()}
        self.allowed: dict[str, set[str]] = {
            k: {a["name"] for a in v["allowed_values"]} for k, v in flat.items() if v.get("allowed_values")
        }
        self.open_objects = {k for k, t in self.types.items() if t in ("object", "flattened", "nested")}

    def check(self, doc: Any) -> list[str]:
        errors: list[str] = []
        if not isinstance(doc, dict):
            return ["document is not a JSON object"]
        if "@timestamp" not in doc:
            errors.append("no @timestamp")
        self._walk(doc, "", errors)
        return errors

    def _walk(self, node: dict[str, Any], prefix: str, errors: list[str]) -> None:
        for k, v in node.items():
            path = prefix + k
            if path.split(".", 1)[0] in KNOWN_CUSTOM_ROOTS:
                continue  # custom fields live under their own top-level name, as ECS asks
            if path in self.open_objects:
                continue
            if path in AUDITD_EXTENSION_FIELDS:
                if not isinstance(v, str):
                    errors.append(f"{path}: {v!r} is not a keyword")
                continue
            if path in self.types:
                self._value(path, self.types[path], v, errors)
            elif isinstance(v, dict):
                self._walk(v, path + ".", errors)
            else:
                errors.append(f"{path}: not an ECS 8.17 field")

    def _value(self, path: str, ftype: str, v: Any, errors: list[str]) -> None:
        values = v if isinstance(v, list) else [v]
        for x in values:
            if not _type_ok(ftype, x):
                errors.append(f"{path}: {x!r} is not a valid {ftype}")
            elif path in self.allowed and x not in self.allowed[path]:
                errors.append(f"{path}: {x!r} is not an allowed value")


def _type_ok(ftype: str, x: Any) -> bool:
    if ftype in ("keyword", "constant_keyword", "wildcard", "match_only_text", "text"):
        return isinstance(x, str)
    if ftype == "long":
        return isinstance(x, int) and not isinstance(x, bool)
    if ftype in ("float", "scaled_float"):
        return isinstance(x, int | float) and not isinstance(x, bool)
    if ftype == "boolean":
        return isinstance(x, bool)
    if ftype == "ip":
        try:
            ipaddress.ip_address(x)
        except ValueError:
            return False
        return True
    if ftype == "date":
        if not isinstance(x, str):
            return False
        try:
            dt.datetime.fromisoformat(x.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    if ftype == "geo_point":
        return isinstance(x, dict | list | str)
    return True


BULK_META = {
    "index": {
        "_id",
        "_index",
        "routing",
        "if_primary_term",
        "if_seq_no",
        "version",
        "version_type",
        "dynamic_templates",
        "pipeline",
        "require_alias",
    },
    "delete": {"_id", "_index", "routing", "if_primary_term", "if_seq_no", "version", "version_type"},
    "update": {
        "_id",
        "_index",
        "routing",
        "if_primary_term",
        "if_seq_no",
        "version",
        "version_type",
        "require_alias",
        "retry_on_conflict",
    },
}
BULK_META["create"] = BULK_META["index"]


class FakeElasticsearch:
    """The endpoint. ``start()``/``stop()`` may be called repeatedly; the port stays the same."""

    def __init__(
        self,
        conformance: Path,
        cert: Path,
        key: Path,
        ca: Path,
        *,
        port: int = 0,
        validate_every: int = 1,
    ) -> None:
        self.spec = RestSpec(conformance / "elasticsearch")
        self.ecs = EcsSchema(conformance / "ecs")
        self.bodies = BodySpec(conformance / "elasticsearch" / "ts-8.19")
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
        self.ctx.load_cert_chain(str(cert), str(key))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.port = port or free_port()
        self.validate_every = validate_every
        self.lock = threading.Lock()
        self.indices: dict[str, dict[str, Any]] = defaultdict(dict)
        self.raw: dict[tuple[str, str], bytes] = {}
        self.resources: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []
        self.violations: list[str] = []
        self.bad_bodies: list[bytes] = []
        self.conflicts = 0
        self.client_subjects: set[str] = set()
        self.reject_ids: set[str] = set()
        self.handshake_failures = 0
        self.bulk_delay = 0.0  # seconds each bulk request takes (to kill a client mid-run)
        # Whole-request refusals: a _bulk body holding this marker is answered 400; a body over this
        # many bytes 413 (as http.max_content_length does). Counted in refused.
        self.refuse_marker: bytes | None = None
        self.max_request_bytes: int | None = None
        self.refused: list[int] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._seen = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        outer = self

        class Handler(_Handler):
            es = outer

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                outer.handshake_failures += 1  # a client without a valid certificate: refused, quietly

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                return outer.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:  # kept-alive connections die with the "cluster"
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None

    def __enter__(self) -> FakeElasticsearch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries for tests -------------------------------------------------------------------------
    def docs(self, prefix: str) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {}
            for name, docs in self.indices.items():
                if name.startswith(prefix):
                    out.update(docs)
            return out

    def count(self, prefix: str) -> int:
        return len(self.docs(prefix))

    # -- request handling --------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, Any]:
        u = urlsplit(target)
        query = parse_qsl(u.query, keep_blank_values=True)
        ctype = headers.get("Content-Type")
        accept = headers.get("Accept", "") + " " + (ctype or "")
        with self.lock:
            self.requests.append((method, u.path))
        if "compatible-with=9" in accept:
            return self._bad(400, f"{method} {u.path}: compatible-with=9 is not accepted by Elasticsearch 8")
        why = self.spec.check(method, u.path, query, ctype if body else None)
        if why:
            return self._bad(400, why)
        if u.path == "/" and method in ("GET", "HEAD"):
            return 200, {
                "name": "fake-es",
                "cluster_name": "edgesec-test",
                "cluster_uuid": "fake",
                "version": {
                    "number": "8.17.0",
                    "build_flavor": "default",
                    "lucene_version": "9.12.0",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            }
        if u.path.endswith("/_bulk"):
            if self.bulk_delay:
                time.sleep(self.bulk_delay)
            if self.max_request_bytes is not None and len(body) > self.max_request_bytes:
                with self.lock:
                    self.refused.append(413)
                return 413, {
                    "error": {"type": "content_too_long", "reason": "request too large"},
                    "status": 413,
                }
            if self.refuse_marker is not None and self._marked(body):
                with self.lock:
                    self.refused.append(400)
                return 400, {
                    "error": {"type": "parse_exception", "reason": "refused on purpose"},
                    "status": 400,
                }
            return self._bulk(body, u.path)
        if method == "PUT":
            try:
                doc = json.loads(body)
            except ValueError:
                return self._bad(400, f"PUT {u.path}: body is not JSON")
            why = self.bodies.check(u.path, doc)
            if why:
                return self._bad(400, why)
            with self.lock:
                self.resources[u.path] = doc
            return 200, {"acknowledged": True}
        if method in ("GET", "HEAD"):
            with self.lock:
                doc = self.resources.get(u.path)
            if doc is None:
                return 404, {
                    "error": {"type": "resource_not_found_exception", "reason": u.path},
                    "status": 404,
                }
            return 200, {u.path.rsplit("/", 1)[-1]: doc}
        return 200, {"acknowledged": True}

    def _marked(self, body: bytes) -> bool:
        """A document (not a dead letter) holding the marker: the request is refused whole."""
        assert self.refuse_marker is not None
        if self.refuse_marker not in body:
            return False
        lines = body.split(b"\n")
        return any(
            b"deadletter" not in action and self.refuse_marker in doc
            for action, doc in zip(lines[0::2], lines[1::2], strict=False)
        )

    def _bad(self, status: int, why: str) -> tuple[int, Any]:
        with self.lock:
            self.violations.append(why)
        return status, {"error": {"type": "illegal_argument_exception", "reason": why}, "status": status}

    def _bulk(self, body: bytes, path: str) -> tuple[int, Any]:
        if not body.endswith(b"\n"):
            return self._bad(400, "bulk body must end with a newline")
        lines = body.split(b"\n")[:-1]
        default_index = path[1 : -len("/_bulk")] or None
        items: list[dict[str, Any]] = []
        errors = False
        i = 0
        while i < len(lines):
            try:
                action = json.loads(lines[i])
            except ValueError:
                return self._bad(400, f"bulk line {i + 1} is not JSON")
            if not isinstance(action, dict) or len(action) != 1 or next(iter(action)) not in BULK_META:
                self.bad_bodies.append(body)
                return self._bad(400, f"bulk line {i + 1}: not an action: {lines[i][:100]!r}")
            op, meta = next(iter(action.items()))
            extra = set(meta) - BULK_META[op]
            if extra:
                return self._bad(
                    400, f"bulk line {i + 1}: unknown metadata {sorted(extra)} (ES 8 has no _type)"
                )
            index = meta.get("_index", default_index)
            if not index:
                return self._bad(400, f"bulk line {i + 1}: no index")
            if op == "delete":
                i += 1
                items.append({op: {"_index": index, "_id": meta.get("_id"), "status": 200}})
                continue
            if i + 1 >= len(lines):
                return self._bad(400, f"bulk line {i + 1}: action without a document")
            raw = lines[i + 1]
            i += 2
            with self.lock:
                self._seen += 1
                check = self._seen % self.validate_every == 0
            # With sampling (benchmarks) only the sampled documents are parsed and checked.
            doc: Any = None
            problems: list[str] = []
            if check:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    self.bad_bodies.append(raw)
                    return self._bad(400, f"bulk line {i}: document is not JSON")
                problems = self.ecs.check(doc)
            _id = meta.get("_id") or f"auto-{self._seen}"
            if problems or _id in self.reject_ids:
                with self.lock:
                    self.violations.extend(f"{index}/{_id}: {p}" for p in problems)
                errors = True
                items.append(
                    {
                        op: {
                            "_index": index,
                            "_id": _id,
                            "status": 400,
                            "error": {
                                "type": "document_parsing_exception",
                                "reason": "; ".join(problems) or "rejected",
                            },
                        }
                    }
                )
                continue
            with self.lock:
                store = self.indices[index]
                if op == "create" and _id in store:
                    self.conflicts += 1
                    errors = True
                    items.append(
                        {
                            op: {
                                "_index": index,
                                "_id": _id,
                                "status": 409,
                                "error": {
                                    "type": "version_conflict_engine_exception",
                                    "reason": f"[{_id}]: version conflict, document already exists",
                                },
                            }
                        }
                    )
                    continue
                store[_id] = doc
                self.raw[(index, _id)] = raw
            items.append(
                {
                    op: {
                        "_index": index,
                        "_id": _id,
                        "_version": 1,
                        "result": "created",
                        "status": 201,
                        "_seq_no": 0,
                        "_primary_term": 1,
                        "_shards": {"total": 1, "successful": 1, "failed": 0},
                    }
                }
            )
        return 200, {"took": 1, "errors": errors, "items": items}


class _Handler(BaseHTTPRequestHandler):
    es: FakeElasticsearch
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        conn: ssl.SSLSocket = self.request
        conn.settimeout(30)
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError):
            conn.close()
            raise
        peer = conn.getpeercert()
        if peer:
            self.es.client_subjects.add(str(peer.get("subject")))
        with self.es.lock:
            self.es._conns.add(conn)
        super().setup()

    def finish(self) -> None:
        with self.es.lock:
            self.es._conns.discard(self.request)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if len(body) < n:  # the client died mid-request (a killed `ship`): nothing arrived, as in ES
            self.close_connection = True
            return
        status, doc = self.es.handle(self.command, self.path, self.headers, body)
        out = b"" if self.command == "HEAD" else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve
