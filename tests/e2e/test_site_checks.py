"""The cross-part checks on built systems: what passes, and each way a site goes wrong."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgesec.authz.gen import (
    ProxySite,
    render_caddy,
    render_nginx,
    render_traefik_dynamic,
    render_traefik_static,
)
from edgesec.authz.proxyconf import SiteTrust, check_caddy, check_nginx, check_traefik
from edgesec.checks.families.auditing import (
    AuditdImmutable,
    Pipeline,
    Retention,
    TrailIntact,
    cron_days,
    logrotate_days,
)
from edgesec.checks.families.authz import Policy, ProxyConfig, ReadyZ
from edgesec.checks.interface import CheckContext, Status
from edgesec.checks.probes import BuiltSystem, CommandResult, FixedClock, LiveSystem
from edgesec.checks.profiles import available_profiles, load_profile
from edgesec.config import LoadedConfig, Settings

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
HOME = "/var/lib/edgesec"
TRUST = f"{HOME}/trust/ca-bundle.pem"
AUTH = "http://127.0.0.1:9100"


def ca_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


SITE_CA = ca_pem("Site Root")
FOREIGN_CA = ca_pem("Someone Else")


def settings(**sections: dict[str, Any]) -> LoadedConfig:
    return LoadedConfig(Settings.model_validate(sections), None, Path(HOME), "test")


def ctx(
    system: Any, profile: str = "bank", cfg: LoadedConfig | None = None, params: dict[str, Any] | None = None
) -> CheckContext:
    return CheckContext(
        system=system,
        clock=FixedClock(NOW),
        config=cfg or settings(authz={"url": AUTH, "policy_dir": "/etc/edgesec/policy"}),
        profile=profile,
        # As the runner builds it: the shipped profile's rules (data), with the test's own on top.
        params={
            **(load_profile(profile).params() if profile in available_profiles() else {}),
            **(params or {}),
        },
    )


def statuses(findings: Any) -> list[str]:
    return [f.status.value for f in findings]


def proxy_site() -> ProxySite:
    return ProxySite(
        server_name="app.bank.test",
        backend="http://127.0.0.1:3000",
        auth_url=AUTH,
        ca_file=TRUST,
        cert_file="/etc/edgesec/proxy/fullchain.pem",
        key_file="/etc/edgesec/proxy/key.pem",
        listen="0.0.0.0:443",
    )


def reader(files: dict[str, str]) -> Any:
    return files.get


TRUSTED = SiteTrust.from_pem(SITE_CA, AUTH)


# -- proxy configs -----------------------------------------------------------------------------------


def nginx_files(server_block: str, ca: str = SITE_CA) -> dict[str, str]:
    main = "events {}\nhttp {\n    include /etc/nginx/conf.d/*.conf;\n}\n"
    return {"/etc/nginx/nginx.conf": main, "/etc/nginx/conf.d/edgesec.conf": server_block, TRUST: ca}


def nginx_glob(files: dict[str, str]) -> Any:
    import fnmatch

    return lambda pattern: sorted(p for p in files if fnmatch.fnmatchcase(p, pattern))


def test_generated_nginx_config_passes() -> None:
    files = nginx_files(render_nginx(proxy_site()))
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert rep.issues == [] and rep.routes == 1
    assert rep.files == ["/etc/nginx/nginx.conf", "/etc/nginx/conf.d/edgesec.conf"]


def test_internal_balancer_may_pass_the_front_proxys_headers_on() -> None:
    """The loopback load balancer in front of the authz replicas forwards what the front proxy set: copying
    X-Forwarded-Uri there is not a client's choice. The same line in the app's server is."""
    balancer = (
        "server {\n    listen 127.0.0.1:9100;\n    location / {\n"
        "        proxy_set_header X-Forwarded-Uri $http_x_forwarded_uri;\n"
        "        proxy_pass http://edgesec_authz;\n    }\n}\n"
    )
    files = nginx_files(render_nginx(proxy_site()) + balancer)
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert rep.issues == [], rep.issues
    exposed = render_nginx(proxy_site()) + balancer.replace("127.0.0.1:9100", "0.0.0.0:8080")
    files = nginx_files(exposed)
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert any("copies the client's own x-forwarded-uri" in i.message for i in rep.issues), rep.issues


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (("ssl_verify_client on;", "ssl_verify_client optional;"), "ssl_verify_client is optional"),
        (("        auth_request /_edgesec_auth;\n", ""), "without auth_request"),
        (("        auth_request /_edgesec_auth;\n", "        auth_request off;\n"), "without auth_request"),
        (("        proxy_set_header X-User-ID $edgesec_x_user_id;\n", ""), "client-sent X-User-ID"),
        (("    ssl_client_certificate", "    #ssl_client_certificate"), "no ssl_client_certificate"),
        (("listen 0.0.0.0:443 ssl;", "listen 0.0.0.0:80;"), "without TLS"),
        # The issue's attacks: a hand-written copy of the client's own header, underscore spellings kept,
        # a method override or a client X-Forwarded-Prefix passed to the backend.
        (
            ("proxy_set_header X-User-ID $edgesec_x_user_id;", "proxy_set_header X-User-ID $http_x_user_id;"),
            "copies the client's own x-user-id",
        ),
        (
            ("proxy_set_header X-Roles $edgesec_x_roles;", 'proxy_set_header X-Roles "${http_X_Roles},x";'),
            "copies the client's own x-roles",
        ),
        (
            (
                "proxy_set_header X-Forwarded-For $remote_addr;\n        proxy_set_header X-Forwarded-Tls-Client-Cert",
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                "        proxy_set_header X-Forwarded-Tls-Client-Cert",
            ),
            "copies the client's own x-forwarded-for",
        ),
        (("underscores_in_headers off;", "underscores_in_headers on;"), "underscores_in_headers on"),
        (("ignore_invalid_headers on;", "ignore_invalid_headers off;"), "ignore_invalid_headers off"),
        (
            (
                '        proxy_set_header X-HTTP-Method-Override "";\n        proxy_set_header X-HTTP-Method "";\n'
                '        proxy_set_header X-Method-Override "";\n        proxy_pass',
                "        proxy_pass",
            ),
            "client-sent X-HTTP-Method-Override",
        ),
        (
            (
                '        proxy_set_header X-Forwarded-Prefix "";\n        proxy_set_header X-Forwarded-Uri "";\n'
                '        proxy_set_header X-Forwarded-Method "";\n        proxy_set_header X-Forwarded-Ssl "";\n'
                '        proxy_set_header X-Forwarded-Tls-Client-Cert-Info "";\n        proxy_set_header X-Real-IP "";\n'
                '        proxy_set_header X-Original-URI "";',
                '        proxy_set_header X-Original-URI "";',
            ),
            "client-sent X-Forwarded-Prefix",
        ),
    ],
)
def test_nginx_weaknesses_are_named(edit: tuple[str, str], expect: str) -> None:
    block = render_nginx(proxy_site())
    assert edit[0] in block
    files = nginx_files(block.replace(*edit))
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert rep.failed and any(expect in i.message for i in rep.issues), rep.issues
    assert all(":" in i.where for i in rep.issues)


def test_nginx_location_added_later_without_auth_is_caught() -> None:
    block = (
        render_nginx(proxy_site()).rstrip().rstrip("}")
        + "    location /debug/ {\n        proxy_pass http://127.0.0.1:3000;\n    }\n}\n"
    )
    files = nginx_files(block)
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert [i.message for i in rep.issues if i.level == "fail"] == [
        "location /debug/ is served without auth_request (no ForwardAuth)"
    ]


def test_a_foreign_ca_in_the_client_ca_file_fails() -> None:
    files = nginx_files(render_nginx(proxy_site()), ca=SITE_CA + FOREIGN_CA)
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert any("not the site CA" in i.message for i in rep.issues)


def test_unbalanced_nginx_config_is_one_line() -> None:
    files = {"/etc/nginx/nginx.conf": "http { server { listen 443 ssl; }"}
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert rep.failed and "cannot parse" in rep.issues[0].message


def _b64(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


def test_caddy_trust_every_certificate_of_the_bundle() -> None:
    """Inline trusted_ca_cert lines are judged like a file; a bundle file Caddy 2.6 reads only partly warns."""
    second = ca_pem("Site Intermediate")
    trusted = SiteTrust.from_pem(SITE_CA + second, AUTH)
    site = replace(proxy_site(), ca_certs=(_b64(SITE_CA), _b64(second)))
    text = render_caddy(site)
    assert text.count("trusted_ca_cert ") == 2 and "trusted_ca_cert_file" not in text
    rep = check_caddy("/etc/caddy/Caddyfile", reader({"/etc/caddy/Caddyfile": text}), trusted)
    assert rep.issues == [], rep.issues
    bad = replace(proxy_site(), ca_certs=(_b64(SITE_CA), _b64(FOREIGN_CA)))
    rep = check_caddy("/etc/caddy/Caddyfile", reader({"/etc/caddy/Caddyfile": render_caddy(bad)}), trusted)
    assert rep.failed and any("not the site CA" in i.message for i in rep.issues), rep.issues
    files = {"/etc/caddy/Caddyfile": render_caddy(proxy_site()), TRUST: SITE_CA + second}
    rep = check_caddy("/etc/caddy/Caddyfile", reader(files), trusted)
    assert not rep.failed and any("reads only the first certificate" in i.message for i in rep.issues)


def test_generated_caddyfile_passes_and_weaknesses_fail() -> None:
    text = render_caddy(proxy_site())
    rep = check_caddy("/etc/caddy/Caddyfile", reader({"/etc/caddy/Caddyfile": text, TRUST: SITE_CA}), TRUSTED)
    assert rep.issues == [] and rep.routes == 1
    for edit, expect in [
        (("mode require_and_verify", "mode request"), "not require_and_verify"),
        (("\t\trequest_header -X-Roles\n", ""), "X-Roles are not stripped"),
        (("\t\trequest_header -X_User_ID\n", ""), "X_User_ID are not stripped"),
        (("\t\trequest_header -X-HTTP-Method-Override\n", ""), "X-HTTP-Method-Override are not stripped"),
        (("\t\trequest_header -Connection\n", ""), "Connection are not stripped"),
        (("\tauto_https off\n", ""), "automatic HTTPS is not off"),
        (("forward_auth http", "reverse_proxy http"), "no forward_auth"),
    ]:
        bad = text.replace(*edit)
        rep = check_caddy(
            "/etc/caddy/Caddyfile", reader({"/etc/caddy/Caddyfile": bad, TRUST: SITE_CA}), TRUSTED
        )
        assert any(expect in i.message for i in rep.issues), (edit, rep.issues)


def traefik_files(dynamic: str, static: str) -> dict[str, str]:
    return {"/etc/traefik/dynamic/edgesec.yml": dynamic, "/etc/traefik/traefik.yml": static, TRUST: SITE_CA}


def test_generated_traefik_config_passes_and_weaknesses_fail() -> None:
    pytest.importorskip("yaml")
    site = proxy_site()
    dyn = render_traefik_dynamic(site)
    static = render_traefik_static(site, "/etc/traefik/dynamic/edgesec.yml")
    files = traefik_files(dyn, static)
    rep = check_traefik(
        ["/etc/traefik/dynamic/edgesec.yml"], "/etc/traefik/traefik.yml", reader(files), TRUSTED
    )
    assert rep.issues == [] and rep.routes == 1
    # The listen address is kept (not widened to every interface), and nothing phones home.
    assert 'address: "0.0.0.0:443"' in static and "checkNewVersion: false" in static
    assert "trustedIPs" not in static  # no peer may set X-Forwarded-* unless one is named
    named = render_traefik_static(
        replace(site, trusted_ips=("10.0.0.5/32",)), "/etc/traefik/dynamic/edgesec.yml"
    )
    rep = check_traefik(
        ["/etc/traefik/dynamic/edgesec.yml"],
        "/etc/traefik/traefik.yml",
        reader(traefik_files(dyn, named)),
        TRUSTED,
    )
    assert rep.issues == []
    cases = [
        (dyn.replace('"edgesec-forward-auth"\n', ""), static, "no forwardAuth middleware"),
        (dyn, named.replace('"10.0.0.5/32"', '"0.0.0.0/0"'), "effectively anyone"),
        (dyn, static.replace("checkNewVersion: false", "checkNewVersion: true"), "checkNewVersion"),
        (dyn, static.replace("  checkNewVersion: false\n", ""), "checkNewVersion is not false"),
        (dyn, static.replace("sendAnonymousUsage: false", "sendAnonymousUsage: true"), "sendAnonymousUsage"),
        # The underscore twins of the identity headers, and the forwarded URI authz decides on.
        (dyn.replace('          X_User_ID: ""\n', ""), static, "X_User_ID are not deleted"),
        (dyn.replace('          X-Forwarded-Uri: ""\n', ""), static, "X-Forwarded-Uri are not deleted"),
        (dyn.replace('        - "edgesec-strip"\n', ""), static, "are not deleted"),
        (
            dyn.replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven"),
            static,
            "not RequireAndVerifyClientCert",
        ),
    ]
    for d, s, expect in cases:
        files = traefik_files(d, s)
        rep = check_traefik(
            ["/etc/traefik/dynamic/edgesec.yml"], "/etc/traefik/traefik.yml", reader(files), TRUSTED
        )
        assert any(expect in i.message for i in rep.issues), (expect, rep.issues)


def test_proxy_check_finds_running_proxies_through_proc() -> None:
    files = nginx_files(render_nginx(proxy_site()))
    files["/proc/4242/cmdline"] = "nginx: master process /usr/sbin/nginx -c /etc/nginx/nginx.conf"
    files["/proc/4243/cmdline"] = "nginx: worker process"
    files["/proc/77/cmdline"] = "caddy\0run\0--config\0/etc/caddy/Caddyfile\0--adapter\0caddyfile\0"
    files["/etc/caddy/Caddyfile"] = render_caddy(proxy_site())
    out = list(ProxyConfig().run(ctx(BuiltSystem(files=files))))
    assert statuses(out) == ["PASS", "PASS"]
    assert {f.evidence["kind"] for f in out} == {"nginx", "caddy"}
    # Break one: the finding names the file and line.
    files["/etc/caddy/Caddyfile"] = files["/etc/caddy/Caddyfile"].replace(
        "mode require_and_verify", "mode request"
    )
    out = list(ProxyConfig().run(ctx(BuiltSystem(files=files))))
    fails = [f for f in out if f.status is Status.FAIL]
    assert len(fails) == 1 and "/etc/caddy/Caddyfile:" in fails[0].message


def test_proxy_check_skips_without_proxies() -> None:
    assert statuses(ProxyConfig().run(ctx(BuiltSystem()))) == ["SKIP"]


# -- readyz ------------------------------------------------------------------------------------------

CURL = ("curl", "-sS", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}", f"{AUTH}/readyz")


def test_readyz_states() -> None:
    ready = json.dumps({"ready": True, "policy": {"generation": 3, "rules": 21}, "trust": {"ok": True}})
    out = list(ReadyZ().run(ctx(BuiltSystem(commands={CURL: ready + "\n200"}))))
    assert statuses(out) == ["PASS"] and "generation 3" in out[0].message
    stale = json.dumps(
        {"ready": False, "policy": {"generation": 1}, "trust": {"ok": False, "error": "CRL expired"}}
    )
    out = list(ReadyZ().run(ctx(BuiltSystem(commands={CURL: stale + "\n503"}))))
    assert statuses(out) == ["FAIL"] and "CRL expired" in out[0].message
    refused = CommandResult(CURL, 7, "", "curl: (7) Failed to connect")
    assert statuses(ReadyZ().run(ctx(BuiltSystem(commands={CURL: refused})))) == ["FAIL"]
    assert statuses(ReadyZ().run(ctx(BuiltSystem(), cfg=settings()))) == ["SKIP"]
    remote = settings(authz={"url": "http://10.1.2.3:9100"})
    assert statuses(ReadyZ().run(ctx(BuiltSystem(), cfg=remote))) == ["SKIP"]


# -- policy (real files, real edgesec commands) -------------------------------------------------------


@pytest.fixture
def policy_dir(cli: Any, tmp_path: Path) -> Path:
    d = tmp_path / "policy"
    code, _, err = cli("authz", "policy", "init", str(d), "--example", "bank")
    assert code == 0, err
    return d


def test_policy_check_passes_the_shipped_bank_policy(policy_dir: Path) -> None:
    cfg = settings(authz={"policy_dir": str(policy_dir)})
    out = list(Policy().run(ctx(LiveSystem(), cfg=cfg)))
    assert statuses(out) == ["PASS"], [f.message for f in out]
    assert out[0].evidence["test_table"]["cases"] == 20


def test_policy_check_catches_allow_by_default_catch_all_and_a_broken_table(policy_dir: Path) -> None:
    cfg = settings(authz={"policy_dir": str(policy_dir)})
    model = policy_dir / "model.conf"
    model.write_text(
        model.read_text().replace(
            "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))",
            "e = !some(where (p.eft == deny))",
        )
    )
    pol = policy_dir / "policy.csv"
    pol.write_text(pol.read_text() + "p, role:teller, branch, /*, .*, allow\n")
    msgs = [f.message for f in Policy().run(ctx(LiveSystem(), cfg=cfg)) if f.status is Status.FAIL]
    assert any("is not default-deny" in m for m in msgs)
    assert any("role:teller is allowed everything" in m for m in msgs)
    assert any("test table line" in m and "expected deny" in m for m in msgs), msgs


def test_policy_check_without_authz_skips() -> None:
    assert statuses(Policy().run(ctx(BuiltSystem(), cfg=settings()))) == ["SKIP"]


# -- auditing --------------------------------------------------------------------------------------


def test_retention_rules_by_profile() -> None:
    archive = "/var/log/edgesec/archive"
    base = {archive + "/2026/05/01/audit.log": "x"}
    assert statuses(Retention().run(ctx(BuiltSystem(files=base)))) == ["PASS"]
    short = {**base, "/etc/logrotate.d/edgesec": f"{archive}/*/*/*/*.log {{\n  daily\n  rotate 90\n}}\n"}
    out = list(Retention().run(ctx(BuiltSystem(files=short))))
    assert statuses(out) == ["FAIL"] and "91 days" in out[0].message
    # 6 months is enough for MLPS-only profiles, not for PCI DSS.
    half = {**base, "/etc/tmpfiles.d/edgesec.conf": f"d {archive} 0700 root root 200d\n"}
    assert statuses(Retention().run(ctx(BuiltSystem(files=half), profile="factory"))) == ["PASS"]
    assert statuses(Retention().run(ctx(BuiltSystem(files=half), profile="bank"))) == ["FAIL"]
    cfg = settings(auditing={"retention_days": 100})
    assert (
        "retention_days is 100" in next(iter(Retention().run(ctx(BuiltSystem(files=base), cfg=cfg)))).message
    )
    assert statuses(Retention().run(ctx(BuiltSystem(files=base), profile="baseline"))) == ["SKIP"]


def test_deletion_rule_parsers() -> None:
    assert logrotate_days("weekly\n/var/log/x/*.log {\n rotate 52\n}\n", "/var/log/x") == [
        (371, "logrotate /var/log/x/*.log: 52 rotations x 7 d")
    ]
    assert logrotate_days("/var/log/other/*.log {\n rotate 1\n}\n", "/var/log/x") == []
    assert cron_days("0 3 * * * root find /var/log/x -type f -mtime +30 -delete\n", "/var/log/x")[0][0] == 30


AUDITCTL = ("auditctl", "-s")


def test_auditd_immutable() -> None:
    procs = {"/proc/900/comm": "auditd\n"}
    locked = BuiltSystem(files=procs, commands={AUDITCTL: "enabled 2\nfailure 1\npid 900\n"})
    assert statuses(AuditdImmutable().run(ctx(locked))) == ["PASS"]
    mutable = BuiltSystem(files=procs, commands={AUDITCTL: "enabled 1\nfailure 1\npid 900\n"})
    assert statuses(AuditdImmutable().run(ctx(mutable))) == ["FAIL"]
    not_root = BuiltSystem(files={**procs, "/etc/audit/rules.d/99-finalize.rules": "-e 2\n"})
    assert statuses(AuditdImmutable().run(ctx(not_root))) == ["WARN"]
    assert statuses(AuditdImmutable().run(ctx(BuiltSystem()))) == ["FAIL"]
    assert statuses(AuditdImmutable().run(ctx(BuiltSystem(), profile="baseline"))) == ["SKIP"]


class NoProcesses(LiveSystem):
    """The real host, minus its process table: only the configs a test names are judged."""

    def glob(self, pattern: str) -> list[str]:
        return [] if pattern.startswith("/proc/") else super().glob(pattern)


def _edgesec(cfg: LoadedConfig, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "edgesec", "--json", "--home", str(cfg.home), *args)


def test_trail_check_reads_the_verifier_answer() -> None:
    cfg = settings()
    trail = f"{HOME}/audit"
    argv = _edgesec(cfg, "auditlog", "verify", "--trail", trail)
    ok = json.dumps(
        {
            "ok": True,
            "result": {"ok": True, "records": 40, "first_seq": 1, "head_seq": 40, "checkpoints_checked": 1},
        }
    )
    cp = json.dumps({"seq": 38, "created": "2026-11-29T08:00:00Z"})
    files = {f"{trail}/trail.jsonl": "{}", f"{trail}/checkpoints/000000000038.json": cp}
    out = list(TrailIntact().run(ctx(BuiltSystem(files=files, commands={argv: ok}), cfg=cfg)))
    assert statuses(out) == ["PASS"] and "2 record(s) since" in out[0].message
    old = json.dumps({"seq": 38, "created": "2026-11-20T08:00:00Z"})
    out = list(
        TrailIntact().run(
            ctx(
                BuiltSystem(
                    files={**files, f"{trail}/checkpoints/000000000038.json": old}, commands={argv: ok}
                ),
                cfg=cfg,
            )
        )
    )
    assert statuses(out) == ["WARN"]
    bad = CommandResult(
        argv, 1, json.dumps({"ok": False, "error": {"message": "record 7 was edited (trail.jsonl:7)"}})
    )
    out = list(TrailIntact().run(ctx(BuiltSystem(files=files, commands={argv: bad}), cfg=cfg)))
    assert statuses(out) == ["FAIL"] and "record 7 was edited" in out[0].message
    assert statuses(TrailIntact().run(ctx(BuiltSystem(), cfg=cfg))) == ["SKIP"]


def test_trail_evidence_does_not_change_because_the_audit_appended_to_it() -> None:
    """Issue #20 section 9: every audit appends to the trail, so its record count is a counter, not
    "changed evidence" in the next run's changes."""
    from edgesec.checks.result import diff

    cfg = settings()
    trail = f"{HOME}/audit"
    argv = _edgesec(cfg, "auditlog", "verify", "--trail", trail)
    cp = json.dumps({"seq": 38, "created": "2026-11-29T08:00:00Z"})
    files = {f"{trail}/trail.jsonl": "{}", f"{trail}/checkpoints/000000000038.json": cp}
    results = []
    for n in (40, 41):
        answer = {"ok": True, "records": n, "first_seq": 1, "head_seq": n, "checkpoints_checked": 1}
        system = BuiltSystem(files=files, commands={argv: json.dumps({"ok": True, "result": answer})})
        (f,) = TrailIntact().run(ctx(system, cfg=cfg))
        assert f.evidence  # the comparison below is over real evidence
        results.append({"checks": [{"id": f.check_id, "status": f.status.value, "findings": [f.to_dict()]}]})
    changes = diff(results[0], results[1], source="test")
    assert changes["changed_evidence"] == [] and changes["status_changes"] == []
    # The same runs with a change outside the counters are reported: the comparison can see one.
    edited = json.loads(json.dumps(results[1]))
    edited["checks"][0]["findings"][0]["evidence"]["edited"] = True
    assert diff(results[0], edited, source="test")["changed_evidence"]


