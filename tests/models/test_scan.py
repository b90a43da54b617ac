"""``edgesec model scan``: unsafe formats and malformed headers, found without loading anything."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesec.models import scan
from tests.models.conftest import make_gguf, make_safetensors

ALLOWED = ["safetensors", "gguf", "onnx"]


def findings(path: Path, allowed: list[str] = ALLOWED) -> list[scan.ScanFinding]:
    return scan.scan_path(path, allowed_formats=allowed).findings


def one_line(path: Path, allowed: list[str] = ALLOWED) -> str:
    lines = [f.line() for f in findings(path, allowed)]
    assert len(lines) == 1, lines
    return lines[0]


# --- pickles -------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``touch`` on the marker file (it is never unpickled here)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_is_flagged_and_never_runs(tmp_path: Path, cli, protocol: int) -> None:
    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    model.mkdir()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    code, out, _ = cli("model", "scan", str(model))
    assert code == 1
    assert (
        "CRITICAL pytorch_model.bin: pickle imports posix.system: a callable that runs code when loaded"
        in out
    )
    assert "HIGH pytorch_model.bin: format pickle is not allowed by the site policy" in out
    assert not marker.exists()


def test_zip_wrapped_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Payload(marker), protocol=2))
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\x00" * 64)
    p = tmp_path / "model.pt"
    p.write_bytes(buf.getvalue())
    lines = [f.line() for f in findings(p)]
    assert "HIGH model.pt: format a zip-wrapped pickle (PyTorch) is not allowed by the site policy" in lines
    assert (
        "CRITICAL model.pt:archive/data.pkl: pickle imports posix.system: a callable that runs code when loaded"
        in lines
    )
    assert not marker.exists()


def test_weights_only_pickle_passes_the_allowlist(tmp_path: Path) -> None:
    # What torch writes for a tensor: only allowlisted globals (hand-assembled, torch is not needed).
    data = (
        b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\n"
        b"q\x03(X\x01\x00\x00\x000ctorch\nFloatStorage\nq\x04K\x00K\x04\x85K\x01\x85\x89h\x00)Rtq\x05Rq\x06s."
    )
    p = tmp_path / "weights.pth"
    p.write_bytes(data)
    assert [f.rule for f in findings(p)] == ["format-policy"]
    assert findings(p, [*ALLOWED, "pickle"]) == []  # a site that allows pickles still gets the import check


def test_unknown_import_is_high_and_computed_import_is_critical(tmp_path: Path) -> None:
    p = tmp_path / "a.pkl"
    p.write_bytes(b"\x80\x02cmylib.models\nNet\nq\x00)R.")
    assert (
        one_line(p, ["pickle"])
        == "HIGH a.pkl: pickle imports mylib.models.Net: a suspicious import outside the weights-only allowlist"
    )
    # STACK_GLOBAL whose operands are results of calls, not constants.
    p.write_bytes(b"\x80\x04cmylib\nname\n)R\x940\x8c\x02os\x8c\x06system\x940h\x00h\x01\x93.")
    assert "computed at load time" in " ".join(f.line() for f in findings(p, ["pickle"]))


def test_hostile_lengths_in_a_pickle_cost_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.pkl"
    p.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b".")
    line = one_line(p, ["pickle"])
    assert line.startswith("HIGH a.pkl: pickle stream is malformed")


@given(st.binary(max_size=512))
def test_pickle_scanner_never_crashes(data: bytes) -> None:
    out = scan.scan_pickle_stream(io.BytesIO(data), len(data), "fuzz.pkl")
    assert all(f.severity in scan.SEVERITIES for f in out)


# --- safetensors --------------------------------------------------------------------------------------


def _st(header: dict | bytes, data: bytes, *, n: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


GOOD = {
    "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "b": {"dtype": "I8", "shape": [4], "data_offsets": [16, 20]},
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x02\x03", "truncated: 3 bytes, no header length"),
        (_st(GOOD, b"\x00" * 20, n=1 << 40), "header length 1099511627776 exceeds the 100000000-byte bound"),
        (_st(GOOD, b"", n=5000), "header length 5000 runs past the end of the file"),
        (_st(b"{not json", b""), "header is not valid JSON"),
        (_st(b"[1, 2]", b""), "header is not a JSON object"),
        (_st(GOOD, b"\x00" * 12), "tensors end at byte 20 of the data section but it holds 12: truncated"),
        (_st(GOOD, b"\x00" * 24), "4 bytes after the last tensor are not described by the header"),
        (
            _st({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [18, 22]}}, b"\x00" * 22),
            "leaves a gap of 2 bytes",
        ),
        (
            _st({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [12, 16]}}, b"\x00" * 16),
            "overlaps the previous tensor",
        ),
        (
            _st({**GOOD, "b": {"dtype": "I8", "shape": [8], "data_offsets": [16, 20]}}, b"\x00" * 20),
            "I8 x [8] is 8 bytes but data_offsets span 4",
        ),
        (
            _st({**GOOD, "b": {"dtype": "Q4", "shape": [4], "data_offsets": [16, 20]}}, b"\x00" * 20),
            "unknown dtype 'Q4'",
        ),
        (_st(b'{"a": 1, "a": 2}', b""), "duplicate key 'a'"),
        (_st({**GOOD, "__metadata__": {"k": 1}}, b"\x00" * 20), "__metadata__ must map strings to strings"),
        (
            _st({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}}, b"\x00" * 16),
            "data_offsets must be",
        ),
    ],
)
def test_safetensors_header_validation(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(content)
    line = one_line(p)
    assert line.startswith("HIGH m.safetensors: invalid safetensors file: ")
    assert message in line


def test_real_safetensors_is_clean(tmp_path: Path) -> None:
    p = make_safetensors(tmp_path / "m.safetensors", mib=0.1)
    assert findings(p) == []
    assert scan.check_safetensors(p)["tensors"] == 3


@given(st.binary(max_size=256))
def test_safetensors_validator_never_crashes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    p = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    p.write_bytes(data)
    scan.scan_file(p, "fuzz.safetensors", p.parent, ALLOWED)


# --- GGUF ---------------------------------------------------------------------------------------------

SAFE_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}{%- for m in messages -%}{%- if m['role'] == 'system' -%}"
    "{%- set ns.system = m['content'] | trim -%}{%- elif m.role not in ['user', 'assistant'] -%}"
    "{{ raise_exception('bad role') }}{%- else -%}<|{{ m['role'] }}|>{{ m['content'].strip() }}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def test_real_gguf_with_a_normal_chat_template_is_clean(tmp_path: Path) -> None:
    p = make_gguf(tmp_path / "m.gguf", template=SAFE_TEMPLATE)
    assert findings(p) == []


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "reads attribute '__class__'"),
        (
            "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read() }}",
            "reads attribute '_TemplateReference__context'",
        ),
        ("{{ ''|attr('__cla' + 'ss__') }}", "uses the 'attr' filter"),
        ("{{ lipsum.__globals__['os'].popen('id') }}", "uses the global 'lipsum'"),
        ("{{ x['__globals__'] }}", "holds the string '__globals__'"),
    ],
)
def test_gguf_chat_template_reaching_python_internals(tmp_path: Path, template: str, reason: str) -> None:
    p = make_gguf(tmp_path / "m.gguf", template=template)
    line = one_line(p)
    assert line.startswith(
        "CRITICAL m.gguf: tokenizer.chat_template reaches for Python internals (code execution under an "
        "unsandboxed Jinja): "
    )
    assert reason in findings(p)[0].evidence["reasons"]


def _gguf_header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GGU", "truncated: magic needs 4 bytes"),
        (b"GGML" + b"\x00" * 20, "not a GGUF file (bad magic)"),
        (_gguf_header(version=1), "unsupported GGUF version 1"),
        (_gguf_header(version=0x03000000), "big-endian GGUF is not supported"),
        (_gguf_header(n_tensors=1 << 60), "tensor count 1152921504606846976 is absurd (bound 1048576)"),
        (_gguf_header(n_kv=1 << 40) + b"\x00" * 64, "metadata count 1099511627776 is absurd (bound 1048576)"),
        (
            _gguf_header(n_kv=1) + struct.pack("<Q", 1 << 62) + b"x" * 16,
            "string length 4611686018427387904 exceeds",
        ),
        (_gguf_header(n_kv=1) + struct.pack("<Q", 1000) + b"x" * 16, "runs past the end of the file"),
        (
            _gguf_header(n_kv=1) + _gstr(b"tokens") + struct.pack("<IIQ", 9, 4, 1 << 50) + b"\x00" * 8,
            "array count 1125899906842624 cannot fit",
        ),
        (_gguf_header(n_kv=1) + _gstr(b"k") + struct.pack("<I", 77), "unknown value type 77"),
        (
            _gguf_header(n_tensors=1) + _gstr(b"t") + struct.pack("<I", 9) + b"\x00" * 40,
            "9 dimensions (1..4 allowed)",
        ),
        (
            _gguf_header(n_tensors=1) + _gstr(b"t") + struct.pack("<IQIQ", 1, 64, 0, 0) + b"\x00" * 16,
            "ends at 256 but the data section holds",
        ),
    ],
)
def test_gguf_header_validation(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "m.gguf"
    p.write_bytes(content)
    line = one_line(p)
    assert line.startswith("HIGH m.gguf: invalid gguf file: ")
    assert message in line


def test_truncated_real_gguf(tmp_path: Path) -> None:
    p = make_gguf(tmp_path / "m.gguf", template=SAFE_TEMPLATE)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    assert "truncated" in one_line(p)
    p.write_bytes(data[:40])  # inside the metadata
    assert "truncated" in one_line(p)


@given(st.binary(max_size=256))
def test_gguf_validator_never_crashes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    p = tmp_path_factory.getbasetemp() / "fuzz.gguf"
    p.write_bytes(b"GGUF" + data)
    scan.scan_file(p, "fuzz.gguf", p.parent, ALLOWED)


# --- ONNX ---------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _onnx(location: str) -> bytes:
    """A ModelProto with one initializer stored as external data (field numbers from onnx.proto)."""
    entry = _field(1, b"location") + _field(2, location.encode())
    tensor = _field(8, b"weight") + _field(13, entry) + _varint(14 << 3 | 0) + _varint(1)
    graph = _field(2, b"g") + _field(5, tensor)
    return _varint(1 << 3 | 0) + _varint(8) + _field(7, graph)


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/shadow", "sub/../../outside.bin"])
def test_onnx_external_data_escaping_the_model(tmp_path: Path, location: str) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.onnx").write_bytes(_onnx(location))
    line = one_line(d)
    assert (
        line
        == f"CRITICAL model.onnx: tensor 'weight' loads external data from {location!r}, outside the model directory"
    )


def test_onnx_external_data_inside_and_symlinked_out(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.onnx").write_bytes(_onnx("weights.bin"))
    (d / "weights.bin").write_bytes(b"\x00" * 16)
    assert findings(d) == []
    (d / "weights.bin").unlink()
    assert "external data 'weights.bin' is missing" in one_line(d)
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    (d / "weights.bin").symlink_to(tmp_path / "elsewhere.bin")
    lines = [f.line() for f in findings(d)]
    assert "outside the model directory" in lines[0]
    assert lines[1].startswith("HIGH weights.bin: symlink to ")
    assert lines[1].endswith("elsewhere.bin', outside the directory: loaders follow it, verify refuses it")


def test_truncated_onnx(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(_onnx("w.bin")[:-5])
    assert "truncated or not ONNX" in one_line(p)


# --- the command and the format policy ----------------------------------------------------------------


def test_scan_clean_model(cli, model_dir: Path) -> None:
    code, out, _ = cli("model", "scan", str(model_dir))
    assert code == 0
    assert out.strip().splitlines()[-1] == f"CLEAN {model_dir}: 5 files scanned, 0 findings"


def test_scan_policy_code_and_unknown_files(cli, model_dir: Path) -> None:
    (model_dir / "modeling_tiny.py").write_text("import os\n")
    (model_dir / "weights.xyz").write_bytes(b"\x00\x01")
    code, out, _ = cli("--json", "model", "scan", str(model_dir))
    assert code == 1
    res = json.loads(out)["result"]
    rules = {(f["path"], f["rule"], f["severity"]) for f in res["findings"]}
    assert rules == {("modeling_tiny.py", "code-file", "high"), ("weights.xyz", "unknown-format", "high")}
    (model_dir / "modeling_tiny.py").unlink()
    assert cli("model", "scan", str(model_dir))[0] == 1  # an unidentified file blocks (allowlist)
    (model_dir / "weights.xyz").unlink()
    assert cli("model", "scan", str(model_dir))[0] == 0
    # The format policy comes from the site config or the command line.
    assert cli("model", "scan", str(model_dir), "--allow-format", "safetensors")[0] == 1


def test_scan_missing_path(cli, tmp_path: Path) -> None:
    code, _, err = cli("model", "scan", str(tmp_path / "nope"))
    assert code == 2 and "no such file or directory" in err


def test_tokenizer_config_template(tmp_path: Path) -> None:
    p = tmp_path / "tokenizer_config.json"
    p.write_text(json.dumps({"chat_template": "{{ cycler.__init__.__globals__.os.popen('id') }}"}))
    assert one_line(p).startswith(
        "CRITICAL tokenizer_config.json: chat_template reaches for Python internals (code execution"
    )
    p.write_text(json.dumps({"chat_template": [{"name": "default", "template": SAFE_TEMPLATE}]}))
    assert findings(p) == []


def test_numpy_arrays(tmp_path: Path) -> None:
    import numpy as np

    p = tmp_path / "a.npy"
    np.save(p, np.arange(10))
    assert [f.rule for f in findings(p)] == ["format-policy"]
    assert findings(p, [*ALLOWED, "numpy"]) == []
    marker = tmp_path / "PWNED"
    np.save(p, np.array([_Payload(marker), 1], dtype=object), allow_pickle=True)
    lines = [f.line() for f in findings(p, [*ALLOWED, "numpy"])]
    assert lines[0].startswith("CRITICAL a.npy: array of Python objects")
    assert "CRITICAL a.npy: pickle imports posix.system: a callable that runs code when loaded" in lines
    assert not marker.exists()


def test_deeply_nested_inputs_do_not_crash(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(_st(b"{" + b'"a":' * 1 + b"[" * 100_000 + b"]" * 100_000 + b"}", b""))
    assert "invalid safetensors file" in one_line(p)
    t = tmp_path / "tokenizer_config.json"
    t.write_text("[" * 100_000 + "]" * 100_000)
    assert findings(t)[0].rule == "tokenizer-config"


def test_extension_registry_import_and_plain_zip(tmp_path: Path) -> None:
    p = tmp_path / "a.pkl"
    p.write_bytes(b"\x80\x02\x82\x01.")  # EXT1 1
    assert one_line(p, ["pickle"]) == (
        "HIGH a.pkl: pickle imports extension code 1 (copyreg registry): the import is not in the file and "
        "cannot be assessed"
    )
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert one_line(z) == "HIGH bundle.zip: format zip is not allowed by the site policy"


def test_weight_index_is_checked_in_addition(tmp_path: Path) -> None:
    """An index's weight_map is a reference: checked, and the shards are still scanned as files."""
    d = tmp_path / "m"
    d.mkdir()
    make_safetensors(d / "model-00001-of-00002.safetensors")
    (d / "model-00002-of-00002.safetensors").write_bytes(
        pickle.dumps(_Payload(tmp_path / "PWNED"), protocol=2)
    )
    weight_map = {
        "a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors",
        "c": "../x.bin",
    }
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    lines = [f.line() for f in findings(d)]
    assert (
        "CRITICAL model.safetensors.index.json: weight_map names '../x.bin', outside the model directory: "
        "loaders read it"
    ) in lines
    assert "HIGH model-00002-of-00002.safetensors: format pickle is not allowed by the site policy" in lines
    assert any(
        x.startswith("CRITICAL model-00002-of-00002.safetensors: pickle imports posix.system") for x in lines
    )


