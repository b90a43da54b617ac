"""The check families, one module (or package) each, named by the family id its checks carry.

``families/<id>.py`` (or ``families/<id>/``) holds the checks whose ids start with ``<id>.`` and exposes
``CHECKS``; :data:`edgesec.checks.registry.BUILTIN_FAMILY_MODULES` lists them. The framework (interface,
registry, profiles, runner, reports, probes, discovery) stays directly under ``edgesec/checks/``.
"""