@pytest.mark.real("syslog-ng")
def test_pipeline_check_on_a_real_generated_config(cli: Any, tmp_path: Path, home: Path) -> None:
    # syslog-ng --syntax-only opens the TLS files: give it real ones.
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "ca.pem").write_text(SITE_CA)
    tls = [
        "--ca",
        str(tmp_path / "ca.pem"),
        "--cert",
        str(tmp_path / "ca.pem"),
        "--key",
        str(tmp_path / "key.pem"),
    ]
    code, _, err = cli(
        "auditlog", "gen", "syslog-ng", "--out", str(tmp_path / "sng"), "--audit-log", "",
        "--buffer-dir", str(tmp_path / "buf"), *tls,
    )  # fmt: skip
    assert code == 0, err
    conf = tmp_path / "sng" / "syslog-ng.conf"
    cfg = LoadedConfig(Settings(), None, home, "test")
    params = {"auditing.pipeline": {"syslog-ng_configs": [str(conf)]}}
    out = list(Pipeline().run(ctx(NoProcesses(), cfg=cfg, params=params)))
    assert statuses(out) == ["PASS"], [f.message for f in out]
    good = conf.read_text()
    conf.write_text(good.replace("peer-verify(yes)", "peer-verify(no)"))
    out = list(Pipeline().run(ctx(NoProcesses(), cfg=cfg, params=params)))
    assert [f.status.value for f in out] == ["FAIL"] and "[tls-no-verify]" in out[0].message
    conf.write_text(good.replace("destination d_archive {", "destination d_archive {{"))
    out = list(Pipeline().run(ctx(NoProcesses(), cfg=cfg, params=params)))
    assert "FAIL" in statuses(out) and any("--syntax-only rejects" in f.message for f in out)
    other = LoadedConfig(
        Settings.model_validate({"auditing": {"trail_dir": str(tmp_path / "elsewhere")}}), None, home, "t"
    )
    out = list(Pipeline().run(ctx(NoProcesses(), cfg=other, params=params)))
    assert [f.message for f in out] == [
        f"no running syslog-ng pipeline reads this host's trail {tmp_path}/elsewhere/trail.jsonl"
    ]


