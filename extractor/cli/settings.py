"""Settings from three places, for every command: its flags, ``EXTRACTOR_*`` variables and a
``--config extractor.toml`` file. A flag beats a variable beats the file beats the default.

Every option ``--some-option`` of a command can also be set as ``EXTRACTOR_SOME_OPTION`` (not
``--yes``: a confirmation is given each time) or, in the file, as ``some-option`` (or
``some_option``)::

    concurrency = 8                  # every command that has --concurrency
    max-requests-per-hour = 7200

    [invoices]                       # one command's own
    out = "s3://lake/24so/invoices"
    parse-workers = 2

    [credentials]                    # the variables that hold them, never the values
    username-variable = "ACME_TFSO_USER"
    password-variable = "ACME_TFSO_PASSWORD"

The file is ``--config FILE`` or ``EXTRACTOR_CONFIG``; a key no command knows, a section that
is no command, a value of the wrong type and a credential written into the file are refused
with the file's name, before anything runs. Also the log's flags are every command's:
``--log-format text|json``, ``-q``, ``-v`` (:mod:`extractor.log`).
"""

from __future__ import annotations

import functools
import os
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import click

from extractor import log
from extractor.clock import new_run_id
from extractor.config import CREDENTIAL_VARIABLES, read_credentials_from
from extractor.errors import UsageError

ENV_PREFIX: Final = "EXTRACTOR_"
#: A config file is a few lines; past this it is not one (and is not read whole).
MAX_CONFIG_BYTES: Final = 1024 * 1024
CONFIG_VARIABLE: Final = "EXTRACTOR_CONFIG"
#: Options no variable nor file sets: each run confirms for itself.
NOT_SETTINGS: Final = frozenset({"--yes", "--help", "--config"})
CREDENTIALS_SECTION: Final = "credentials"
_CREDENTIAL_KEYS: Final = {
    f"{field.replace('_', '-')}-variable": field for field, _ in CREDENTIAL_VARIABLES
}
_SECRET_WORDS: Final = ("password", "username", "application-id", "identity-id", "secret")


def variable(flag: str) -> str:
    """``--max-requests-per-hour``: ``EXTRACTOR_MAX_REQUESTS_PER_HOUR``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _log_flags(log_format: str, quiet: bool, verbose: bool, **kwargs: Any) -> dict[str, Any]:
    """Configure the log from the command's flags (or, where the command was not given one,
    those given before the command: ``extractor -q sync ...``); the command's other args."""
    ctx = click.get_current_context()
    given = {"log_format": log_format, "quiet": quiet, "verbose": verbose}
    before = ctx.meta.get(_BEFORE, {})
    for name in given:
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            given[name] = before.get(name, given[name])  # a flag beats a variable or the file
    verbosity = -1 if given["quiet"] else (1 if given["verbose"] else 0)
    log.configure(given["log_format"], verbosity, **dict(log.current().context))  # type: ignore[arg-type]
    log.capture_others()
    return kwargs


_BEFORE: Final = "extractor.log_flags"


