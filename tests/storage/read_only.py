"""Where a reader cannot write: a read-only folder, an unprivileged process, a SELECT-only role."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from storage.store import open_store
from tests.ci import missing
from tests.storage import samples

REPO = Path(__file__).resolve().parents[2]
STUDY = "read-only-study"
RO_PASSWORD = "S3cret-ro-pw"  # trust authentication ignores it; it must never be shown

# Run as a script by read_unprivileged: what read_everything saw, and one attempted write.
READER = """
import json, sys
from pathlib import Path
from tests.storage.read_only import read_everything

url, folder = sys.argv[1], Path(sys.argv[2])
seen = read_everything(url)
try:
    (folder / "probe").write_text("x")
    seen["probe"] = "written"
except OSError as e:
    seen["probe"] = type(e).__name__
print(json.dumps(seen))
"""


def read_everything(url: str) -> dict:
    """What the dashboard's pages and `report` read, through the read-only Store and Optuna
    reader: runs, their predictions with texts, run specs, trial runs, studies and trials."""
    from trainer.tuning.storage import optuna_reader

    with open_store(url, read_only=True) as store:
        runs = store.list_runs()
        seen = {"runs": len(runs), "studies": store.studies(),
                "predictions": [len(store.predictions(r.id)) for r in runs],
                "specs": len(store.run_specs()), "trial_runs": sorted(store.trial_runs("s"))}
    storage = optuna_reader(url)
    try:
        names = optuna.get_all_study_names(storage)
        seen["optuna"] = {n: len(optuna.load_study(study_name=n, storage=storage).get_trials())
                          for n in names}
    finally:
        storage.engine.dispose()
    return seen


def written_database(url: str, *, trials: int = 2) -> None:
    """A database as this tool writes it: a run with predictions, a trial run, an Optuna study."""
    with open_store(url) as store:
        store.save_run(samples.spec(), samples.evaluation(), samples.predictions())
        store.save_run(samples.spec("trial", study="s", trial=0, split="validation"),
                       samples.evaluation(), samples.predictions(prefix="train/pos/"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=trials)
    finally:
        storage.engine.dispose()


def expected_reads(trials: int = 2) -> dict:
    return {"runs": 2, "studies": ["s"], "predictions": [4, 4], "specs": 2, "trial_runs": [0],
            "optuna": {STUDY: trials}}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the folder: name -> sha256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """Inside: every file mode 0444 and the folder 0555; restored after, so it can be removed."""
    files = [p for p in folder.iterdir() if p.is_file()]
    for path in files:
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        for path in folder.iterdir():
            if path.is_file():
                path.chmod(0o644)


def unprivileged(command: list[str]) -> list[str]:
    """`command`, run so that file modes bind it.

    Root ignores them through its capabilities (CAP_DAC_OVERRIDE); `setpriv` drops every
    capability from the bounding and inheritable sets, and a uid 0 without them is held to a
    file's mode bits like any owner. (An unprivileged uid such as nobody could not even run
    this interpreter, which lives under /root.)
    """
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        missing("setpriv (util-linux), to run a reader without root's capabilities")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", *command]


def run_unprivileged(args: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS…` from the repository root, without root's capabilities."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(unprivileged([sys.executable, *args]), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def read_unprivileged(url: str, folder: Path) -> dict:
    """What READER saw, run without root's capabilities; fails the test when it failed."""
    done = run_unprivileged(["-c", READER, url, str(folder)])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def search_path_schema(url: str) -> str:
    """The schema a pg_schema_url fixture's URL sets as its search_path."""
    options = make_url(url).query["options"]
    return options.split("search_path=", 1)[1].split()[0]


@contextmanager
def select_only_role(url: str) -> Iterator[str]:
    """A login role that may only SELECT the tables now in the URL's schema; its URL inside.

    The URL carries RO_PASSWORD (trust authentication ignores it). The role is dropped after.
    """
    import psycopg

    schema = search_path_schema(url)
    role = f"ro_test_{uuid.uuid4().hex[:10]}"
    admin = make_url(url).set(drivername="postgresql", query={}).render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
    try:
        yield make_url(url).set(username=role, password=RO_PASSWORD).render_as_string(
            hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(  # end the role's sessions that a pool may still hold
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,))
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def table_names(admin_url: str) -> list[str]:
    """The tables in the URL's search_path schema, as the server lists them."""
    import psycopg

    schema = search_path_schema(admin_url)
    plain = make_url(admin_url).set(drivername="postgresql", query={}).render_as_string(
        hide_password=False)
    with psycopg.connect(plain) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = %s ORDER BY 1", (schema,)).fetchall()
    return [r[0] for r in rows]