def test_templates_with_the_extensions_real_ones_use_are_clean(tmp_path: Path) -> None:
    tpl = (
        "{% for m in messages %}{% if loop.index > 50 %}{% break %}{% endif %}"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.content }}{% endif %}{% endfor %}"
    )
    assert scan.check_chat_template(tpl) == []
    p = tmp_path / "tokenizer_config.json"
    p.write_text(json.dumps({"chat_template": tpl}))
    assert findings(p) == []


@given(
    st.binary(max_size=600), st.sampled_from(["a.bin", "m.onnx", "x.npy", "y.npz", "z.keras", "t.nemo", "u"])
)
def test_any_bytes_under_any_name_scan_without_a_crash(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, name: str
) -> None:
    p = tmp_path_factory.getbasetemp() / name
    p.write_bytes(data)
    _, out = scan.scan_file(p, name, p.parent, ALLOWED)
    assert all(f.severity in scan.SEVERITIES for f in out)
    z = tmp_path_factory.getbasetemp() / "wrap.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(name, data)
    scan.scan_file(z, "wrap.zip", z.parent, ALLOWED)


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (
            "{% set x = [1]*1000 %}{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}",
            "steps",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "more than",
        ),
        ("{{ 'x' * 10**9 }}", "too large to judge"),
        ("{{ 2 ** 100000000 }}", "too large to judge"),
        ("{{ 'x'|center(10**9) }}", "too large to judge"),
        ("{{ 'x'.ljust(10**9) }}", "too large to judge"),
        ("{{ range(100000)|join('x'*1000000) }}", "too large to judge"),
        ("{{ ('a'*1000000)|replace('a','b'*1000000) }}", "too large to judge"),
        ("{{ '%0999999999d' % 1 }}", "too large to judge"),
        ("{{ '{:>999999999}'.format(1) }}", "too large to judge"),
    ],
)
def test_a_template_cannot_stall_or_exhaust_the_scan(tmp_path: Path, template: str, why: str) -> None:
    """Bounded in any thread (the audit runs checks in threads): HIGH 'cannot be judged', not a hang."""
    import threading

    p = tmp_path / "tokenizer_config.json"
    p.write_text(json.dumps({"chat_template": template}))
    got: list[str] = []
    t = threading.Thread(target=lambda: got.extend(f.line() for f in findings(p)))
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert len(got) == 1 and got[0].startswith("HIGH tokenizer_config.json: chat_template cannot be judged: ")
    assert why in got[0]


