"""A signing time proven by the site's own signed audit trail.

The time rule of detached signatures (:mod:`edgesec.pki.trust`) lets a signature outlive its certificate
only when its time is proven. The signing commands write an audit event carrying the SHA-256 of the
signature they made (``edgesec.signature.sha256``). When that record is followed in the hash chain by a
checkpoint signed with a certificate the site accepts *now*, the signature existed when that checkpoint
was made: the checkpoint's ``created`` is the proven time. A signer who back-dates a signature cannot put
it into an already checkpointed part of the chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from edgesec._fs import read_input_file
from edgesec.auditing.checkpoint import Checkpoint, local_checkpoints, parse_checkpoint, verify_checkpoint
from edgesec.auditing.verify import _records, select_files, verify_trail
from edgesec.errors import InputError, VerificationError
from edgesec.pki.trust import ProvenTime, TrustBundle

SIGNATURE_FIELD = "edgesec.signature.sha256"
#: The events that record a signing; no other record proves anything, whatever fields it carries.
SIGNING_ACTIONS = frozenset({"evidence.signed", "model.signed", "trail.checkpoint"})


def signature_digest(signature: bytes) -> str:
    """What a signing event records of a signature: the SHA-256 of its raw bytes."""
    return hashlib.sha256(signature).hexdigest()


def prove_signing_time(trail_dir: Path, signature: bytes, trust: TrustBundle) -> ProvenTime:
    """The time by which ``signature`` provably existed, from the trail in ``trail_dir`` and its local
    checkpoints; :class:`VerificationError` naming why there is no proof."""
    digest = signature_digest(signature)
    checkpoints: list[Checkpoint] = []
    refused: list[str] = []
    for f in local_checkpoints(trail_dir):
        try:
            cp = parse_checkpoint(read_input_file(f, what="checkpoint"), str(f))
            verify_checkpoint(cp, trust)
        except (InputError, VerificationError) as exc:
            refused.append(f"{f.name}: {exc.message}")
            continue
        checkpoints.append(cp)
    # The chain must hold from the signing record to the checkpoint, and hold the checkpointed hashes.
    verify_trail(trail_dir, anchors=[cp.anchor("proof") for cp in checkpoints])
    seq = None
    for rec in _records(select_files(trail_dir, None)):
        doc = rec.doc or {}
        sig = (doc.get("edgesec") or {}).get("signature")
        action = (doc.get("event") or {}).get("action")
        if isinstance(sig, dict) and sig.get("sha256") == digest and action in SIGNING_ACTIONS:
            seq = rec.seq
            break
    if seq is None:
        raise VerificationError(f"the trail in {trail_dir} records no signing of this signature")
    covering = [cp for cp in checkpoints if cp.seq >= seq]
    if not covering:
        raise VerificationError(
            f"the signing (trail record {seq}) is covered by no checkpoint the site accepts"
            + (f" ({'; '.join(refused)})" if refused else "")
        )
    best = min(covering, key=lambda cp: cp.seq)
    created = dt.datetime.fromisoformat(str(best.doc["created"]).replace("Z", "+00:00"))
    return ProvenTime(
        created,
        f"trail record {seq}, covered by the checkpoint of record {best.seq} signed {best.doc['created']}",
    )
