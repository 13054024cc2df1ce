"""IMDB reviews from a local folder, a Stanford aclImdb one or the hub (splits: trainer.splits)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer import hub
from trainer.errors import DataError
from trainer.splits import Dataset, Split

SPLITS = ("train", "test")
FORMATS = ("parquet", "csv", "jsonl")  # looked for in this order
REQUIRED = ["label", "text"]
OPTIONAL = ["review_id", "rating"]  # read when present; rating: the review's stars
_ACL_FILE = re.compile(r"^(\d+)_(\d+)\.txt$")
_HINT = (
    "pass --data DIR (or IMDB_DATA) with train/test parquet/csv/jsonl files or an aclImdb folder, "
    "e.g. --data ../shared/data/imdb"
)
log = logging.getLogger(__name__)


def load_imdb(source: str, *, progress: bool = False) -> Dataset:
    """Load IMDB from a folder of train/test parquet/csv/jsonl files, an aclImdb folder
    (or its parent) or a Hugging Face hub id, detected in that order.

    Args:
        source: a directory, or a hub id such as "stanfordnlp/imdb".
        progress: show a progress bar while reading many files or downloading.

    Returns:
        The train and test splits; texts are kept exactly as stored.

    Raises:
        DataError: the source is missing, unreadable, unreachable or not IMDB-shaped.
    """
    source = str(source)
    if not source.strip():
        raise DataError(f"no data source was given; {_HINT}")
    path = Path(source).expanduser()
    if path.exists():
        return _from_directory(path.resolve(), progress)
    if not hub.is_hub_id(source):
        raise DataError(f"no such directory: {source}; {_HINT}")
    hub.decide(source)  # an unreachable hub: offline at once, not a minute of retries
    return _from_hub(source, progress)


# --- local files ---------------------------------------------------------------------------


@dataclass
class _Table:
    """Columns read from one file; `lines` maps a row to its first line, where files have lines."""

    file: str
    columns: dict[str, list[Any] | np.ndarray]
    lines: list[int] | None = None

    def where(self, row: int) -> str:
        line = f", line {self.lines[row]}" if self.lines else ""
        return f"row {row}{line}"


def _from_directory(path: Path, progress: bool) -> Dataset:
    if not path.is_dir():
        raise DataError(f"{path} is a file, expected a directory; {_HINT}")
    found = {s: _find_file(path, s) for s in SPLITS}
    if any(found.values()):
        for split, file in found.items():
            if file is None:
                other = next(f for f in found.values() if f is not None)
                raise DataError(
                    f"found {other.name} in {path} but no {split} file; add {split}.parquet, "
                    f"{split}.csv or {split}.jsonl next to it"
                )
        train, test = (_to_split(_read_file(found[s]), s) for s in SPLITS)
        return Dataset(train=train, test=test, source=str(path))
    acl = _acl_root(path)
    if acl is None:
        raise DataError(
            f"{path} holds neither train/test parquet, csv or jsonl files nor an aclImdb folder "
            f"(train/pos, train/neg, test/pos, test/neg); {_HINT}"
        )
    train, test = (_read_acl(acl, s, progress) for s in SPLITS)
    return Dataset(train=train, test=test, source=str(path))


def _find_file(folder: Path, split: str) -> Path | None:
    for fmt in FORMATS:
        if (folder / f"{split}.{fmt}").is_file():
            return folder / f"{split}.{fmt}"
    return None


def _read_file(file: Path) -> _Table:
    if file.suffix == ".parquet":
        return _read_parquet(file)
    text = _decode(_read_bytes(file), file.name)
    return _read_csv(file.name, text) if file.suffix == ".csv" else _read_jsonl(file.name, text)


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as e:
        raise DataError(f"could not read {file}: {e.strerror or e}; check the file") from None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{name} is not valid UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} "
            f"(line {line}); save the file as UTF-8"
        ) from None


def _read_parquet(file: Path) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(file).names
        wanted = [c for c in ("text", "label", *OPTIONAL) if c in names]
        table = pq.read_table(file, columns=wanted)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"could not read {file.name} as parquet ({e}); rewrite the file") from None
    _check_columns(file.name, names)
    columns: dict[str, Any] = {}
    for name in table.column_names:
        try:
            numeric = name in ("label", "rating")
            columns[name] = _arrow_numbers(table, name) if numeric else table[name].to_pylist()
        except UnicodeDecodeError:
            raise DataError(_bad_utf8_row(file.name, table[name])) from None
    return _Table(file.name, columns)


def _arrow_numbers(table: Any, name: str) -> list[Any] | np.ndarray:
    import pyarrow as pa

    column = table[name]
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    if numeric and column.null_count == 0:  # the fast path for the usual int8/int64 labels
        return column.to_numpy()
    return column.to_pylist()


def _bad_utf8_row(name: str, column: Any) -> str:
    import pyarrow as pa

    values = column.cast(pa.binary()).to_pylist()
    row = next(i for i, v in enumerate(values) if v and not _is_utf8(v))
    return f"{name} holds invalid UTF-8 at row {row}; save the text as UTF-8"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_csv(name: str, text: str) -> _Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name} is empty; expected a header with the columns {REQUIRED}")
        _check_columns(name, header)
        lines: list[int] = []
        rows = list(_csv_rows(reader, name, len(header), lines))
    except csv.Error as e:
        raise DataError(
            f"could not parse {name} at line {reader.line_num} ({e}); fix the csv"
        ) from None
    columns = {
        h: [r[i] for r in rows]
        for i, h in enumerate(header)
        if h in ("text", "label", *OPTIONAL)
    }
    columns["text"] = [t if t != "" else None for t in columns["text"]]  # csv cannot hold null
    return _Table(name, columns, lines)


def _csv_rows(reader: Any, name: str, width: int, lines: list[int]) -> Any:
    while True:
        start = reader.line_num + 1
        row = next(reader, None)
        if row is None:
            return
        if not row:  # a blank line
            continue
        if len(row) != width:
            raise DataError(
                f"could not parse {name}: line {start} has {len(row)} fields, the header has "
                f"{width}; quote fields that contain commas or newlines"
            )
        lines.append(start)
        yield row


def _read_jsonl(name: str, text: str) -> _Table:
    records, lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"could not parse {name} at line {number} ({e.msg}); fix the JSON"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"line {number} of {name} is not a JSON object; write one object per line"
            )
        records.append(record)
        lines.append(number)
    keys = {k for r in records for k in r} if records else set(REQUIRED)
    _check_columns(name, sorted(keys))
    missing = next((i for i, r in enumerate(records) if not set(REQUIRED) <= r.keys()), None)
    if missing is not None:
        raise DataError(f"line {lines[missing]} of {name} lacks 'text' or 'label'; add both")
    wanted = [k for k in ("text", "label", *OPTIONAL) if k in keys]
    return _Table(name, {k: [r.get(k) for r in records] for k in wanted}, lines)


def _check_columns(name: str, columns: Sequence[str]) -> None:
    if not set(REQUIRED) <= set(columns):
        raise DataError(
            f"expected the columns {REQUIRED} in {name}, found {sorted(columns)}; rename the "
            f"review column to 'text' and the 0/1 sentiment column to 'label'"
        )


def _to_split(table: _Table, split: str) -> Split:
    texts, name = table.columns["text"], table.file
    if len(texts) == 0:
        raise DataError(f"{name} has no rows; the {split} split needs reviews")
    for row, text in enumerate(texts):
        if text is None:
            raise DataError(
                f"{name}: {table.where(row)} has no text (null or empty); fill in the review or "
                f"drop the row"
            )
        if not isinstance(text, str):
            raise DataError(
                f"{name}: {table.where(row)} holds a {type(text).__name__} as its text, "
                f"expected the review as a string"
            )
    ids = table.columns.get("review_id")
    ids = [f"{split}/{i}" for i in range(len(texts))] if ids is None else _ids(table, ids)
    return Split(tuple(texts), _labels(table), tuple(ids), split, _ratings(table))


def _ids(table: _Table, ids: list[Any]) -> list[str]:
    out = [None if i is None or i == "" else str(i) for i in ids]
    if None in out:
        row = out.index(None)
        raise DataError(f"{table.file}: {table.where(row)} has no review_id; fill in every id")
    if len(set(out)) != len(out):
        dup = Counter(out).most_common(1)[0][0]
        raise DataError(f"{table.file}: the review_id {dup!r} appears twice; make ids unique")
    return out


def _labels(table: _Table) -> np.ndarray:
    raw = table.columns["label"]
    values = np.asarray(raw) if isinstance(raw, np.ndarray) else _numeric(raw)
    ok = np.isin(values, (0, 1))
    if ok.all():
        return values.astype(np.int64)
    bad = np.flatnonzero(~ok)
    shown = sorted({repr(np.asarray(raw[i]).tolist()) for i in bad})[:5]
    raise DataError(
        f"{table.file}: labels must be 0 (negative) or 1 (positive), found {', '.join(shown)} "
        f"(first at {table.where(int(bad[0]))}); map the labels to 0/1"
    )


def _ratings(table: _Table) -> np.ndarray | None:
    """The `rating` column as whole numbers; None when there is none or a value is no number.

    Ratings only feed the audit's slices, so a malformed column is ignored, not an error.
    """
    raw = table.columns.get("rating")
    if raw is None:
        return None
    values = np.asarray(raw) if isinstance(raw, np.ndarray) else _numeric(raw)
    if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values) & (values % 1 == 0)):
        log.warning("%s: the rating column holds values that are not whole numbers; "
                    "ratings are left out", table.file)
        return None
    return values.astype(np.int64)


def _numeric(values: list[Any]) -> np.ndarray:
    """Labels as numbers; NaN where a value is not a number (strings like "1" are converted)."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or v is None:
            continue
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v.strip() if isinstance(v, str) else v)
    return out