# -- whatever the file holds, the readers answer with findings, never a crash -------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CONFIG_TEXT = st.text(
    alphabet=st.sampled_from(list("server location listen ssl auth_request{};#\"'\n\t /:._-\\")), max_size=300
)


@given(CONFIG_TEXT)
def test_nginx_reader_never_crashes(text: str) -> None:
    files = {"/etc/nginx/nginx.conf": text}
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert all(i.level in ("fail", "warn") for i in rep.issues)


@given(CONFIG_TEXT)
def test_caddy_reader_never_crashes(text: str) -> None:
    rep = check_caddy("/etc/caddy/Caddyfile", reader({"/etc/caddy/Caddyfile": text}), TRUSTED)
    assert all(i.level in ("fail", "warn") for i in rep.issues)


@given(st.text(max_size=300))
def test_traefik_reader_never_crashes(text: str) -> None:
    pytest.importorskip("yaml")
    files = {"/etc/traefik/dyn.yml": text, "/etc/traefik/traefik.yml": text}
    rep = check_traefik(["/etc/traefik/dyn.yml"], "/etc/traefik/traefik.yml", reader(files), TRUSTED)
    assert all(i.level in ("fail", "warn") for i in rep.issues)


TRAEFIK_KEYS = st.sampled_from(
    ["http", "routers", "middlewares", "services", "tls", "options", "default", "clientAuth", "caFiles",
     "clientAuthType", "forwardAuth", "chain", "trustForwardHeader", "entryPoints", "forwardedHeaders",
     "trustedIPs", "insecure", "providers", "file", "filename", "r1", "m1"]
)  # fmt: skip
TRAEFIK_DOCS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRAEFIK_KEYS, inner, max_size=4),
    max_leaves=25,
)


