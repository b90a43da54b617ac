"""edgesec: security and compliance toolkit for offline edge AI sites.

Four parts share one package and one CLI: ``edgesec.pki`` (offline CA), ``edgesec.authz``
(ForwardAuth service), ``edgesec.auditing`` (audit trail and log pipeline) and ``edgesec.checks``
(the go-live check runner and its reports).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