# --- Stanford aclImdb folder ---------------------------------------------------------------


def _acl_root(path: Path) -> Path | None:
    for root in (path, path / "aclImdb"):
        if (root / "train").is_dir() or (root / "test").is_dir():
            if all((root / s / c).is_dir() for s in SPLITS for c in ("neg", "pos")):
                return root
            missing = [
                f"{s}/{c}" for s in SPLITS for c in ("neg", "pos") if not (root / s / c).is_dir()
            ]
            raise DataError(
                f"{root} looks like an aclImdb folder but lacks {', '.join(missing)}; "
                f"extract the full aclImdb archive"
            )
    return None


def _read_acl(root: Path, split: str, progress: bool) -> Split:
    texts, labels, ids, ratings = [], [], [], []
    for label, folder in enumerate(("neg", "pos")):
        files = _acl_files(root / split / folder)
        if progress:
            from tqdm.auto import tqdm

            files = tqdm(files, desc=f"reading {split}/{folder}", unit="file")
        for number, rating, file in files:
            try:
                texts.append(_read_bytes(file).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{file} is not valid UTF-8 (byte offset {e.start}); save it as UTF-8"
                ) from None
            labels.append(label)
            ratings.append(rating)
            ids.append(f"{split}/{folder}/{number}")
    if not texts:
        raise DataError(f"{root / split} holds no ID_RATING.txt reviews in neg/ or pos/")
    if len(set(ids)) != len(ids):
        raise DataError(f"{root / split} holds two files with the same review id; keep one")
    return Split(tuple(texts), np.asarray(labels), tuple(ids), split, np.asarray(ratings))