@given(TRAEFIK_DOCS, TRAEFIK_DOCS)
def test_traefik_reader_never_crashes_on_odd_shapes(dyn: object, static: object) -> None:
    files = {"/etc/traefik/dyn.json": json.dumps(dyn), "/etc/traefik/traefik.json": json.dumps(static)}
    rep = check_traefik(["/etc/traefik/dyn.json"], "/etc/traefik/traefik.json", reader(files), TRUSTED)
    assert all(i.level in ("fail", "warn") for i in rep.issues)


def test_traefik_discovered_from_its_command_line() -> None:
    pytest.importorskip("yaml")
    site = proxy_site()
    files = traefik_files(
        render_traefik_dynamic(site), render_traefik_static(site, "/etc/traefik/dynamic/edgesec.yml")
    )
    files["/proc/31/cmdline"] = "/usr/local/bin/traefik\0--configFile=/etc/traefik/traefik.yml\0"
    out = list(ProxyConfig().run(ctx(BuiltSystem(files=files))))
    assert statuses(out) == ["PASS"] and out[0].evidence["kind"] == "traefik"
    files["/etc/traefik/traefik.yml"] = "entryPoints: {}\nproviders:\n  docker: {}\n"
    out = list(ProxyConfig().run(ctx(BuiltSystem(files=files))))
    # Traefik's defaults: the update check is on (a sealed site's proxy phones home), routers unknown.
    assert statuses(out) == ["FAIL", "WARN", "WARN"] and "routers not judged" in out[2].message
    assert "providers.docker is enabled" in out[1].message
    assert "checkNewVersion" in out[0].message and "/etc/traefik/traefik.yml" in out[0].message
    files["/etc/traefik/traefik.yml"] = (
        "global:\n  checkNewVersion: false\nentryPoints: {}\nproviders:\n  docker: {}\n"
    )
    out = list(ProxyConfig().run(ctx(BuiltSystem(files=files))))
    assert statuses(out) == ["WARN", "WARN"] and "routers not judged" in out[1].message


