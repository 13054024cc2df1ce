"""Time saving 25,000 predictions with review texts on SQLite and PostgreSQL (not a test).

Run: python -m bench save [postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import psycopg
from sqlalchemy.engine import make_url

from storage.records import Predictions
from storage.store import open_store
from tests.conftest import IMDB_DIR
from tests.storage import samples

N = 25_000


def _predictions() -> Predictions:
    path = IMDB_DIR / "test.parquet"
    if path.exists():
        frame = pd.read_parquet(path, columns=["review_id", "text", "label"]).head(N)
        ids, texts, labels = frame.review_id.tolist(), frame.text.tolist(), frame.label.tolist()
    else:
        ids = [f"test/{i}" for i in range(N)]
        texts, labels = ["a fairly long review " * 60] * N, [i % 2 for i in range(N)]
    probs = [(i % 1000) / 1000 for i in range(N)]
    return Predictions(tuple(ids), tuple(int(x) for x in labels), tuple(probs), tuple(texts))


def _time(url: str, preds: Predictions) -> None:
    store = open_store(url)
    for label in ("first save (texts inserted)", "second save (texts already there)"):
        start = time.perf_counter()
        run_id = store.save_run(samples.spec("baseline"), samples.evaluation(n=N), preds)
        print(f"  {label}: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    frame = store.predictions(run_id)
    print(f"  predictions() read of {len(frame)} rows: {time.perf_counter() - start:.2f} s")
    store.close()


def main(argv: list[str] | None = None) -> int:
    urls = sys.argv[1:] if argv is None else argv
    preds = _predictions()
    chars = sum(map(len, preds.texts or ()))
    print(f"{N} predictions, {chars / 1e6:.1f} M characters of review text")
    with tempfile.TemporaryDirectory() as folder:
        print("SQLite (file, WAL):")
        _time(f"sqlite:///{Path(folder) / 'bench.db'}", preds)
    if urls:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        plain = make_url(urls[0]).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            print("PostgreSQL:")
            _time(f"{urls[0]}?options=-csearch_path%3D{schema}", preds)
        finally:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    sys.exit(main())
