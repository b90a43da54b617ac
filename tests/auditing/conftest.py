"""Fixtures the auditing tests share."""

from __future__ import annotations

import pytest

from .sitepki import SitePki, make_site_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SitePki:
    """One site PKI per test module (edgesec's own CA): server, client and checkpoint-signer leaves."""
    return make_site_pki(tmp_path_factory.mktemp("pki"))
