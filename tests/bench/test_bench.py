"""`python -m bench`: figures, JSON lines and files, on a tiny model and synthetic reviews."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import KEYS, figure, slug
from bench.__main__ import BENCHES, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.jsonl and test.jsonl of short separable reviews."""
    folder = tmp_path_factory.mktemp("reviews")
    for split, n in (("train", 48), ("test", 24)):
        rows = [{"text": f"{'a wonderful' if i % 2 else 'a dreadful'} film number {i}",
                 "label": i % 2} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _bench_in_process(capsys: pytest.CaptureFixture, *args: str) -> list[dict]:
    """Run a benchmark in this process (no second torch import) on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(list(args)) == 0
    finally:
        torch.set_num_threads(threads)
    return _json_lines(capsys.readouterr().out)


def _bench(*args: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "bench", *args], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return _json_lines(done.stdout)


def test_bench_train_prints_one_json_object_per_figure(tiny_model_dir: str, reviews: Path,
                                                        tmp_path: Path) -> None:
    out = _bench("train", "--model", tiny_model_dir, "--data", str(reviews), "--max-length", "32",
                 "--device", "cpu", "--results-dir", str(tmp_path))
    names = [f["name"] for f in out]
    assert names == ["train_samples_per_s", "train_epoch_wall_s", "test_accuracy",
                     "test_predict_reviews_per_s"]
    for fig in out:
        assert set(KEYS) <= set(fig)
        assert fig["ours"] > 0 and fig["peer"] > 0 and fig["ratio"] > 0
        assert fig["config"]["ours"]["train_size"] == 48
    written = tmp_path / f"train-{slug(out[0]['device'])}.jsonl"
    assert [json.loads(line) for line in written.read_text().splitlines()] == out
    assert (tmp_path / f"train-peer-{slug(out[0]['device'])}.json").exists()


def test_bench_train_reuses_a_saved_peer_and_names_unequal_epochs(
        tiny_model_dir: str, reviews: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ("--model", tiny_model_dir, "--data", str(reviews), "--max-length", "32",
              "--device", "cpu", "--results-dir", str(tmp_path), "--train-size", "16")
    peer = _bench_in_process(capsys, "train", *common, "--only", "peer")[0]
    assert peer["config"]["epochs"] == 1
    saved = next(tmp_path.glob("train-peer-*.json"))
    out = _bench_in_process(capsys, "train", *common, "--only", "ours", "--peer-json", str(saved),
                            "--epochs", "2")
    assert "test_accuracy_ours2ep_peer1ep" in [f["name"] for f in out]
    assert out[0]["peer"] == pytest.approx(peer["warm_samples_per_s"], rel=1e-4)


def test_bench_train_compares_with_the_peer_in_fp32_and_in_bf16(
        tiny_model_dir: str, reviews: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = _bench_in_process(capsys, "train", "--model", tiny_model_dir, "--data", str(reviews),
                            "--max-length", "32", "--device", "cpu", "--results-dir",
                            str(tmp_path), "--train-size", "16", "--peer-bf16")
    by_name = {f["name"]: f for f in out}
    fp32, bf16 = by_name["train_samples_per_s"], by_name["train_samples_per_s_vs_peer_bf16"]
    assert fp32["config"]["peer"]["precision"] == "fp32"
    assert bf16["config"]["peer"]["precision"] == "bf16"
    assert fp32["config"]["peer"]["padding"] == "dynamic"  # as a user writes the script
    assert fp32["ours"] == bf16["ours"] and fp32["peer"] != bf16["peer"]
    accuracy = by_name["test_accuracy"]
    for side in ("ours", "peer"):
        low, high = accuracy["ci95"][side]
        assert low <= accuracy[side] <= high


def test_bench_infer_compares_eager_and_fast_scoring(
        tiny_model_dir: str, reviews: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = _bench_in_process(capsys, "infer", "--model", tiny_model_dir, "--data", str(reviews),
                 "--test-size", "24", "--one-shot", "2",
                 "--single", "4", "--results-dir", str(tmp_path), "--method", "int8")
    by_name = {f["name"]: f for f in out}
    assert set(by_name) == {"infer_one_shot_2_reviews_s", "infer_single_p50_ms",
                            "infer_single_p90_ms", "infer_batch_reviews_per_s",
                            "infer_test_accuracy"}
    assert by_name["infer_single_p50_ms"]["higher_is_better"] is False
    assert by_name["infer_test_accuracy"]["config"]["method"] == "int8"
    one_shot = by_name["infer_one_shot_2_reviews_s"]
    assert one_shot["ours"] > 0 and one_shot["peer"] > 0 and one_shot["higher_is_better"] is False
    assert one_shot["config"]["fast_path"] == "eager" and 0 < one_shot["config"]["tokens"] < 40


def test_figure_ratio_is_above_one_when_ours_is_better() -> None:
    fast = figure("t", "s", 2.0, 8.0, higher_is_better=False, device="cpu")
    many = figure("n", "1/s", 30.0, 10.0, higher_is_better=True, device="cpu", config={"a": 1})
    assert fast["ratio"] == 4.0 and many["ratio"] == 3.0
    assert list(many)[:len(KEYS)] == list(KEYS) and many["config"] == {"a": 1}


@pytest.mark.parametrize("name", ["train", "infer", "baseline", "dashboard", "stress"])
def test_every_benchmark_takes_its_options_from_the_dispatcher(name: str, capsys) -> None:
    assert name in BENCHES
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert f"bench {name}" in capsys.readouterr().out


def test_an_unknown_benchmark_is_refused_with_the_known_names(capsys) -> None:
    assert main(["nope"]) == 2
    assert "train, infer, baseline, dashboard" in capsys.readouterr().err


def test_bench_baseline_compares_scikit_learn_defaults_with_ours(
        reviews: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = _bench_in_process(capsys, "baseline", "--data", str(reviews), "--results-dir",
                            str(tmp_path), "--repeat", "2")
    assert [f["name"] for f in out] == ["baseline_train_s", "baseline_test_accuracy",
                                        "baseline_predict_reviews_per_s"]
    assert all(set(KEYS) <= set(f) and f["ours"] > 0 and f["peer"] > 0 for f in out)
    assert out[1]["peer"] == 1.0  # "wonderful" vs "dreadful" is separable for scikit-learn too
