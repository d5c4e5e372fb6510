"""experiments/prepare_data.py: end to end as a subprocess (exit codes, stdout, stderr; marked
slow, about 12 s together), and its argument handling in-process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_prepare import _break, make_tree  # the small real-format tree (tests/ is on sys.path)

from rise_dist.data.cache import open_cache

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "experiments" / "prepare_data.py"
COUNT_KEYS = ["live", "spoof", "videos", "missing"]


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_data_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _assert_clean_failure(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr


def _assert_summary_shape(counts: dict, expected: dict[str, list[str]]) -> None:
    assert list(counts) == list(expected)
    for domain, splits in expected.items():
        assert list(counts[domain]) == splits
        for c in counts[domain].values():
            assert list(c) == COUNT_KEYS
            assert all(type(v) is int for v in c.values())


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


@pytest.mark.slow
def test_real_json_then_skip(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    args = ["--root", root, "--lists", lists, "--out", out, "--size", "10x12", "--workers", "2"]
    proc = cli(*args, "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)
    _assert_summary_shape(counts, {"C": ["val"], "P": ["test"], "W": ["train"]})
    assert counts["W"]["train"] == {"live": 2, "spoof": 2, "videos": 2, "missing": 0}
    assert open_cache(out).size == (10, 12)

    again = cli(*args)  # table output, progress bar on (stderr)
    assert again.returncode == 0, again.stderr
    assert "W/train: cache up to date, skipped" in again.stderr
    header, *rows = again.stdout.splitlines()
    assert header.split() == ["domain", "split", *COUNT_KEYS, "status"]
    assert [r.split() for r in rows] == [["C", "val", "1", "1", "2", "0", "skipped"],
                                         ["P", "test", "1", "1", "2", "0", "skipped"],
                                         ["W", "train", "2", "2", "2", "0", "skipped"]]


@pytest.mark.slow
def test_missing_and_corrupt_fail_then_allow_missing(tree, tmp_path):
    root, lists = tree
    _break(root)
    out = tmp_path / "cache"
    args = ["--root", root, "--lists", lists, "--out", out, "--size", "8x8", "--no-progress"]
    proc = cli(*args, "--json")
    _assert_clean_failure(proc, 1)
    assert f"{lists.resolve() / 'W-train.txt'}:2: W/live_1/depth/0002.png: missing" in proc.stderr
    assert f"{lists.resolve() / 'W-train.txt'}:3: W/spoof_1/color/0001.png: corrupt" in proc.stderr
    assert "were not written" in proc.stderr
    assert json.loads(proc.stdout)["W"]["train"]["missing"] == 2
    assert not (out / "W" / "train").exists()

    proc = cli(*args, "--json", "--allow-missing")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["W"]["train"] == {"live": 1, "spoof": 1, "videos": 2,
                                                     "missing": 2}
    assert "dropped 2 missing or corrupt" in proc.stderr
    assert len(open_cache(out).part("W", "train")) == 2


@pytest.mark.slow
def test_check_writes_nothing_and_caps_listing(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    proc = cli("--root", root, "--lists", lists, "--out", out, "--check", "--json",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    _assert_summary_shape(json.loads(proc.stdout), {"C": ["val"], "P": ["test"], "W": ["train"]})
    assert not out.exists()

    (lists / "S-test.txt").write_text("".join(f"S/v{i}/color/1.jpg S/v{i}/depth/1.jpg "
                                              f"S/v{i}/ir/1.jpg 0\n" for i in range(25)))
    proc = cli("--root", root, "--lists", lists, "--check", "--no-progress")
    _assert_clean_failure(proc, 1)
    assert proc.stderr.count(": missing") == 20 and "... and 5 more" in proc.stderr
    assert "S-test.txt:25:" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_data_errors_are_one_line_messages(tree, tmp_path):
    root, lists = tree
    proc = cli("--root", tmp_path / "nowhere", "--lists", lists, "--out", tmp_path / "c")
    _assert_clean_failure(proc, 1)
    assert f"dataset root {tmp_path / 'nowhere'} does not exist" in proc.stderr

    (lists / "P-val.txt").write_text("a.npz\t1\nb.png\t0\n")
    proc = cli("--root", root, "--lists", lists, "--out", tmp_path / "c", "--no-progress")
    _assert_clean_failure(proc, 1)
    assert f"{lists.resolve() / 'P-val.txt'}:2: 'b.png' is not an .npz name" in proc.stderr

    proc = cli("--root", root, "--lists", tmp_path, "--out", tmp_path / "c")
    _assert_clean_failure(proc, 1)
    assert f"no list files in {tmp_path}" in proc.stderr


@pytest.mark.slow
def test_usage_error_exits_2_without_traceback():
    proc = cli("--size", "224", "--synthetic", "--out", "x")
    _assert_clean_failure(proc, 2)
    assert "--size" in proc.stderr and "usage:" in proc.stderr


@pytest.mark.slow
def test_synthetic(tmp_path):
    out = tmp_path / "syn"
    proc = cli("--synthetic", "--out", out, "--seed", "3", "--size", "16x16", "--json")
    assert proc.returncode == 0, proc.stderr
    _assert_summary_shape(json.loads(proc.stdout), {d: ["train", "val", "test"] for d in "CPSW"})
    cache = open_cache(out)
    assert cache.size == (16, 16) and cache.meta["config"]["seed"] == 3


@pytest.mark.parametrize("args, message", [
    (["--size", "224"], "--size"),
    (["--size", "0x10"], "--size"),
    (["--workers", "0"], "--workers"),
    (["--bogus"], "unrecognized arguments"),
    (["--synthetic", "--root", "r"], "--synthetic does not take --root"),
    (["--synthetic", "--out", "o", "--check", "--workers", "2"],
     "--synthetic does not take --check, --workers"),
    (["--synthetic"], "--synthetic needs --out"),
    (["--root", "r", "--lists", "l", "--seed", "1", "--out", "o"], "--seed is only"),
    (["--root", "r"], "missing --lists, --out"),
    ([], "missing --root, --lists, --out"),
])
def test_usage_errors_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        _load_script().main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_size_parsing():
    parse = _load_script().parse_size
    assert parse("224x224") == (224, 224) and parse("10X12") == (10, 12)


def test_synthetic_default_size_comes_from_the_config(tmp_path, monkeypatch, capsys):
    from rise_dist.config import SyntheticConfig
    from rise_dist.data import synthetic

    seen = []

    def fake_write_synthetic(out, cfg):
        seen.append(cfg)
        return {"C": {"train": dict.fromkeys(COUNT_KEYS, 1)}}

    monkeypatch.setattr(synthetic, "write_synthetic", fake_write_synthetic)
    script = _load_script()
    assert script.main(["--synthetic", "--out", str(tmp_path)]) == 0
    assert seen[0] == SyntheticConfig()  # neither seed nor size passed: the config's defaults
    assert capsys.readouterr().out.splitlines()[1].split() == ["C", "train", "1", "1", "1", "1"]
    args = ["--synthetic", "--out", str(tmp_path), "--seed", "5", "--size", "8x16"]
    assert script.main(args) == 0
    assert seen[1] == SyntheticConfig(seed=5, size=(8, 16))


def test_synthetic_bad_size_is_a_usage_error(tmp_path, capsys):
    assert _load_script().main(["--synthetic", "--out", str(tmp_path), "--size", "4x4"]) == 2
    assert "size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