def test_nginx_identity_headers_follow_inheritance() -> None:
    block = render_nginx(proxy_site())
    loc = block.index("    location / {")
    head, body = block[:loc], block[loc:]
    sets = [ln for ln in body.splitlines(keepends=True) if ln.strip().startswith("proxy_set_header")]
    # All proxy_set_header lines moved to the server level: inherited, so still fine.
    moved = (
        head
        + "".join(s.replace("        ", "    ", 1) for s in sets)
        + "".join(ln for ln in body.splitlines(keepends=True) if ln not in sets)
    )
    files = nginx_files(moved)
    assert check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED).issues == []
    # One proxy_set_header added in the location cancels the inheritance: the identity headers are gone.
    broken = moved.replace("    location / {\n", "    location / {\n        proxy_set_header X-Debug 1;\n")
    files = nginx_files(broken)
    rep = check_nginx("/etc/nginx/nginx.conf", reader(files), nginx_glob(files), TRUSTED)
    assert any("client-sent X-User-ID" in i.message for i in rep.issues), rep.issues


def test_readyz_asks_every_running_replica_behind_the_load_balancer() -> None:
    def curl(port: int) -> tuple[str, ...]:
        return (*CURL[:-1], f"http://127.0.0.1:{port}/readyz")

    ready = json.dumps({"ready": True, "policy": {"generation": 2, "rules": 21}}) + "\n200"
    stale = json.dumps(
        {"ready": False, "policy": {"generation": 2}, "trust": {"ok": False, "error": "CRL past nextUpdate"}}
    )
    nul = "\x00"
    files = {
        "/proc/501/cmdline": nul.join(
            ["/usr/bin/python3", "-m", "edgesec", "authz", "serve", "--port", "9101", ""]
        ),
        "/proc/502/cmdline": nul.join(
            ["/usr/bin/edgesec", "authz", "serve", "--host", "127.0.0.1", "--port", "9102", ""]
        ),
        # Not on loopback: the audit never asks it.
        "/proc/503/cmdline": nul.join(
            ["/usr/bin/edgesec", "authz", "serve", "--host", "10.0.0.5", "--port", "9103", ""]
        ),
    }
    cmds = {CURL: ready, curl(9101): ready, curl(9102): stale + "\n503"}
    out = list(ReadyZ().run(ctx(BuiltSystem(files=files, commands=cmds))))
    assert statuses(out) == ["PASS", "PASS", "FAIL"]
    assert "replica pid 502" in out[2].message and "CRL past nextUpdate" in out[2].message


