"""Which databases the dashboard reads: chosen once by whoever starts it, never by a visitor."""
from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from storage.engine import display_url, normalize_url
from storage.errors import StorageError
from trainer.config import Config, options_of
from trainer.errors import ConfigError

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_DB: str = next(f.default for f in fields(Config) if f.name == "db")
DB_ENV: str = options_of()["db"].env or "SENTIMENT_DB"
CONFIG_ENV = "SENTIMENT_DASHBOARD_CONFIG"
URLS_ENV = "SENTIMENT_DASHBOARD_URLS"
CONFIG_KEYS = ("db", "allowed_urls")
DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Databases:
    """The databases visitors may read, by name in the operator's order; the first is the default.

    A visitor's choice is only ever a name looked up here: nothing a visitor sends becomes a URL.
    """

    urls: dict[str, str]

    @property
    def names(self) -> list[str]:
        return list(self.urls)

    @property
    def default(self) -> str:
        return next(iter(self.urls))

    @property
    def choosable(self) -> bool:
        """Whether the operator allowed visitors to switch among several databases."""
        return len(self.urls) > 1

    def url(self, name: str | None) -> str:
        """The URL of the database named `name`; the default one for any other name."""
        return self.urls.get(name or "", self.urls[self.default])


def resolve(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Databases:
    """The dashboard's databases from its arguments, environment and configuration file.

    Field by field, the arguments (`streamlit run dashboard/app.py -- --db URL`) win over the
    environment (SENTIMENT_DB, SENTIMENT_DASHBOARD_URLS), which wins over the configuration
    file (`--config FILE` or SENTIMENT_DASHBOARD_CONFIG: keys `db` and `allowed_urls`), which
    wins over the tool's default database. Visitors may choose only when the operator lists
    `allowed_urls` (`--allow NAME=URL`, repeatable; SENTIMENT_DASHBOARD_URLS, entries
    separated by spaces): then they pick among those by name. Without `db`, the first listed
    database is the default.

    Args:
        argv: the script's arguments (`script_arguments()`).
        environ: the environment; None: os.environ.

    Returns:
        The databases, the default first.

    Raises:
        ConfigError: an argument, the configuration file or a URL is not valid.
    """
    env = os.environ if environ is None else environ
    args = parse_arguments(argv)
    config_path = args.config or env.get(CONFIG_ENV, "").strip()
    config = read_config(Path(config_path)) if config_path else {}
    db = args.db or env.get(DB_ENV, "").strip() or config.get("db")
    if args.allow:
        allowed = named(args.allow)
    elif env.get(URLS_ENV, "").strip():
        allowed = named(env[URLS_ENV].split())
    else:
        allowed = config_urls(config.get("allowed_urls"))
    if db is None and allowed:
        return Databases(allowed)
    db = db or DEFAULT_DB
    check_url(db, "the dashboard's database")
    same = next((name for name, url in allowed.items() if url == db), None)
    first = same or (DEFAULT_NAME if DEFAULT_NAME not in allowed else mask(db))
    return Databases({first: db, **{n: u for n, u in allowed.items() if n != first}})


def script_arguments() -> list[str]:
    """The arguments after `--` of `streamlit run dashboard/app.py -- …`, else none.

    Streamlit sets sys.argv to [the script, its arguments]; a process that runs the app
    otherwise (AppTest under pytest) keeps its own argv, which is not the dashboard's.
    """
    if sys.argv and Path(sys.argv[0]).resolve() == APP:
        return sys.argv[1:]
    return []


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The dashboard's own arguments: --db URL, --config FILE, --allow NAME=URL (repeatable).

    Raises:
        ConfigError: an argument is unknown or lacks its value.
    """
    parser = argparse.ArgumentParser(prog="streamlit run dashboard/app.py --", add_help=False,
                                     exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--db")
    parser.add_argument("--config")
    parser.add_argument("--allow", action="append", default=[])
    usage = "use --db URL, --config FILE or --allow NAME=URL"
    try:
        args, extra = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as e:
        raise ConfigError(f"the dashboard's argument {e.argument_name} needs a value; "
                          f"{usage}") from None
    if extra:  # echo flags only: a stray value may be a URL with its password
        flags = [a.split("=", 1)[0] for a in extra if a.startswith("-")] or ["a value"]
        raise ConfigError(f"the dashboard does not take {', '.join(flags)}; {usage}")
    return args


def read_config(path: Path) -> dict[str, Any]:
    """The dashboard's TOML configuration file: `db = "URL"` and `allowed_urls`.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or holds other keys.
    """
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the dashboard configuration {path} ({e.strerror}); "
                          "check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"the dashboard configuration {path} is not valid TOML ({e}); "
                          "fix it") from None
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"the dashboard configuration {path} has unknown keys {unknown}; "
                          f"use only {list(CONFIG_KEYS)}")
    if "db" in config and not isinstance(config["db"], str):
        raise ConfigError(f"db in {path} must be a URL string")
    return config


def config_urls(value: Any) -> dict[str, str]:
    """`allowed_urls` of the configuration file: a table {name = "URL"} or a list of entries.

    Raises:
        ConfigError: it is neither, or an entry is not a valid URL.
    """
    if value is None:
        return {}
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return _checked(value.items())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return named(value)
    raise ConfigError('allowed_urls must be a table {name = "URL"} or a list of "NAME=URL" '
                      "strings")


def named(entries: Iterable[str]) -> dict[str, str]:
    """Entries `NAME=URL` or a bare `URL` (named by its masked form), in order.

    Raises:
        ConfigError: an entry is not a valid URL, or two share a name.
    """
    pairs = []
    for entry in entries:
        name, sep, url = entry.partition("=")
        if not sep or not name.strip() or any(c in name for c in ":/?"):
            name, url = mask(entry), entry  # a bare URL (its own query may hold "=")
        pairs.append((name.strip(), url.strip()))
    return _checked(pairs)


def check_url(url: str, what: str) -> None:
    """Raises ConfigError (naming `what`, never the password) when `url` is not accepted."""
    try:
        normalize_url(url)
    except StorageError as e:
        raise ConfigError(f"{what} is not usable: {e}") from None


def mask(url: str) -> str:
    """The URL as a visitor may see it: the password and secret-looking parameters as ***."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):  # show none of it
        return "(not a valid database URL)"
    return display_url(parsed)


def _checked(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for name, url in pairs:
        if name in urls:
            raise ConfigError(f"two allowed databases are named {name!r}; name each once")
        check_url(url, f"the allowed database {name!r}")
        urls[name] = url
    return urls