@pytest.mark.root
def test_every_kind_of_directory_entry_is_a_finding_never_a_crash(tmp_path: Path, cli) -> None:
    """Devices, FIFOs, sockets, symlinks in, out and dangling, directory links: each one line, never read."""
    import socket
    import stat as st_mod

    d = tmp_path / "m"
    d.mkdir()
    make_safetensors(d / "model.safetensors")
    os.mknod(d / "weights.bin", st_mod.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    os.mkfifo(d / "pipe.bin")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "sock"))
        (d / "inside.safetensors").symlink_to("model.safetensors")
        (d / "dangling.bin").symlink_to("nowhere.bin")
        (d / "etc").symlink_to("/etc")
        code, out, _ = cli("model", "scan", str(d))
    assert code == 1
    lines = out.splitlines()
    assert "HIGH weights.bin: device: a loader opening it may block or read a device; not read" in lines
    assert "HIGH pipe.bin: FIFO: a loader opening it may block or read a device; not read" in lines
    assert "HIGH sock: socket: a loader opening it may block or read a device; not read" in lines
    assert (
        "LOW inside.safetensors: symlink to 'model.safetensors' inside the directory (the target is scanned as itself)"
        in lines
    )
    assert "MEDIUM dangling.bin: symlink to 'nowhere.bin', which does not exist" in lines
    assert "HIGH etc: symlink to '/etc', outside the directory: loaders follow it, verify refuses it" in lines
    assert lines[-1].endswith(": 7 files scanned, 6 findings")