def _traefik_on_disk(root: Path, files: dict[str, str]) -> list[str]:
    """ProxyConfig's messages over ``files`` written under ``root`` (a re-rooted live file system, so
    directories are listed the way the host lists them)."""
    shutil.rmtree(root, ignore_errors=True)
    for p, text in files.items():
        f = root / p.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return [f"{f.status.value} {f.message}" for f in ProxyConfig().run(ctx(LiveSystem(root=str(root))))]


def test_traefik_routes_the_check_cannot_see_are_not_a_pass(tmp_path: Path) -> None:
    """Every way real Traefik 3.7 routes around the judged file is named: its file provider reads its
    directory recursively, any case of extension (a router in ``dynamic/extra/app.YML`` serves requests),
    TCP/UDP routers cannot run forwardAuth, other providers bring routers the check does not read, and
    ``api.insecure`` serves the API and dashboard on their own entrypoint without forward auth."""
    pytest.importorskip("yaml")
    site = proxy_site()
    dyn = render_traefik_dynamic(site)
    static = render_traefik_static(site, "/etc/traefik/dynamic/edgesec.yml").replace(
        'filename: "/etc/traefik/dynamic/edgesec.yml"', 'directory: "/etc/traefik/dynamic"'
    )
    files = traefik_files(dyn, static)
    files["/proc/31/cmdline"] = "/usr/local/bin/traefik\0--configFile=/etc/traefik/traefik.yml\0"
    root = tmp_path / "root"
    out = _traefik_on_disk(root, files)
    assert out == ["PASS traefik (pid 31): 1 route(s) behind ForwardAuth with site mutual TLS"], out
    open_router = (
        'http:\n  routers:\n    open:\n      rule: "PathPrefix(`/`)"\n      service: s\n      tls: {}\n'
    )
    for extra in ("/etc/traefik/dynamic/extra/app.yml", "/etc/traefik/dynamic/APP.YML"):
        out = _traefik_on_disk(root, {**files, extra: open_router})
        assert any(m.startswith("FAIL") and "router open" in m and "no forwardAuth" in m for m in out), (
            extra,
            out,
        )
    tcp = 'tcp:\n  routers:\n    raw:\n      rule: "HostSNI(`*`)"\n      service: s\n      tls:\n        passthrough: true\n'
    for proto, doc, expect in [
        ("tcp", tcp, "tcp router raw"),
        ("udp", "udp:\n  routers:\n    dns:\n      service: s\n", "udp router dns"),
    ]:
        out = _traefik_on_disk(root, {**files, f"/etc/traefik/dynamic/{proto}.yml": doc})
        assert any(m.startswith("FAIL") and expect in m and "forwardAuth" in m for m in out), (proto, out)
    both = static + "  docker:\n    exposedByDefault: false\n"
    out = _traefik_on_disk(root, {**files, "/etc/traefik/traefik.yml": both})
    assert any(m.startswith("WARN") and "providers.docker" in m for m in out), out
    insecure = static + "api:\n  insecure: true\n"
    out = _traefik_on_disk(root, {**files, "/etc/traefik/traefik.yml": insecure})
    assert any(m.startswith("FAIL") and "api.insecure" in m for m in out), out


