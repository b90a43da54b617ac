"""Version parsing and comparison: examples from NVIDIA's own numbering, then properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesec.checks.families.gpu.versions import (
    Version,
    cuda_from_int,
    cuda_from_torch_tag,
    cuda_major_from_package,
    cudnn_from_int,
    cudnn_to_int,
    driver_branch,
)

parts = st.lists(st.integers(min_value=0, max_value=999_999), min_size=1, max_size=4)


def V(s: str) -> Version:
    return Version.parse(s)


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("580.65.06", "580.159.04"),  # zero padding is not a decimal fraction
        ("535.104.05", "550.54.14"),
        ("570.26", "570.124.06"),  # two parts against three
        ("12.4", "12.4.1"),
        ("12.9.1", "13.0"),
        ("9.10.2", "9.14.0"),  # 10 > 9 numerically, "10" < "9" as text
    ],
)
def test_order_is_numeric_part_by_part(low: str, high: str) -> None:
    assert V(low) < V(high)
    assert not V(high) < V(low)
    assert V(low) != V(high)


def test_trailing_zeros_do_not_change_a_version() -> None:
    assert V("12.4") == V("12.4.0") == V("12.4.0.0")
    assert hash(V("12.4")) == hash(V("12.4.0"))
    assert V("13") == V("13.0")


def test_text_is_kept_for_evidence() -> None:
    assert str(V("580.65.06")) == "580.65.06"
    assert str(V(" v9.14.0 ")) == "9.14.0"
    assert driver_branch(V("580.159.04")) == 580


@pytest.mark.parametrize("bad", ["", "abc", "12.", ".4", "1.2.3.4.5", "12.4-rc1", "1e3", "１２.４", None, 12])
def test_garbage_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        Version.parse(bad)  # type: ignore[arg-type]


@given(parts)
def test_parse_round_trips(p: list[int]) -> None:
    text = ".".join(map(str, p))
    v = V(text)
    assert v.parts == tuple(p)
    assert str(v) == text


@given(parts, parts)
def test_order_matches_zero_padded_tuples(a: list[int], b: list[int]) -> None:
    va, vb = V(".".join(map(str, a))), V(".".join(map(str, b)))
    n = max(len(a), len(b))
    ta, tb = tuple(a + [0] * (n - len(a))), tuple(b + [0] * (n - len(b)))
    assert (va < vb) == (ta < tb)
    assert (va == vb) == (ta == tb)
    assert (va > vb) == (ta > tb)


@given(parts, parts, parts)
def test_order_is_transitive(a: list[int], b: list[int], c: list[int]) -> None:
    va, vb, vc = (V(".".join(map(str, x))) for x in (a, b, c))
    if va <= vb and vb <= vc:
        assert va <= vc


@given(st.text(max_size=30))
def test_parse_never_raises_anything_but_value_error(text: str) -> None:
    try:
        v = Version.parse(text)
    except ValueError:
        return
    assert all(isinstance(p, int) and p >= 0 for p in v.parts)


@pytest.mark.parametrize(
    ("raw", "text"), [(13000, "13.0"), (12040, "12.4"), (12020, "12.2"), (11080, "11.8"), (13010, "13.1")]
)
def test_cuda_integers_from_nvml(raw: int, text: str) -> None:
    assert str(cuda_from_int(raw)) == text


@given(st.integers(min_value=1, max_value=99), st.integers(min_value=0, max_value=99))
def test_cuda_integer_encoding_round_trips(major: int, minor: int) -> None:
    v = cuda_from_int(major * 1000 + minor * 10)
    assert (v.major, v.minor) == (major, minor)


@pytest.mark.parametrize(
    ("raw", "text"), [(91400, "9.14.0"), (90100, "9.1.0"), (8906, "8.9.6"), (8700, "8.7.0")]
)
def test_cudnn_integers(raw: int, text: str) -> None:
    assert str(cudnn_from_int(raw)) == text
    assert cudnn_to_int(V(text)) == raw


@given(st.integers(min_value=1, max_value=8), st.integers(0, 9), st.integers(0, 99))
def test_cudnn_v8_encoding_round_trips(major: int, minor: int, patch: int) -> None:
    v = Version((major, minor, patch))
    assert cudnn_from_int(cudnn_to_int(v)) == v


@given(st.integers(min_value=9, max_value=99), st.integers(0, 99), st.integers(0, 99))
def test_cudnn_v9_encoding_round_trips(major: int, minor: int, patch: int) -> None:
    v = Version((major, minor, patch))
    assert cudnn_from_int(cudnn_to_int(v)) == v


@pytest.mark.parametrize("bad", [0, 999, -5, True, "9140"])
def test_bad_integers(bad: object) -> None:
    with pytest.raises(ValueError):
        cuda_from_int(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cudnn_from_int(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "major"),
    [
        ("libcudnn9-cuda-13", 13),
        ("libcudnn9-cuda-12", 12),
        ("libcudnn9-headers-cuda-13", 13),
        ("libcudnn9-cuda-11", 11),
        ("nvidia-cudnn-cu12", 12),
        ("nvidia_cudnn_cu13", 13),
        ("nvidia_cudnn_cu11", 11),
        ("torch-2.5.1+cu124", 12),
        ("libcudnn9", None),
        ("nvidia_cudnn", None),
        ("cudnn-frontend", None),
    ],
)
def test_cuda_major_from_package_names(name: str, major: int | None) -> None:
    assert cuda_major_from_package(name) == major


@pytest.mark.parametrize(
    ("tag", "cuda"),
    [("2.5.1+cu124", "12.4"), ("cu130", "13.0"), ("2.0.1+cu118", "11.8"), ("2.5.1+cpu", None)],
)
def test_torch_local_tags(tag: str, cuda: str | None) -> None:
    got = cuda_from_torch_tag(tag)
    assert (None if got is None else str(got)) == cuda
