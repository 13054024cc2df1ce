"""The dashboard keeps its secrets: the operator picks the database, no password reaches a page."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import resources, settings
from tests.dashboard import builders
from tests.dashboard.browser import free_port
from tests.dashboard.conftest import APP, PAGES
from tests.storage import read_only
from trainer.errors import ConfigError

Open = Callable[[str, str], AppTest]
PASSWORD = "S3cretPW"


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


DRAWN = {  # what each page draws from a populated database
    "overview": lambda at: len(at.metric) == 3,
    "study": lambda at: len(at.dataframe(key="study_table").value) == 4,
    "evaluation": lambda at: len(at.metric) == 7,
    "live": lambda at: "baseline" in at.selectbox(key="live_model").options[0],
    "data": lambda at: len(at.selectbox(key="data_diff_a").options) >= 2,  # no audit: the diff
}


def everything_shown(at: AppTest) -> str:
    """Every element of the page and sidebar as the browser receives it (their protobufs)."""
    return "\n".join(str(node.proto) for node in [*at.main, *at.sidebar]
                     if getattr(node, "proto", None) is not None)


def closed_port_url(password: str = PASSWORD) -> str:
    """A PostgreSQL URL with a password (in the URL and as a parameter) where no server runs."""
    return (f"postgresql+psycopg://postgres:{password}@127.0.0.1:{free_port()}/sentiment"
            f"?password={password}-2")


# --- settings: pure -------------------------------------------------------------------------


def test_arguments_win_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "dashboard.toml"
    config.write_text('db = "sqlite:///file.db"\n[allowed_urls]\nother = "sqlite:///o.db"\n')
    env = {settings.CONFIG_ENV: str(config)}
    assert settings.resolve([], env).urls == {"default": "sqlite:///file.db",
                                              "other": "sqlite:///o.db"}
    env[settings.DB_ENV] = "sqlite:///env.db"
    assert settings.resolve([], env).url(None) == "sqlite:///env.db"
    chosen = settings.resolve(["--db", "sqlite:///arg.db", "--allow", "a=sqlite:///a.db"], env)
    assert chosen.urls == {"default": "sqlite:///arg.db", "a": "sqlite:///a.db"}
    assert settings.resolve([], {}).urls == {"default": settings.DEFAULT_DB}
    assert not settings.resolve([], {}).choosable


def test_allowed_databases_are_chosen_by_name_and_anything_else_is_the_default() -> None:
    env = {settings.URLS_ENV: "one=sqlite:///1.db postgresql://u:pw@h/db?sslmode=require"}
    dbs = settings.resolve([], env)  # no db given: the first listed is the default
    assert dbs.names == ["one", "postgresql://u:***@h/db?sslmode=require"]
    assert dbs.url("postgresql://u:***@h/db?sslmode=require") == "postgresql://u:pw@h/db" \
        "?sslmode=require"
    for typed in ("sqlite:////etc/passwd", "postgresql://postgres@127.0.0.1/postgres", "", None):
        assert dbs.url(typed) == "sqlite:///1.db"  # a visitor's text never becomes a URL
    both = settings.resolve([], {**env, settings.DB_ENV: "sqlite:///1.db"})
    assert both.names[0] == "one"  # the default, under the operator's name for it


@pytest.mark.parametrize(("argv", "env", "config", "words"), [
    (["--database", "x"], {}, None, "does not take --database"),
    (["--db"], {}, None, "--db needs a value"),
    ([], {settings.DB_ENV: f"mysql://root:{PASSWORD}@h/db"}, None, "is not supported"),
    ([], {settings.URLS_ENV: "a=sqlite:///a.db a=sqlite:///b.db"}, None, "named 'a'"),
    ([], {}, 'db = "sqlite:///a.db"\nurl = "x"\n', "unknown keys ['url']"),
    ([], {}, "db = [", "is not valid TOML"),
    ([], {}, "allowed_urls = 3\n", "allowed_urls must be"),
])
def test_invalid_settings_are_one_config_error_without_the_password(
    tmp_path: Path, argv: list[str], env: dict[str, str], config: str | None, words: str
) -> None:
    if config is not None:
        (tmp_path / "d.toml").write_text(config)
        env = {**env, settings.CONFIG_ENV: str(tmp_path / "d.toml")}
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")) as e:
        settings.resolve(argv, env)
    assert PASSWORD not in str(e.value)


def test_mask_hides_passwords_in_the_url_and_its_parameters() -> None:
    shown = settings.mask(closed_port_url())
    assert PASSWORD not in shown and shown.count("***") == 2
    assert settings.mask("sqlite:///runs/x.db") == "sqlite:///runs/x.db"
    assert settings.mask("not a url") == "(not a valid database URL)"


# --- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_a_visitor_has_no_url_box_and_cannot_switch_the_database(
    open_page: Open, small_db: str, empty_db: str, page: str
) -> None:
    at = open_page(small_db, page)
    assert not at.sidebar.text_input and not at.sidebar.selectbox  # nothing to type or pick
    assert not [t for t in at.text_input if "database" in t.label.lower()]
    before = texts(at.metric) + texts(at.info)
    # What the old sidebar kept (a typed URL), and names a crafted session might send.
    for key, value in (("database_url", empty_db), ("database_url_input", empty_db),
                       ("database", empty_db), ("database_choice", empty_db)):
        at.session_state[key] = value
    at.query_params["db"] = empty_db
    at.run()
    assert not at.exception
    assert texts(at.metric) + texts(at.info) == before
    assert f"Database: {small_db}" in texts(at.sidebar.caption).replace("\\", "")


@pytest.mark.parametrize("page", PAGES)
def test_no_password_reaches_any_element(open_page: Open, page: str) -> None:
    at = open_page(closed_port_url(), page)
    assert not at.exception
    shown = everything_shown(at)
    assert PASSWORD not in shown
    assert "postgres:***@127.0.0.1" in texts(at.sidebar.caption).replace("\\", "")
    assert "cannot read its database" in texts(at.error)


def test_failures_look_the_same_to_visitors_and_are_told_to_the_log(
    open_page: Open, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "junk.db").write_text("not a database\n" * 50)
    (tmp_path / "empty.txt").write_bytes(b"")
    cases = {"missing file": f"sqlite:///{tmp_path / 'nowhere.db'}",
             "not a database": f"sqlite:///{tmp_path / 'junk.db'}",
             "empty file": f"sqlite:///{tmp_path / 'empty.txt'}",
             "closed port": closed_port_url()}
    boxes = {}
    for case, url in cases.items():
        at = open_page(url, "overview")
        assert not at.exception
        boxes[case] = texts(at.error)
        assert str(tmp_path) not in boxes[case] and "port" not in boxes[case].lower()
    assert len(set(boxes.values())) == 1, boxes  # one message: nothing to tell them apart
    for reason in ("no database file", "file is not a database", "holds no tables",
                   "Connection refused"):
        assert reason in caplog.text
    assert PASSWORD not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "junk.db"]
    assert (tmp_path / "empty.txt").read_bytes() == b""


def test_the_visitor_chooses_among_the_operators_databases_by_name(
    open_page: Open, small_db: str, empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = closed_port_url()
    monkeypatch.setenv(settings.URLS_ENV, f"results={small_db} fresh={empty_db} vault={secret}")
    at = open_page(small_db, "overview")
    choice = at.sidebar.selectbox(key="database_choice")
    assert choice.options == ["results", "fresh", "vault"] and choice.value == "results"
    assert len(at.metric) == 3
    choice.set_value("fresh").run()
    assert "holds no evaluated model yet" in texts(at.info)
    at.sidebar.selectbox(key="database_choice").set_value("vault").run()
    assert "cannot read its database" in texts(at.error)
    assert PASSWORD not in everything_shown(at)
    at.switch_page("app_pages/study.py").run()
    assert at.sidebar.selectbox(key="database_choice").value == "vault"  # kept across pages
    assert PASSWORD not in everything_shown(at)


def test_the_script_argument_and_the_config_file_choose_the_database(
    open_page: Open, small_db: str, empty_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # `streamlit run dashboard/app.py -- --db URL`: streamlit sets sys.argv to the script and
    # its arguments; the argument wins over SENTIMENT_DB.
    monkeypatch.setattr(sys, "argv", [str(APP), "--db", small_db])
    at = open_page(empty_db, "overview")
    assert len(at.metric) == 3
    config = tmp_path / "dashboard.toml"
    config.write_text(f'[allowed_urls]\nfresh = "{empty_db}"\nresults = "{small_db}"\n')
    monkeypatch.setattr(sys, "argv", [str(APP), "--config", str(config)])
    monkeypatch.setenv("SENTIMENT_DB", "")  # unset: the file's first database is the default
    resources.databases.clear()  # a server started afresh
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert at.sidebar.selectbox(key="database_choice").options == ["fresh", "results"]
    assert "holds no evaluated model yet" in texts(at.info)


def test_invalid_settings_stop_the_page_with_a_box_that_names_nothing(
    open_page: Open, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.URLS_ENV, f"a=mysql://root:{PASSWORD}@db/x")
    at = open_page("sqlite:///x.db", "overview")
    assert not at.exception
    assert "settings are not valid" in texts(at.error) and not at.metric
    assert "allowed database 'a'" in caplog.text and PASSWORD not in caplog.text


def test_every_page_reads_with_a_select_only_role_and_shows_no_password(
    open_page: Open, pg_schema_url: str, tmp_path: Path
) -> None:
    builders.populated(pg_schema_url, tmp_path / "artifacts", n_reviews=120, n_trials=4)
    with read_only.select_only_role(pg_schema_url) as role_url:
        for page in PAGES:
            at = open_page(role_url, page)
            assert not at.exception, page
            assert not at.error, (page, texts(at.error))
            assert DRAWN[page](at), page  # it read the data and drew it
            assert read_only.RO_PASSWORD not in everything_shown(at), page
            assert ":***@127.0.0.1" in texts(at.sidebar.caption).replace("\\", "")


def test_the_repository_config_hides_the_deploy_button_and_error_details() -> None:
    import tomllib

    path = APP.parent.parent / ".streamlit" / "config.toml"
    client = tomllib.loads(path.read_text())["client"]
    assert client["toolbarMode"] == "viewer" and client["showErrorDetails"] in ("type", "none")