def test_traefik_without_config_file_flag_is_judged_by_the_file_traefik_loads() -> None:
    """Without ``--configFile`` Traefik 3.7 loads the first of ``/etc/traefik/traefik``,
    ``$XDG_CONFIG_HOME/traefik``, ``$HOME/.config/traefik``, ``./traefik`` (its working directory), each
    as ``.toml``, ``.yaml``, ``.yml`` in that order, and then ignores its command-line flags: the check
    judges that file, not a clean ``traefik.yml`` beside the ``traefik.toml`` that runs."""
    pytest.importorskip("yaml")
    site = proxy_site()
    dyn = render_traefik_dynamic(site)
    clean = render_traefik_static(site, "/etc/traefik/dynamic/edgesec.yml")
    running = (
        "[global]\ncheckNewVersion = false\nsendAnonymousUsage = false\n"
        '[entryPoints.websecure]\naddress = "0.0.0.0:443"\n'
        '[providers.file]\nfilename = "/etc/traefik/dynamic/edgesec.yml"\n'
        "[api]\ninsecure = true\n"
    )
    base = {"/etc/traefik/dynamic/edgesec.yml": dyn, TRUST: SITE_CA, "/proc/31/cmdline": "traefik\0"}
    for where, extra, environ in [
        ("/etc/traefik/traefik.toml", {"/etc/traefik/traefik.yml": clean}, ""),
        ("/srv/edge/.config/traefik.yaml", {"/srv/traefik.yml": clean}, "HOME=/srv/edge\0"),
        ("/opt/x/traefik.toml", {"/srv/edge/traefik.yml": clean}, "XDG_CONFIG_HOME=/opt/x\0HOME=/srv/edge\0"),
        ("/srv/traefik.toml", {"/srv/traefik.yml": clean}, ""),
    ]:
        text = running if where.endswith(".toml") else clean + "api:\n  insecure: true\n"
        files = {**base, **extra, where: text, "/proc/31/environ": environ}
        system = BuiltSystem(files=files, links={"/proc/31/cwd": "/srv"})
        out = list(ProxyConfig().run(ctx(system)))
        assert any(
            f.status.value == "FAIL" and "api.insecure" in f.message and where in f.message for f in out
        ), (where, [f.message for f in out])
    # With none of them, the flags configure it: nothing to judge is a warning, never a PASS.
    system = BuiltSystem(files={**base, "/proc/31/environ": ""}, links={"/proc/31/cwd": "/srv"})
    assert statuses(ProxyConfig().run(ctx(system))) == ["WARN"]


