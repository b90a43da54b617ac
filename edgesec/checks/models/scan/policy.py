"""Which imports a pickle may make: the weights-only allowlist, and what is known to run code.

An import outside the allowlist is always a finding. It is ``critical`` when the callable is known to run
code, touch files or the network (``os.system``, ``builtins.eval``, ``cProfile.run``: loading the file runs
what the attacker wrote) and ``high`` otherwise: a suspicious import that a weights-only loader refuses and
no one has shown to be safe (``builtins.len`` cannot run code, ``mylib.Net.__reduce__`` may).
"""

from __future__ import annotations

SAFE_GLOBALS: dict[str, frozenset[str]] = {
    "collections": frozenset({"OrderedDict"}),
    "torch._utils": frozenset(
        {
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
            "_rebuild_meta_tensor_no_storage",
            "_rebuild_device_tensor_from_numpy",
            "_rebuild_nested_tensor",
        }
    ),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch": frozenset(
        {
            "FloatStorage",
            "HalfStorage",
            "BFloat16Storage",
            "DoubleStorage",
            "LongStorage",
            "IntStorage",
            "ShortStorage",
            "CharStorage",
            "ByteStorage",
            "BoolStorage",
            "ComplexFloatStorage",
            "ComplexDoubleStorage",
            "UntypedStorage",
            "Size",
            "device",
            "float32",
            "float16",
            "bfloat16",
            "float64",
            "int64",
            "int32",
            "int16",
            "int8",
            "uint8",
            "bool",
            "strided",
            "sparse_coo",
        }
    ),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),  # protocol 5 arrays (numpy < 2)
    "numpy._core.numeric": frozenset({"_frombuffer"}),  # protocol 5 arrays (numpy >= 2)
    "_codecs": frozenset({"encode"}),  # how numpy pickles carry raw bytes under protocol 2
    "builtins": frozenset({"set", "frozenset", "slice", "complex", "bytearray"}),
    "__builtin__": frozenset({"set", "frozenset", "slice", "complex", "bytearray"}),
}
"""What a weights-only checkpoint needs. Anything else is reported: allowlists are not bypassed by a
module the list forgot, blocklists are."""

DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "socket",
        "shutil",
        "runpy",
        "pty",
        "pickle",
        "_pickle",
        "pdb",
        "ctypes",
        "webbrowser",
        "pip",
        "importlib",
        "code",
        "codeop",
        "commands",
        "marshal",
        "types",
        "multiprocessing",
        "asyncio",
        "tempfile",
        "pathlib",
        "urllib",
        "http",
        "requests",
        "ftplib",
        "telnetlib",
        "smtplib",
        "bdb",
        "timeit",
        "platform",
        "signal",
        "threading",
        "_thread",
        "posixpath",
        "cProfile",
        "profile",
        "trace",
        "doctest",
        "unittest",
        "idlelib",
        "lib2to3",
        "distutils",
        "setuptools",
        "venv",
        "ensurepip",
        "zipimport",
        "builtins.__import__",
        "torch.hub",
        "torch.jit",
        "torch.package",
        "torch.utils",
        "torch.distributed",
        "torch._dynamo",
        "torch._inductor",
        "torch.serialization",
        "numpy.f2py",
        "numpy.distutils",
        "numpy.testing",
        "jinja2",
        "mako",
        "dill",
        "cloudpickle",
        "joblib",
        "yaml",
        "site",
        "sysconfig",
        "gc",
        "inspect",
        "functools",
        "operator",
        "copyreg",
        "copy_reg",
        "_io",
        "io",
        "fcntl",
        "resource",
        "readline",
        "rlcompleter",
        "logging",
        "glob",
        "fileinput",
        "zipfile",
        "tarfile",
        "uuid",
        "xmlrpc",
        "ssl",
        "select",
        "selectors",
        "mmap",
        "_posixsubprocess",
        "_winapi",
        "winreg",
        "msvcrt",
        "_ctypes",
        "cffi",
        "sqlite3",
        "dbm",
        "shelve",
    }
)
DANGEROUS_NAMES = {
    ("builtins", n)
    for n in (
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "open",
        "__import__",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "execfile",
        "apply",
    )
} | {
    ("functools", "partial"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("numpy.testing._private.utils", "runstring"),
    ("numpy", "load"),
    ("numpy", "fromfile"),
    ("numpy.lib.npyio", "load"),
    ("torch", "load"),
    ("torch", "compile"),
    ("codecs", "open"),
    ("_codecs", "open"),
    ("collections", "namedtuple"),
}


SAFE_BUILTINS = frozenset(
    {
        "set",
        "frozenset",
        "slice",
        "complex",
        "bytearray",
        "bytes",
        "dict",
        "list",
        "tuple",
        "int",
        "float",
        "bool",
        "str",
        "range",
        "object",
        "len",
        "abs",
        "min",
        "max",
        "sum",
        "reversed",
        "enumerate",
        "zip",
        "map",
        "filter",
        "sorted",
        "repr",
        "hash",
        "id",
        "iter",
        "next",
        "ord",
        "chr",
        "isinstance",
        "issubclass",
        "type",
        "property",
        "staticmethod",
        "classmethod",
        "super",
        "print",
        "format",
        "round",
        "pow",
        "divmod",
        "all",
        "any",
        "hex",
        "oct",
        "bin",
        "ascii",
        "callable",
        "memoryview",
    }
)
"""Builtins that cannot run code of the attacker's choosing: outside the allowlist (``high``), not ``critical``."""


def classify_global(module: str, name: str) -> str | None:
    """None if ``module.name`` is allowed; else ``critical`` (runs code) or ``high`` (suspicious import)."""
    if name in SAFE_GLOBALS.get(module, frozenset()):
        return None
    parts = module.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    if prefixes & DANGEROUS_MODULES or (module, name) in DANGEROUS_NAMES:
        return "critical"
    if module in ("builtins", "__builtin__"):
        # getattr-style names reach everything; the harmless ones only build values.
        return "high" if name in SAFE_BUILTINS else "critical"
    if "." in name:
        return "critical"  # a dotted name walks attributes after the import (pickle protocol 4)
    return "high"
