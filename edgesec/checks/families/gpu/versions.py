"""Version numbers of NVIDIA drivers, CUDA and cuDNN: parsing, comparison and the encodings NVIDIA uses.

Driver versions are dotted numbers compared part by part as integers (``580.65.06 < 580.159.04``: the
zero in ``06`` is padding, not a decimal fraction). CUDA versions are ``major.minor[.patch]``. NVML and
the CUDA API report versions as integers (``13000`` is CUDA 13.0); cuDNN headers encode
``M*1000+m*100+p`` before 9 and ``M*10000+m*100+p`` from 9 on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

_DOTTED_RE = re.compile(r"^\s*[vV]?([0-9]{1,6}(?:\.[0-9]{1,6}){0,3})\s*$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A dotted version of up to four integer parts; missing trailing parts compare as zero.

    ``text`` keeps the spelling it was read with (``"580.65.06"``) for evidence; equality and order
    use the numbers only.
    """

    parts: tuple[int, ...]
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``"580.159.04"``, ``"12.4"``, ``"v9.14.0"``; raise ``ValueError`` on anything else."""
        if not isinstance(text, str):
            raise ValueError(f"a version must be text, not {type(text).__name__}")
        m = _DOTTED_RE.match(text)
        if not m:
            raise ValueError(f"not a version number: {text!r}")
        s = m.group(1)
        return cls(tuple(int(p) for p in s.split(".")), s)

    def _key(self) -> tuple[int, ...]:
        # Trailing zeros do not change a version: 12.4 == 12.4.0.
        k = list(self.parts)
        while len(k) > 1 and k[-1] == 0:
            k.pop()
        return tuple(k)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Version) -> bool:
        a, b = list(self.parts), list(other.parts)
        n = max(len(a), len(b))
        return a + [0] * (n - len(a)) < b + [0] * (n - len(b))

    def __str__(self) -> str:
        return self.text or ".".join(str(p) for p in self.parts)

    @property
    def major(self) -> int:
        return self.parts[0]

    @property
    def minor(self) -> int:
        return self.parts[1] if len(self.parts) > 1 else 0

    @property
    def patch(self) -> int:
        return self.parts[2] if len(self.parts) > 2 else 0

    def major_minor(self) -> Version:
        return Version((self.major, self.minor), f"{self.major}.{self.minor}")


def driver_branch(driver: Version) -> int:
    """The branch of a driver: ``580.159.04`` is on R580."""
    return driver.major


def cuda_from_int(value: int) -> Version:
    """CUDA version from NVML/CUDA's integer (``nvmlSystemGetCudaDriverVersion_v2``, ``cudaRuntimeGetVersion``).

    ``major = v // 1000``, ``minor = v % 1000 // 10``: 12040 is 12.4, 13000 is 13.0.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1000:
        raise ValueError(f"not a CUDA version integer: {value!r}")
    major, minor = value // 1000, value % 1000 // 10
    return Version((major, minor), f"{major}.{minor}")


def cudnn_from_int(value: int) -> Version:
    """cuDNN version from ``cudnnGetVersion`` / ``CUDNN_VERSION``: v8 ``M*1000+m*100+p``, v9 ``M*10000+m*100+p``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1000:
        raise ValueError(f"not a cuDNN version integer: {value!r}")
    if value >= 90000:
        major, rest = value // 10000, value % 10000
    else:
        major, rest = value // 1000, value % 1000
    minor, patch = rest // 100, rest % 100
    return Version((major, minor, patch), f"{major}.{minor}.{patch}")


def cudnn_to_int(v: Version) -> int:
    """The inverse of :func:`cudnn_from_int`."""
    if v.major >= 9:
        return v.major * 10000 + v.minor * 100 + v.patch
    return v.major * 1000 + v.minor * 100 + v.patch


_CU_SUFFIX_RE = re.compile(r"(?:^|[-_])cu(?:da)?-?(\d{2,3})(?:$|[-_.])", re.IGNORECASE)


def cuda_major_from_package(name: str) -> int | None:
    """The CUDA major a package is built for, from its name: ``libcudnn9-cuda-13`` → 13,
    ``nvidia-cudnn-cu12`` → 12, ``nvidia_cudnn_cu11`` → 11, ``torch 2.5.1+cu124`` (local tag) → 12.

    Returns None when the name says nothing about CUDA.
    """
    m = _CU_SUFFIX_RE.search(name.replace("+", "-"))
    if not m:
        return None
    digits = m.group(1)
    # "cu124" (torch local tags) is major 12 minor 4; "cu12"/"cuda-13" are majors alone.
    major = int(digits[:2]) if len(digits) == 3 else int(digits)
    return major if 9 <= major <= 99 else None


def cuda_from_torch_tag(tag: str) -> Version | None:
    """``+cu124`` → 12.4, ``cu130`` → 13.0, ``cu118`` → 11.8; None for ``+cpu``/``+rocm``."""
    m = re.search(r"cu(\d{2})(\d)$", tag.strip())
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    return Version((major, minor), f"{major}.{minor}")
