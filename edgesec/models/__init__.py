"""edgesec.models: model integrity -- ``edgesec model sign|verify|scan``.

A part of its own beside :mod:`edgesec.authz`: the signed-manifest format (:mod:`.manifest`, :mod:`.bundle`,
:mod:`.hashing`), the library (:mod:`.api`), the CLI (:mod:`.cli`) and the loader-safety scanner
(:mod:`.scan`, one module per file format). The ``models.*`` checks of ``edgesec audit`` live in
:mod:`edgesec.checks.families.models` and call this part.
"""
