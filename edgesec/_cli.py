"""The ``edgesec`` command line: global flags, error handling and exit codes.

This module only mounts the parts' sub-apps; each part's package owns its commands through a
``mount(app)`` function in its ``cli`` module.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer

try:  # typer >= 0.20 vendors click as typer._click; older versions use click itself
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as _click_exc  # type: ignore[no-redef]

from edgesec import __version__
from edgesec._console import AppState, reset_state, set_state, state, stderr
from edgesec.errors import EXIT_FAILED, EXIT_USAGE, EdgesecError

app = typer.Typer(
    name="edgesec",
    help="Security and compliance toolkit for offline edge AI sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Flags that may appear anywhere on the command line; they are moved in front of the sub-command.
_GLOBAL_FLAGS = ("--json", "--debug", "--quiet")


def _version(value: bool) -> None:
    if value:
        print(f"edgesec {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result (or error) as one JSON document.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and warnings.")] = False,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Site config file (else $EDGESEC_CONFIG, /etc/edgesec)."),
    ] = None,
    home: Annotated[str | None, typer.Option("--home", help="State directory (else $EDGESEC_HOME).")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Security and compliance toolkit for offline edge AI sites."""
    st = state()
    st.json = json_out
    st.debug = debug
    st.quiet = quiet
    st.config_path = config
    st.home_arg = home


def _mount_parts() -> None:
    from edgesec import _config_cli
    from edgesec.auditing import cli as auditing_cli
    from edgesec.authz import cli as authz_cli
    from edgesec.checks import cli as checks_cli
    from edgesec.deploy import cli as deploy_cli
    from edgesec.models import cli as models_cli
    from edgesec.pki import cli as pki_cli

    # The order of `edgesec --help`: `schedule` (deploy) stands after the checks' commands, as always.
    for mount in (
        _config_cli.mount,
        pki_cli.mount,
        authz_cli.mount,
        auditing_cli.mount,
        checks_cli.mount,
        deploy_cli.mount_schedule,
        models_cli.mount,
        deploy_cli.mount,
    ):
        mount(app)
    _plain_help(app)


def _plain_help(t: typer.Typer) -> None:
    """Help text is plain text: "[pki] key_type" names a config key, not rich markup to strip."""
    t.rich_markup_mode = None
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _plain_help(group.typer_instance)


_mount_parts()


def _hoist_globals(argv: list[str]) -> list[str]:
    """Let ``--json``/``--debug``/``--quiet`` appear after the sub-command too."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut:]
    else:
        head, tail = argv, []
    flags = [a for a in head if a in _GLOBAL_FLAGS]
    rest = [a for a in head if a not in _GLOBAL_FLAGS]
    return flags + rest + tail


def _print_json(st: AppState, *, ok: bool, exit_code: int, error: dict[str, Any] | None = None) -> None:
    doc: dict[str, Any] = {"ok": ok, "exit_code": exit_code, "command": st.command}
    if st.has_result:
        doc["result"] = st.result
    if error is not None:
        doc["error"] = error
    if st.warnings:
        doc["warnings"] = st.warnings
    sys.stdout.write(json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _error_line(message: str, hint: str | None = None) -> None:
    con = stderr()
    con.print(f"edgesec: error: {message}", markup=False, style="bold red")
    if hint:
        con.print(f"  hint: {hint}", markup=False)


def _command_path(root: Any, args: list[str]) -> str:
    """The sub-command names in ``args`` (``pki issue client``), without options or their values.

    Read from the command tree, without parsing (which would run eager options such as ``--version``).
    """
    names: list[str] = []
    cmd = root
    i = 0
    while i < len(args) and isinstance(getattr(cmd, "commands", None), dict):
        a = args[i]
        i += 1
        if a == "--":
            break
        if a.startswith("-"):
            if "=" in a:
                continue
            opt = next((p for p in getattr(cmd, "params", []) if a in getattr(p, "opts", ())), None)
            if opt is not None and not getattr(opt, "is_flag", False) and not getattr(opt, "count", False):
                i += 1  # its value
            continue
        sub = cmd.commands.get(a)
        if sub is None:
            break
        names.append(a)
        cmd = sub
    return " ".join(names)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (never raises, never calls sys.exit)."""
    args = _hoist_globals(list(sys.argv[1:] if argv is None else argv))
    st = AppState(json="--json" in args, debug="--debug" in args)
    token = set_state(st)
    from edgesec import auditing

    # The CLI configures auditing explicitly: a command's events go to the trail of the config its
    # --config/--home name (loaded only when an event is recorded); library code never reads CLI state.
    previous_source = auditing.use_config(st.config)
    try:
        code = _dispatch(args, st)
        # Audit events queued by group commit are written before the command ends; events that
        # cannot be written are an error the exit code shows, never a silent loss.
        try:
            auditing.flush()
        except EdgesecError as exc:
            _error_line(exc.message, exc.hint)
            code = code or exc.exit_code
        return code
    finally:
        auditing.use_config(previous_source)
        reset_state(token)


def _dispatch(args: list[str], st: AppState) -> int:
    try:
        command = typer.main.get_command(app)
        st.command = _command_path(command, args)
        try:
            rv = command.main(args=args, prog_name="edgesec", standalone_mode=False)
        except typer.Exit as exc:  # raised by typer.Exit inside a command
            rv = exc.exit_code
        code = int(rv) if isinstance(rv, int) else st.exit_code
        if code == 0 and st.exit_code:
            code = st.exit_code
        if st.json and (st.has_result or code != 0):
            _print_json(st, ok=code == 0, exit_code=code)
        return code
    except EdgesecError as exc:
        if st.debug:
            traceback.print_exc()
        if st.json:
            _print_json(st, ok=False, exit_code=exc.exit_code, error=exc.to_dict())
        else:
            _error_line(exc.message, exc.hint)
        return exc.exit_code
    except typer.Abort:
        _error_line("aborted")
        return 130
    except _click_exc.ClickException as exc:
        # Usage errors: unknown option, missing argument, bad value.
        if st.json:
            _print_json(
                st, ok=False, exit_code=EXIT_USAGE, error={"kind": "usage", "message": exc.format_message()}
            )
        else:
            ctx = getattr(exc, "ctx", None)
            usage = ctx.get_usage() if ctx is not None else None
            if usage:
                stderr().print(usage, markup=False)
            _error_line(exc.format_message(), "add --help for usage")
        return EXIT_USAGE if exc.exit_code in (1, 2) else exc.exit_code
    except KeyboardInterrupt:
        _error_line("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if st.debug:
            traceback.print_exc()
        msg = f"internal error: {type(exc).__name__}: {exc}"
        if st.json:
            _print_json(st, ok=False, exit_code=EXIT_FAILED, error={"kind": "internal", "message": msg})
        else:
            _error_line(msg, "this is a bug in edgesec; re-run with --debug for a traceback")
        return EXIT_FAILED


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
