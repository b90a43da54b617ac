"""The Elasticsearch client (elasticsearch-py 8.x over mutual TLS) and ``push``, which installs what
:mod:`.templates` renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgesec.auditing.elastic.templates import ElasticOptions, render
from edgesec.errors import InputError, OperationFailed

# -- client ------------------------------------------------------------------------------------------


def make_client(url: str, *, ca: str | None, cert: str | None, key: str | None, timeout: float = 30.0) -> Any:
    """An elasticsearch-py 8.x client (the 9.x one sends a compatibility header ES 8 rejects)."""
    from importlib.metadata import version

    import elasticsearch

    installed = version("elasticsearch")
    if int(installed.split(".")[0]) != 8:
        raise InputError(f"elasticsearch-py {installed} is installed; edgesec needs 8.x for ES 8")
    if url.startswith("http://"):
        raise InputError(
            f"refusing to send audit records in clear text: {url}",
            hint="use https:// with --ca, --cert and --key (mutual TLS)",
        )
    if not url.startswith("https://"):
        raise InputError(f"not an Elasticsearch URL: {url}")
    for what, p in (("CA file", ca), ("client certificate", cert), ("client key", key)):
        if p is not None and not Path(p).is_file():
            raise InputError(f"{what} not found: {p}")
    if not ca:
        raise InputError("an https Elasticsearch URL needs --ca (the site trust bundle)")
    tls: dict[str, Any] = {
        k: v for k, v in (("ca_certs", ca), ("client_cert", cert), ("client_key", key)) if v
    }
    return elasticsearch.Elasticsearch(
        url,
        **tls,
        verify_certs=True,
        request_timeout=timeout,
        max_retries=2,
        retry_on_timeout=True,
    )


def es_errors() -> tuple[type[BaseException], ...]:
    import elastic_transport
    import elasticsearch

    return (elasticsearch.ApiError, elastic_transport.TransportError, elasticsearch.UnsupportedProductError)


def push(client: Any, o: ElasticOptions) -> list[dict[str, str]]:
    """Install (or update in place) every object. PUT is idempotent: a rerun leaves the same state."""
    done = []
    for path, body in render(o).items():
        kind, name = path.strip("/").split("/", 1)
        try:
            if kind == "_component_template":
                client.cluster.put_component_template(name=name, **body)
            elif kind == "_index_template":
                client.indices.put_index_template(name=name, **body)
            elif kind == "_ilm":
                client.ilm.put_lifecycle(name=name.split("/", 1)[1], **body)
            elif kind == "_ingest":
                client.ingest.put_pipeline(id=name.split("/", 1)[1], **body)
            else:  # pragma: no cover - render() only produces the four kinds above
                raise AssertionError(path)
        except es_errors() as exc:
            raise OperationFailed(f"Elasticsearch refused PUT {path}: {short_error(exc)}") from None
        done.append({"path": path, "status": "installed"})
    return done


def short_error(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# -- ship --------------------------------------------------------------------------------------------
