"""The ``models`` check family: the ``models.*`` checks of ``edgesec audit``, calling :mod:`edgesec.models`.

The checks read the model directories from ``[models] dirs`` in the site config: each must verify against
its signed manifest (``models.signature``) and scan clean (``models.unsafe-formats``). With no directory
configured both SKIP. Findings carry the file names, shards and digests that differ as evidence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity
from edgesec.errors import EdgesecError

MAX_EVIDENCE = 50
"""Differences kept in a finding's evidence (a swapped model can differ in thousands of files)."""


class ModelSignatureCheck(Check):
    """Every configured model directory verifies against its signature."""

    meta = CheckMeta(
        id="models.signature",
        title="Model directories match their signed manifests",
        severity=Severity.HIGH,
        rationale=(
            "Models arrive on removable media; only a signature by the site's signing certificate proves the "
            "files are the ones the publisher released, unchanged, with nothing added."
        ),
        remediation=(
            "Restore the model from its release media and run 'edgesec model verify DIR'; sign new releases "
            "with 'edgesec model sign DIR --signer NAME'."
        ),
        controls=("mlps-2.0-l3:8.1.4.6", "pci-dss-4.0:11.5.2", "iec-62443-3-3:SR 3.4"),
        timeout_s=3600.0,
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        from edgesec.models.api import pin_for, verify_model
        from edgesec.pki.api import load_trust, trust_dir

        settings = ctx.config.settings
        dirs = settings.models.dirs
        if not dirs:
            yield self.skipped("no model directories configured ([models] dirs)")
            return
        try:
            trust = load_trust(ctx.config)
        except EdgesecError as e:
            where = str(trust_dir(ctx.config))
            for d in dirs:
                yield self.failed(f"cannot verify: {e.message}", resource=d, evidence={"trust_bundle": where})
            return
        for d in dirs:
            try:
                res = verify_model(
                    Path(d),
                    trust=trust,
                    ignore=settings.models.ignore,
                    follow_symlinks=settings.models.follow_symlinks,
                    now=ctx.now(),
                    pin=pin_for(settings.models.pins, d),
                )
            except EdgesecError as e:
                yield self.failed(f"cannot verify: {e.message}", resource=d)
                continue
            evidence = res.to_json()
            evidence["differences"] = evidence["differences"][:MAX_EVIDENCE]
            if res.ok:
                yield self.passed(
                    f"{len(res.manifest.files) if res.manifest else 0} file(s) verified, signed by "
                    f"{res.signer.subject if res.signer else '?'}",
                    resource=d,
                    evidence=evidence,
                )
            else:
                lines = res.lines()
                more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
                yield self.failed(f"{lines[0]}{more}", resource=d, evidence=evidence)


class ModelScanCheck(Check):
    """No configured model file can run code when loaded or has a malformed header."""

    meta = CheckMeta(
        id="models.unsafe-formats",
        title="Model files cannot run code when loaded",
        severity=Severity.CRITICAL,
        rationale=(
            "Pickle-based checkpoints execute arbitrary code when loaded, GGUF chat templates rendered without a "
            "sandbox can reach Python internals (CVE-2024-34359), and malformed headers attack the loader."
        ),
        remediation=(
            "Convert checkpoints to safetensors or GGUF, remove the flagged files, and run 'edgesec model scan DIR'."
        ),
        controls=("mlps-2.0-l3:8.1.4.6", "pci-dss-4.0:6.3.3"),
        timeout_s=1800.0,
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        from edgesec.models.scan import scan_path

        settings = ctx.config.settings.models
        if not settings.dirs:
            yield self.skipped("no model directories configured ([models] dirs)")
            return
        for d in settings.dirs:
            path = Path(d)
            if not path.exists():
                yield self.failed(f"model directory {d} does not exist", resource=d)
                continue
            report = scan_path(
                path,
                allowed_formats=settings.allowed_formats,
                unknown_severity=settings.unknown_format_severity,
            )
            bad = report.blocking()
            evidence = {
                "files_scanned": report.files_scanned,
                "formats": report.formats,
                "findings": [f.to_dict() for f in report.findings[:MAX_EVIDENCE]],
            }
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                worst = max(bad, key=lambda f: f.severity == "critical")
                sev = Severity.CRITICAL if worst.severity == "critical" else Severity.HIGH
                yield self.failed(f"{worst.line()}{more}", resource=d, evidence=evidence, severity=sev)
            else:
                yield self.passed(
                    f"{report.files_scanned} files scanned clean", resource=d, evidence=evidence
                )


CHECKS: list[type[Check]] = [ModelSignatureCheck, ModelScanCheck]