def test_traefik_forward_auth_to_another_address_is_named() -> None:
    """As for nginx's auth location and Caddy's forward_auth: a forwardAuth asking something other than
    ``[authz] url`` (a stub that always answers 200) is not evidence that ForwardAuth decides."""
    pytest.importorskip("yaml")
    site = proxy_site()
    dyn = render_traefik_dynamic(site)
    static = render_traefik_static(site, "/etc/traefik/dynamic/edgesec.yml")
    assert f'address: "{AUTH}/auth"' in dyn
    for addr in ("http://127.0.0.1:9999/auth", ""):
        bad = dyn.replace(f'address: "{AUTH}/auth"', f'address: "{addr}"')
        rep = check_traefik(
            ["/etc/traefik/dynamic/edgesec.yml"],
            "/etc/traefik/traefik.yml",
            reader(traefik_files(bad, static)),
            TRUSTED,
        )
        assert [(i.level, i.message) for i in rep.issues] == [
            ("warn", f"forwardAuth.address {addr or '(none)'} is not [authz] url {AUTH}")
        ], rep.issues


def test_traefik_relative_paths_are_its_working_directorys() -> None:
    """Traefik opens a relative ``providers.file`` path and ``caFiles`` entry from its own working
    directory: the check reads those files (a good config passes, an open router there fails), not
    whatever the audit's own working directory holds."""
    pytest.importorskip("yaml")
    site = replace(proxy_site(), ca_file="ca/ca-bundle.pem")
    good = render_traefik_dynamic(site)
    static = render_traefik_static(site, "dynamic/edgesec.yml")
    assert 'filename: "dynamic/edgesec.yml"' in static and "ca/ca-bundle.pem" in good
    base = {
        "/srv/tr/traefik.yml": static,
        "/srv/tr/ca/ca-bundle.pem": SITE_CA,
        TRUST: SITE_CA,
        "/proc/31/cmdline": "traefik\0--configFile=traefik.yml\0",
    }
    links = {"/proc/31/cwd": "/srv/tr"}
    out = list(
        ProxyConfig().run(ctx(BuiltSystem(files={**base, "/srv/tr/dynamic/edgesec.yml": good}, links=links)))
    )
    assert statuses(out) == ["PASS"], [f.message for f in out]
    assert out[0].evidence["files"] == ["/srv/tr/dynamic/edgesec.yml"]
    bad = good.replace('        - "edgesec-forward-auth"\n', "")
    out = list(
        ProxyConfig().run(ctx(BuiltSystem(files={**base, "/srv/tr/dynamic/edgesec.yml": bad}, links=links)))
    )
    assert any(f.status.value == "FAIL" and "no forwardAuth" in f.message for f in out), [
        f.message for f in out
    ]
    foreign = {**base, "/srv/tr/dynamic/edgesec.yml": good, "/srv/tr/ca/ca-bundle.pem": FOREIGN_CA}
    out = list(ProxyConfig().run(ctx(BuiltSystem(files=foreign, links=links))))
    assert "FAIL" in statuses(out), [f.message for f in out]
