"""Keras models: a v3 ``config.json`` (Lambda layers, imported modules) and an HDF5 model's Lambda layers."""

from __future__ import annotations

import json
import mmap
import re
from typing import IO, Any

from edgesec.models.scan.policy import classify_global
from edgesec.models.scan.report import ScanFinding

KERAS_MODULES = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras", "tensorflow"})
"""Where a Keras config's ``module`` may point without a finding (Keras imports whatever it names)."""


def keras_config(data: bytes, rel: str) -> list[ScanFinding]:
    """A Keras v3 ``config.json``: Lambda layers carry marshalled code; ``module`` names are imported.

    ``deserialize_keras_object`` imports the ``module`` a config names and fetches ``class_name`` from it
    (the CVE-2025-1550 class): that import is judged by the same table as a pickle's.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return [
            ScanFinding(
                rel, "keras-config", "high", "Keras config.json is not valid JSON: cannot be assessed"
            )
        ]
    lambdas: set[str] = set()
    imports: set[tuple[str, str]] = set()
    deep = False

    def walk(v: Any, depth: int) -> None:
        nonlocal deep
        if depth > 200:
            deep = True
        elif isinstance(v, dict):
            if v.get("class_name") in ("Lambda", "TFOpLambda"):
                lambdas.add(str(v.get("class_name")))
            module = v.get("module")
            if isinstance(module, str) and module.split(".")[0] not in KERAS_MODULES:
                imports.add((module, str(v.get("class_name", ""))))
            for x in v.values():
                walk(x, depth + 1)
        elif isinstance(v, list):
            for x in v:
                walk(x, depth + 1)

    walk(doc, 0)
    out = [
        ScanFinding(
            rel,
            "keras-lambda",
            "critical",
            f"Keras model holds a {name} layer: its marshalled Python code runs when the model loads",
            {"layer": name},
        )
        for name in sorted(lambdas)
    ]
    for module, name in sorted(imports):
        sev = classify_global(module, name) or "high"
        what = "a callable that runs code when loaded" if sev == "critical" else "an import outside Keras"
        out.append(
            ScanFinding(
                rel,
                "keras-import",
                sev,
                f"Keras config imports {module}.{name}: {what}",
                {"import": f"{module}.{name}"},
            )
        )
    if deep:
        out.append(
            ScanFinding(rel, "keras-config", "high", "Keras config nested too deeply: cannot be assessed")
        )
    return out


def grep_lambda(f: IO[bytes], size: int) -> bytes:
    """``Lambda`` if a Keras HDF5 file's model_config attribute names a Lambda layer (a byte search)."""
    if size == 0:
        return b""
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return b"Lambda" if re.search(rb'"class_name":\s*"(?:TFOp)?Lambda"', buf) else b""