def _acl_files(folder: Path) -> list[tuple[int, int, Path]]:
    """(id, star rating, path) of each ID_RATING.txt review, by id."""
    found = [(_ACL_FILE.match(p.name), p) for p in folder.iterdir()]
    return sorted(((int(m.group(1)), int(m.group(2)), p) for m, p in found if m),
                  key=lambda f: f[0])


# --- Hugging Face hub ----------------------------------------------------------------------


def _from_hub(source: str, progress: bool) -> Dataset:
    dataset = _hub_load(source, progress)
    if not all(s in dataset for s in SPLITS):
        raise DataError(
            f"the hub dataset {source} has the splits {sorted(dataset)}, expected train and test; "
            f"{_HINT}"
        )
    splits = []
    for split in SPLITS:
        data = dataset[split]
        _check_columns(f"the {split} split of {source}", data.column_names)
        wanted = [c for c in ("text", "label", *OPTIONAL) if c in data.column_names]
        splits.append(
            _to_split(_Table(f"{source} ({split})", data.select_columns(wanted).to_dict()), split)
        )
    return Dataset(train=splits[0], test=splits[1], source=source)


def _hub_load(source: str, progress: bool) -> Any:
    """datasets.load_dataset, with hub failures turned into one paragraph."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx  # the httpx2 package under its usual name

    shown = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(source)
    except (DatasetNotFoundError, FileNotFoundError):
        raise DataError(
            f"{source} is neither a local directory nor a dataset the Hugging Face hub offers "
            f"(it may be private or gated); {_HINT}"
        ) from None
    except (ConnectionError, TimeoutError, OSError, httpx.HTTPError, HfHubHTTPError):
        raise DataError(
            f"the Hugging Face hub could not be reached for {source} (offline, no network or "
            f"HF_HUB_OFFLINE=1) and no local copy is cached; {_HINT}"
        ) from None
    except (datasets.exceptions.DatasetsError, ValueError) as e:
        raise DataError(f"could not load {source} from the hub ({e}); {_HINT}") from None
    finally:
        if shown:
            datasets.enable_progress_bars()