@pytest.mark.parametrize(
    "target",
    [
        "builtins.eval", "builtins.exec", "builtins.open", "builtins.getattr", "builtins.__import__",
        "__builtin__.eval", "os.system", "posix.system", "nt.system", "subprocess.Popen", "socket.create_connection",
        "runpy._run_code", "webbrowser.open", "httplib.HTTPSConnection", "requests.api.get", "aiohttp.client.ClientSession",
        "bdb.Bdb.run", "pdb.Pdb.run", "torch.hub.load", "torch._inductor.codecache.compile_file",
        "numpy.testing._private.utils.runstring", "pip.main", "shutil.rmtree", "timeit.timeit", "venv.create",
        "pydoc.pipepager", "code.InteractiveInterpreter.runcode", "cProfile.run", "profile.run", "trace.Trace.run",
        "_io.FileIO", "functools.partial", "operator.attrgetter", "operator.methodcaller", "importlib.import_module",
        "asyncio.unix_events._UnixSubprocessTransport._start", "ctypes.CDLL", "sys.exit", "types.FunctionType",
        "marshal.loads", "pickle.loads", "_pickle.loads", "linecache.getlines", "numpy.load", "torch.load",
        # the kinds of picklescan's GHSA samples
        "imaplib.IMAP4_stream", "uuid._get_command_stdout", "_pyrepl.pager.pipe_pager", "_aix_support._read_cmd_output",
        "_osx_support._read_output", "test.support.script_helper.assert_python_ok", "logging.FileHandler",
        "cloudpickle.cloudpickle._make_function", "sys.modules",
    ],
)  # fmt: skip
def test_the_peers_sample_imports_are_critical(target: str) -> None:
    """Each import the peers' published samples use runs code, files or sockets: CRITICAL, not HIGH."""
    from edgesec.models.scan.pickles import effective
    from edgesec.models.scan.policy import classify_global

    module, _, name = target.rpartition(".")
    if module.endswith((".Bdb", ".Pdb", ".InteractiveInterpreter", ".Trace", "._UnixSubprocessTransport")):
        module, _, cls = module.rpartition(".")
        name = f"{cls}.{name}"
    assert classify_global(*effective(module, name, 2)) == "critical"


