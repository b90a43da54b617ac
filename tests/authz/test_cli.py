"""``edgesec authz`` commands: explain, test, lint, policy init, gen (validated against Traefik's schemas)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec._data import policies_root


@pytest.fixture
def site_policy(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # type: ignore[no-untyped-def]
    """The bank example copied into a site policy directory that the site config names."""
    d = tmp_path / "site-policy"
    assert cli("authz", "policy", "init", str(d), "--example", "bank")[0] == 0
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[authz]\npolicy_dir = "{d}"\n')
    monkeypatch.setenv("EDGESEC_CONFIG", str(cfg))
    return d


@pytest.mark.parametrize(
    "argv",
    [
        ["authz", "lint"],
        ["authz", "explain", "--user", "erin", "--tenant", "branch", "--method", "GET", "--uri", "/"],
        ["authz", "test", "TABLE"],
        ["authz", "serve", "--host", "127.0.0.1", "--port", "1", "--workers", "1"],
    ],
)
def test_no_site_policy_is_refused_never_the_shipped_example(cli, tmp_path: Path, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Issue #20 attack 2: with [authz] policy_dir unset, nothing silently enforces or judges bank.csv."""
    table = tmp_path / "t.csv"
    table.write_text("user,tenant,method,uri,expect\nerin,branch,GET,/console/api/apps,allow\n")
    argv = [str(table) if a == "TABLE" else a for a in argv]
    code, out, err = cli(*argv)
    assert code == 2, (out, err)
    assert "no site policy" in err and "policy_dir" in err and "policy init" in err
    assert "Traceback" not in err and out == ""
    code, out, _ = cli("--json", *argv)
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and doc["error"]["kind"] == "config"