def _note_before(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A log flag given before the command, for the command to use."""
    if param.name and ctx.get_parameter_source(param.name) != click.core.ParameterSource.DEFAULT:
        ctx.meta.setdefault(_BEFORE, {})[param.name] = value


def equip_group(group: click.Group) -> None:
    """The log's flags and ``--config`` before the command too (``extractor -q sync``)."""
    for option in _log_options():
        option.expose_value = False
        if option.name != "config":
            option.callback = _note_before
        group.params.append(option)


def _log_options() -> list[click.Option]:
    """The log's flags and ``--config``: new ones for each command (click does not share)."""
    return [
        click.Option(
            ["--log-format"], type=click.Choice(log.FORMATS), default="text",
            show_default=True,
            help="Events on stderr as text, or as JSON Lines (time, level, event, run_id, "
            "counts).",
        ),
        click.Option(["-q", "--quiet"], is_flag=True, help="Only warnings and errors on stderr."),
        click.Option(["-v", "--verbose"], is_flag=True, help="Also debug events (each retry)."),
        click.Option(
            ["--config"], type=click.Path(dir_okay=False, path_type=Path), expose_value=False,
            help="A TOML file of settings (also EXTRACTOR_CONFIG); flags and EXTRACTOR_* "
            "variables beat it.",
        ),
    ]  # fmt: skip


def equip(commands: Iterable[click.Command]) -> None:
    """Give every command the log's flags and ``--config``, and each of its options its
    ``EXTRACTOR_*`` variable."""
    for command in commands:
        command.params.extend(_log_options())
        for param in command.params:
            if isinstance(param, click.Option) and _flag(param) not in NOT_SETTINGS:
                own = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
                param.envvar = [variable(_flag(param)), *own]
        callback = command.callback
        assert callback is not None
        command.callback = _with_log(callback)


def _with_log(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def configured(**kwargs: Any) -> Any:
        try:
            return callback(**_log_flags(**kwargs))
        except BaseException as exc:  # a run that stopped on an error or a signal: its record
            _show_record(exc)
            raise

    return configured


def _show_record(exc: BaseException) -> None:
    """The record a stopped run left, printed as ``--json`` prints a summary."""
    from extractor.cli.common import show_failure
    from extractor.engine.summary import attached

    record = attached(exc)
    if record is not None:
        show_failure(record)


def _flag(param: click.Option) -> str:
    """The option's long flag: ``--max-requests-per-hour``."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    return longs[0] if longs else param.opts[0]


def early(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, Path | None]:
    """Before the command line is parsed (its errors are logged too): the log format and the
    config file it names, from the flags, the variables, else the defaults."""
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    for index, arg in enumerate(argv):
        for flag in ("--log-format", "--config"):
            if arg == flag and index + 1 < len(argv):  # the last one: the command's own
                found[flag] = argv[index + 1]
            elif arg.startswith(flag + "="):
                found[flag] = arg.split("=", 1)[1]
    config = found.get("--config") or env.get(CONFIG_VARIABLE)
    path = Path(config).expanduser() if config else None
    log_format = (
        found.get("--log-format") or env.get(variable("--log-format")) or _filed(path, argv)
    )
    return (log_format if log_format in log.FORMATS else "text"), path


def _filed(path: Path | None, argv: Sequence[str]) -> str:
    """The config file's ``log-format`` for the command of ``argv`` (its section's, else the
    top level's); "" when it names none or cannot be read (that is said once it is read)."""
    try:
        data = tomllib.loads(read_config(path)) if path else {}
    except (UsageError, tomllib.TOMLDecodeError):
        return ""
    command = _command(argv)
    for where in (data.get(command), data):
        if isinstance(where, dict):
            value = where.get("log-format", where.get("log_format"))
            if isinstance(value, str):
                return value
    return ""


def _command(argv: Sequence[str]) -> str:
    """The command ``argv`` names: its first word that is no flag nor a flag's value."""
    valued = iter(argv)
    for arg in valued:
        if arg in ("--log-format", "--config"):
            next(valued, None)
        elif not arg.startswith("-"):
            return arg
    return ""


def start(argv: Sequence[str]) -> None:
    """Set up the invocation's log before parsing (``run_id``: the invocation's own id), in
    the format the flags, the variables or the config file ask for."""
    log_format, _ = early(argv)
    log.configure(log_format, 0, run_id=new_run_id())  # type: ignore[arg-type]
    read_credentials_from({})


def defaults(group: click.Group, argv: Sequence[str]) -> dict[str, Any] | None:
    """The ``default_map`` of ``group`` from the config file the command line names (None:
    no file); its credential variables are noted for :class:`~extractor.config.Credentials`."""
    _, path = early(argv)
    if path is None:
        return None
    text = read_config(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {path} is not TOML: {exc}") from None
    return _default_map(group, path, data)


def read_config(path: Path) -> str:
    """The config file's text; a missing, unreadable or oversized file, or one that is no
    regular file (``/dev/zero``, a FIFO that would block, a directory), is a UsageError."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # before opening: a FIFO's open blocks
            raise UsageError(f"--config: {path} is not a regular file; give a TOML file")
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UsageError(f"--config: {path} is over {MAX_CONFIG_BYTES:,} bytes; not a config")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config: cannot read {path}: {exc}") from None


def _default_map(group: click.Group, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    commands = group.commands
    shared = {key: value for key, value in data.items() if not isinstance(value, dict)}
    sections = {key: value for key, value in data.items() if isinstance(value, dict)}
    read_credentials_from(_credentials(path, sections.pop(CREDENTIALS_SECTION, {})))
    for name in sections:
        if name not in commands:
            raise UsageError(
                f"{path}: [{name}] is no command; the sections are commands "
                f"({', '.join(sorted(commands))}) and [credentials]"
            )
    for key in shared:
        _refuse_secret(path, key)
        if not any(_param(command, key) for command in commands.values()):
            raise UsageError(f"{path}: {key!r} is no option of any command (see --help)")
    mapping: dict[str, Any] = {}
    for name, command in commands.items():
        own = sections.get(name, {})
        for key in own:
            _refuse_secret(path, f"[{name}] {key}")
            if _param(command, key) is None:
                raise UsageError(
                    f"{path}: [{name}] {key!r} is no option of {name} (see extractor {name} --help)"
                )
        settings: dict[str, Any] = {}
        for key, value in {**shared, **own}.items():
            param = _param(command, key)
            if param is not None and param.name is not None:
                settings[param.name] = _checked(command, param, value, path, key)
        if settings:
            mapping[name] = settings
    return mapping


def _param(command: click.Command, key: str) -> click.Option | None:
    flag = "--" + key.replace("_", "-")
    for param in command.params:
        if isinstance(param, click.Option) and flag in param.opts:
            return None if _flag(param) in NOT_SETTINGS else param
    return None


def _checked(command: click.Command, param: click.Option, value: Any, path: Path, key: str) -> Any:
    """``value`` as ``param`` takes it, or one line naming the file and key."""
    if isinstance(value, bool) != param.is_flag:  # TOML's true is no number, 1 no switch
        wanted = "true or false" if param.is_flag else f"a value for {_flag(param)}"
        raise UsageError(f"{path}: {key} = {value!r}: give {wanted}")
    try:
        with click.Context(command) as ctx:
            param.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise UsageError(f"{path}: {key} = {value!r}: {exc.message}") from None
    return value


def _refuse_secret(path: Path, key: str) -> None:
    if any(word in key.lower().replace("_", "-") for word in _SECRET_WORDS):
        raise UsageError(
            f"{path}: {key!r}: credentials do not go in a config file; keep them in the "
            "environment (TFSO_*), or name the variables that hold them under [credentials], "
            'e.g. password-variable = "ACME_TFSO_PASSWORD"'
        )


def _credentials(path: Path, section: dict[str, Any]) -> dict[str, str]:
    named: dict[str, str] = {}
    for key, value in section.items():
        field = _CREDENTIAL_KEYS.get(key.replace("_", "-"))
        if field is None:
            raise UsageError(
                f"{path}: [credentials] {key!r}: this section only names the variables that "
                f"hold the credentials ({', '.join(_CREDENTIAL_KEYS)}); the values stay in "
                "the environment"
            )
        if not isinstance(value, str) or not value.replace("_", "").isalnum():
            raise UsageError(  # its value unsaid: it may be the secret itself, misplaced
                f"{path}: [credentials] {key} is not the name of an environment variable "
                "(letters, digits and _); the value itself stays in the environment"
            )
        named[field] = value
    return named