def test_what_only_builds_values_is_high_not_critical() -> None:
    from edgesec.models.scan.policy import classify_global

    for module, name in (
        ("builtins", "len"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("mylib.models", "Net"),
    ):
        assert classify_global(module, name) == "high"
    for module, name in (("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")):
        assert classify_global(module, name) is None


def test_chat_template_files_are_judged_too(tmp_path: Path) -> None:
    """transformers writes chat_template.jinja (and processors chat_template.json): same check as GGUF's."""
    d = tmp_path / "m"
    d.mkdir()
    (d / "chat_template.jinja").write_text(SAFE_TEMPLATE)
    (d / "chat_template.json").write_text(json.dumps({"chat_template": SAFE_TEMPLATE}))
    assert findings(d) == []
    (d / "chat_template.jinja").write_text("{% set u='_'~'_' %}{{ cycler[u~'init'~u] }}")
    (d / "chat_template.json").write_text(
        json.dumps({"chat_template": "{{ (dict(__globals__=1)|list)[0] }}"})
    )
    lines = [f.line() for f in findings(d)]
    assert any(
        x.startswith("CRITICAL chat_template.jinja: template reaches for Python internals") for x in lines
    )
    assert any(
        x.startswith("CRITICAL chat_template.json: chat_template reaches for Python internals") for x in lines
    )


def test_a_payload_behind_a_condition_on_the_conversation_is_rendered_too() -> None:
    tpl = (
        "{% for m in messages %}{% if m.content == 'magic words' %}{% set u='_'~'_' %}"
        "{{ cycler[u~'init'~u][u~'globals'~u]['os'].popen('id') }}{% else %}{{ m.content }}{% endif %}{% endfor %}"
    )
    assert "reaches the unsafe attribute '__init__' of a type" in scan.check_chat_template(tpl)


def test_only_the_top_level_git_database_is_skipped_and_it_is_named(tmp_path: Path, cli) -> None:
    d = tmp_path / "m"
    (d / ".git" / "objects").mkdir(parents=True)
    (d / ".git" / "objects" / "ab").write_bytes(b"x\x9c\x01\x02")
    (d / "sub" / ".git").mkdir(parents=True)
    (d / "sub" / ".git" / "w.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "PWNED"), protocol=2))
    (d / ".github").mkdir()
    (d / ".github" / "x.pkl").write_bytes(pickle.dumps(_Payload(tmp_path / "PWNED"), protocol=2))
    code, out, _ = cli("--json", "model", "scan", str(d))
    res = json.loads(out)["result"]
    assert code == 1 and res["skipped"] == [".git"]
    flagged = {f["path"] for f in res["findings"] if f["severity"] == "critical"}
    assert flagged == {"sub/.git/w.bin", ".github/x.pkl"}


def test_a_pickle_whose_import_comes_after_the_header_read_is_not_onnx_data(tmp_path: Path) -> None:
    """Sniffing reads 4 KiB; an ONNX reference must not turn a longer pickle into raw tensor bytes."""
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.onnx").write_bytes(_onnx("weights.bin"))
    body = b"(lp0\nS'" + b"a" * 8000 + b"'\np1\na" + b"cos\nsystem\n(S'touch PWNED'\ntR."
    (d / "weights.bin").write_bytes(body)
    lines = [f.line() for f in findings(d)]
    assert "HIGH weights.bin: format pickle is not allowed by the site policy" in lines
    assert "CRITICAL weights.bin: pickle imports os.system: a callable that runs code when loaded" in lines
    # Text from its first byte to its last is still a pickle when it loads as one.
    (d / "weights.bin").rename(d / "vocab.txt")
    (d / "model.onnx").unlink()
    lines = [f.line() for f in findings(d)]
    assert "CRITICAL vocab.txt: pickle imports os.system: a callable that runs code when loaded" in lines
    with zipfile.ZipFile(d / "bundle.zip", "w") as zf:
        zf.writestr("vocab.txt", body)
    lines = [f.line() for f in findings(d / "bundle.zip")]
    assert (
        "CRITICAL bundle.zip:vocab.txt: pickle imports os.system: a callable that runs code when loaded"
        in lines
    )


def test_a_word_list_that_parses_as_a_pickle_by_chance_is_still_text(tmp_path: Path) -> None:
    p = tmp_path / "vocab.txt"
    p.write_text("cat\ndog\n.\nfish\n" + "word\n" * 2000)  # loads as GLOBAL at.dog, STOP
    assert findings(p) == []


def test_keras_config_module_imports_are_judged(tmp_path: Path) -> None:
    """Keras imports the ``module`` a config names (CVE-2025-1550 class): same table as pickle imports."""
    cfg = {
        "class_name": "Functional",
        "module": "keras.src.models.functional",
        "config": {
            "layers": [
                {"module": "keras.layers", "class_name": "Dense", "config": {}},
                {"module": "os", "class_name": "system", "config": {}},
                {"module": "my_layers", "class_name": "Gate", "config": {}},
            ]
        },
    }
    p = tmp_path / "model.keras"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    lines = {f.line() for f in findings(p, ["keras"])}
    assert lines == {
        "CRITICAL model.keras:config.json: Keras config imports os.system: a callable that runs code when loaded",
        "HIGH model.keras:config.json: Keras config imports my_layers.Gate: an import outside Keras",
    }


def _split_gguf(path: Path, no: int, count: int) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint16("split.no", no)
    w.add_uint16("split.count", count)
    w.add_tensor(f"blk.{no}.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_splits_are_checked_in_addition(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    _split_gguf(d / "llama-00001-of-00002.gguf", 0, 2)
    assert [f.line() for f in findings(d)] == [
        "MEDIUM llama-00001-of-00002.gguf: split GGUF sibling 'llama-00002-of-00002.gguf' is missing"
    ]
    _split_gguf(d / "llama-00002-of-00002.gguf", 1, 2)
    assert findings(d) == []
    (d / "llama-00002-of-00002.gguf").rename(d / "other.gguf")
    lines = [f.line() for f in findings(d)]
    assert "MEDIUM other.gguf: split metadata (file 1 of 2) disagrees with the file name" in lines


def test_unknown_format_severity_holds_inside_archives_too(tmp_path: Path) -> None:
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("blob.bin", os.urandom(64))
    report = scan.scan_path(z, allowed_formats=["zip"], unknown_severity="low")
    assert [f.line() for f in report.findings] == [
        "LOW bundle.zip:blob.bin: format not identified: not a format the site allows"
    ]
    assert not scan.scan_path(z, allowed_formats=["zip"], unknown_severity="low").blocking()
    assert scan.scan_path(z, allowed_formats=["zip"]).blocking()