def test_lint_names_the_policy_it_judged(cli, site_policy: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("authz", "lint")
    assert code == 0 and f"rules of {site_policy / 'policy.csv'}" in out.replace("\n", "")
    (site_policy / "policy.csv").write_text(
        (site_policy / "policy.csv").read_text() + "p, role:ghost, branch, /v1/x, GET, allow\n"
    )
    code, out, _ = cli("--json", "authz", "lint")
    doc = json.loads(out)["result"]
    assert doc["policy"] == str(site_policy / "policy.csv")
    assert any(f["code"] == "never-matches" for f in doc["findings"]), doc


def test_explain_allow_deny_and_canonical_path(cli, site_policy: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli(
        "--json",
        "authz",
        "explain",
        "--user",
        "alice",
        "--tenant",
        "branch",
        "--method",
        "POST",
        "--uri",
        "/v1/chat-messages",
    )
    doc = json.loads(out)["result"]
    assert code == 0 and doc["allowed"] is True and doc["roles"] == ["role:teller"]
    assert doc["rule"] == ["role:teller", "branch", "/v1/chat-messages", "POST", "allow"]
    code, out, _ = cli(
        "--json",
        "authz",
        "explain",
        "--user",
        "dave",
        "--tenant",
        "branch",
        "--method",
        "DELETE",
        "--uri",
        "/audit/x/../logins",
    )
    doc = json.loads(out)["result"]
    assert doc["allowed"] is False and doc["effect"] == "deny" and doc["path"] == "/audit/logins"
    assert doc["rule"][-1] == "deny"
    code, out, _ = cli(
        "authz",
        "explain",
        "--user",
        "alice",
        "--tenant",
        "branch",
        "--method",
        "GET",
        "--uri",
        "/a/..%2fadmin",
    )
    assert code == 0 and "DENY" in out and "encoded-slash" in out
    assert f"policy: {site_policy / 'policy.csv'}" in out  # the file it judged
    code, _, err = cli("authz", "explain", "--user", "alice", "--method", "GET", "--uri", "/")
    assert code == 2 and "--tenant" in err


@pytest.mark.parametrize("site", ["bank", "clinic", "factory"])
def test_shipped_policies_pass_their_tables_and_lint_clean(cli, tmp_path: Path, site: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("authz", "policy", "init", str(tmp_path / "p"), "--example", site)
    assert code == 0, err
    code, out, err = cli(
        "--json",
        "authz",
        "test",
        str(tmp_path / "p" / "policy.tests.csv"),
        "--policy-dir",
        str(tmp_path / "p"),
    )
    doc = json.loads(out)["result"]
    assert code == 0 and doc["failed"] == 0 and len(doc["cases"]) >= 10
    assert {c["got"] for c in doc["cases"]} == {"allow", "deny"}
    code, out, _ = cli("--json", "authz", "lint", "--policy-dir", str(tmp_path / "p"))
    assert code == 0, out
    assert [f for f in json.loads(out)["result"]["findings"] if f["level"] == "error"] == []


def test_policy_table_mismatch_fails(cli, tmp_path: Path, site_policy: Path) -> None:  # type: ignore[no-untyped-def]
    table = tmp_path / "t.csv"
    table.write_text(
        "user,tenant,method,uri,expect\nalice,branch,GET,/console/api/apps,allow\n"
        "alice,branch,POST,/v1/chat-messages,allow\n"
    )
    code, out, _ = cli("authz", "test", str(table))
    assert code == 1 and "MISMATCH" in out and "1 mismatched" in out
    assert "line 2: expected allow, got deny: no rule applies (default deny)" in out
    table.write_text("alice,branch,GET,/x\n")
    code, _, err = cli("authz", "test", str(table))
    assert code == 2 and "5 columns" in err
    code, _, err = cli("authz", "test", str(tmp_path / "missing.csv"))
    assert code == 2


def test_policy_init_refuses_to_overwrite(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "site"
    assert cli("authz", "policy", "init", str(d))[0] == 0
    (d / "policy.csv").write_text("# mine\n")
    code, _, err = cli("authz", "policy", "init", str(d))
    assert code == 1 and "already" in err
    assert (d / "policy.csv").read_text() == "# mine\n"
    assert cli("authz", "policy", "init", str(tmp_path / "x"), "--example", "zoo")[0] == 2


def test_lint_finds_dead_shadowed_and_roleless(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "p"
    assert cli("authz", "policy", "init", str(d))[0] == 0
    (d / "policy.csv").write_text(
        "p, role:teller, branch, /v1/chat-messages, POST, allow\n"
        "p, role:teller, branch, /v1/chat-messages, POST, deny\n"  # shadows line 1
        "p, role:ghost, branch, /v1/x, GET, allow\n"  # nobody holds role:ghost
        "p, role:teller, branch, /v1/../admin, GET, allow\n"  # live only through '.' = any character
        "p, role:teller, branch, /v1/y, get, allow\n"  # matches no method
        "p, role:teller, branch, v1/z, GET, allow\n"  # no leading slash
        "p, role:teller, branch, /v1/a/*, GET, allow\n"
        "p, role:teller, branch, /v1/a/b, GET, allow\n"  # covered by the previous line
        "g, alice, role:teller, branch\n"
        "g, bob, role:unused, branch\n"  # bob's role grants nothing
        "p, role:teller, branch, /Admin/*, .*, deny\n"  # upper-case deny
    )
    code, out, _ = cli("--json", "authz", "lint", "--policy-dir", str(d))
    assert code == 1
    found = {(f["line"], f["code"]) for f in json.loads(out)["result"]["findings"]}
    assert (1, "shadowed") in found
    assert (3, "never-matches") in found
    assert (4, "dot-wildcard") in found and (4, "never-matches") not in found
    assert (5, "never-matches") in found
    assert (6, "never-matches") in found
    assert (8, "redundant") in found
    assert (10, "empty-role") in found
    assert (11, "deny-case") in found


def test_broken_policy_is_one_line_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "p"
    assert cli("authz", "policy", "init", str(d))[0] == 0
    (d / "policy.csv").write_bytes(b"p, role:x\n\xff\xfe")
    for cmd in (["lint"], ["explain", "--user", "a", "--tenant", "b", "--method", "GET", "--uri", "/"]):
        code, _out, err = cli("authz", *cmd, "--policy-dir", str(d))
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


GEN = [
    "--server-name",
    "dify.branch.local",
    "--backend",
    "http://127.0.0.1:8080",
    "--cert",
    "/etc/edgesec/proxy.crt",
    "--key",
    "/etc/edgesec/proxy.key",
]


def test_gen_traefik_validates_against_the_schemas(cli, tmp_path: Path, conformance: Path) -> None:  # type: ignore[no-untyped-def]
    out_dir = tmp_path / "traefik"
    code, _out, err = cli(
        "authz", "gen", "traefik", *GEN, "--trusted-ip", "10.0.0.0/8", "--out", str(out_dir)
    )
    assert code == 0, err
    dyn = yaml.safe_load((out_dir / "edgesec-dynamic.yml").read_text())
    static = yaml.safe_load((out_dir / "edgesec-static.yml").read_text())
    dyn_schema = json.loads((conformance / "traefik" / "traefik-v3-file-provider.schema.json").read_text())
    static_schema = json.loads((conformance / "traefik" / "traefik-v3-static.schema.json").read_text())
    jsonschema.validate(dyn, dyn_schema)
    jsonschema.validate(static, static_schema)
    fa = dyn["http"]["middlewares"]["edgesec-forward-auth"]["forwardAuth"]
    assert fa["trustForwardHeader"] is True
    assert fa["authResponseHeaders"] == ["X-User-ID", "X-Roles", "X-Tenant", "X-Auth-Method"]
    assert fa["address"] == "http://127.0.0.1:9091/auth"
    assert "X-Forwarded-Tls-Client-Cert" in fa["authRequestHeaders"]
    assert dyn["http"]["middlewares"]["edgesec-client-cert"]["passTLSClientCert"]["pem"] is True
    router = dyn["http"]["routers"]["edgesec-app"]
    assert router["middlewares"] == ["edgesec-strip", "edgesec-client-cert", "edgesec-forward-auth"]
    strip = dyn["http"]["middlewares"]["edgesec-strip"]["headers"]["customRequestHeaders"]
    assert {"X_User_ID", "X-User_ID", "X_Roles", "X-HTTP-Method-Override", "Connection"} <= set(strip)
    assert set(strip.values()) == {""}
    # The static config names the dynamic file this command wrote, keeps the listen address it was
    # given (the default 0.0.0.0:443 here) and never phones home.
    assert static["providers"]["file"]["filename"] == str(out_dir.absolute() / "edgesec-dynamic.yml")
    assert static["entryPoints"]["websecure"]["address"] == "0.0.0.0:443"
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    opts = dyn["tls"]["options"][router["tls"]["options"]]
    assert opts["clientAuth"]["clientAuthType"] == "RequireAndVerifyClientCert"
    assert opts["clientAuth"]["caFiles"][0].endswith("ca-bundle.pem")
    assert static["entryPoints"]["websecure"]["forwardedHeaders"]["trustedIPs"] == ["10.0.0.0/8"]
    # A mangled config must fail the same validation (the check can fail).
    dyn["http"]["middlewares"]["edgesec-forward-auth"]["forwardAuth"]["trustForwardHeader"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dyn, dyn_schema)
    code, _, err = cli("authz", "gen", "traefik", *GEN, "--out", str(out_dir))
    assert code == 1 and "overwrite" in err


def test_gen_uses_configured_header_names(cli, tmp_path: Path, home: Path, site_ca) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text('[authz]\nport = 9500\n[authz.headers]\nuser = "X-Edge-User"\n')
    cfg.chmod(0o600)
    ca = str(site_ca.files / "ca-bundle.pem")
    code, out, err = cli("--config", str(cfg), "authz", "gen", "caddy", *GEN, "--ca", ca)
    assert code == 0, err
    assert "copy_headers X-Edge-User X-Roles X-Tenant X-Auth-Method" in out
    assert "request_header -X-Edge-User" in out and "127.0.0.1:9500" in out
    code, out, _ = cli("--config", str(cfg), "authz", "gen", "nginx", *GEN)
    assert "auth_request_set $edgesec_x_edge_user $upstream_http_x_edge_user;" in out
    assert "proxy_set_header X-Edge-User $edgesec_x_edge_user;" in out


@pytest.mark.parametrize(
    "bad",
    [
        ["--backend", "http://127.0.0.1:8080/path"],
        ["--server-name", "a b"],
        ["--backend", "ftp://x"],
        ["--cert", "/tmp/a;b"],
        ["--listen", "nope"],
    ],
)
def test_gen_rejects_bad_input(cli, bad: list[str]) -> None:  # type: ignore[no-untyped-def]
    args = list(GEN)
    for i in range(0, len(bad), 2):
        if bad[i] in args:
            args[args.index(bad[i]) + 1] = bad[i + 1]
        else:
            args += bad[i : i + 2]
    code, _, err = cli("authz", "gen", "caddy", *args)
    assert code == 2 and "Traceback" not in err


@pytest.mark.real("caddy")
def test_generated_caddyfile_is_accepted_by_caddy(cli, tmp_path: Path, site_ca) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "Caddyfile"
    ca = str(site_ca.files / "ca-bundle.pem")
    assert cli("authz", "gen", "caddy", *GEN, "--ca", ca, "--out", str(out))[0] == 0
    p = subprocess.run(
        ["caddy", "adapt", "--config", str(out), "--adapter", "caddyfile"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert "require_and_verify" in p.stdout
    # Every certificate of the bundle is trusted (Caddy 2.6 reads only the first one of a file).
    bundle = x509.load_pem_x509_certificates((site_ca.files / "ca-bundle.pem").read_bytes())
    assert len(bundle) == 2
    for c in bundle:
        assert base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() in p.stdout
    # No bundle to read: a one-line error, nothing written.
    code, _, err = cli(
        "authz", "gen", "caddy", *GEN, "--ca", str(tmp_path / "none.pem"), "--out", str(tmp_path / "C2")
    )
    assert code == 2 and "client CA bundle" in err and not (tmp_path / "C2").exists()


def test_cli_subprocess_once(tmp_path: Path) -> None:
    """The real console entry point, once, in a subprocess."""
    exe = shutil.which("edgesec")
    argv = [exe] if exe else [sys.executable, "-m", "edgesec"]
    p = subprocess.run(
        [
            *argv,
            "authz",
            "test",
            str(policies_root() / "casbin" / "clinic.tests.csv"),
            "--policy-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "model.conf" in p.stderr  # the empty dir has no policy
    p = subprocess.run(
        [
            *argv,
            "--json",
            "authz",
            "explain",
            "--user",
            "dr-chen",
            "--tenant",
            "clinic",
            "--method",
            "POST",
            "--uri",
            "/v1/chat-messages",
        ],
        capture_output=True,
        text=True,
        env={
            "EDGESEC_HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
    )
    # No site policy configured: refused, never answered from the shipped bank example.
    doc = json.loads(p.stdout)
    assert (
        p.returncode == 2 and doc["error"]["kind"] == "config" and "no site policy" in doc["error"]["message"]
    )


def test_serve_on_a_busy_port_is_one_line(cli, site_policy: Path) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code, _, err = cli("authz", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    assert code == 1 and "cannot listen" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", 24.0),  # neither set: pki's default
        ("[pki]\ncrl_grace_hours = 2\n", 2.0),  # authz follows pki
        ("[pki]\ncrl_grace_hours = 2\n[authz]\ncrl_grace_hours = 0.5\n", 0.5),  # authz's own wins
    ],
)
def test_authz_crl_grace_falls_back_to_pki(tmp_path: Path, home: Path, text: str, want: float) -> None:
    from edgesec.authz.cli import authz_settings
    from edgesec.config import load_config

    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(text)
    cfg.chmod(0o600)
    assert authz_settings(load_config(cfg, home)).crl_grace_hours == want


def test_a_matcher_calling_an_undefined_function_does_not_load(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue #20 section 9: it linted clean, served ready, then answered every request 403, and
    `authz test` called it "a bug in edgesec" (exit 1). It is input: exit 2, naming the model."""
    d = tmp_path / "p"
    assert cli("authz", "policy", "init", str(d))[0] == 0
    model = d / "model.conf"
    model.write_text(model.read_text().replace("keyMatch2(r.obj, p.obj) &&", "undefinedFn(r.obj, p.obj) &&"))
    assert "undefinedFn(r.obj" in model.read_text()
    for argv in (
        ["lint"],
        ["test", str(d / "policy.tests.csv")],
        ["explain", "--user", "alice", "--tenant", "branch", "--method", "GET", "--uri", "/"],
    ):
        code, _out, err = cli("authz", *argv, "--policy-dir", str(d))
        assert code == 2, (argv, err)
        assert "undefinedFn" in err and str(model) in err and "bug in edgesec" not in err, err
