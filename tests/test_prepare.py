"""prepare(): decode a small real-format tree (JPEG/PNG images, P npz files) into the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rise_dist.data import prepare as prepare_mod
from rise_dist.data.cache import INDEX_COLUMNS, open_cache, read_shard_info, shard_dir
from rise_dist.data.prepare import PrepareError, Summary, prepare

SIZE = (10, 12)  # (H, W) of the cache; sources are (16, 20): non-square catches H/W swaps
SRC = (16, 20)
# P channel constants: RGB 0-2, IR 3, depth 4; frame 1 differs so frame 0 must be the one used.
P_FRAME0 = (0.1, 0.2, 0.3, 0.6, 0.9)
P_FRAME1 = (0.5, 0.5, 0.5, 0.5, 0.5)


def _image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if path.suffix == ".jpg":
        img.save(path, quality=95)
    else:
        img.save(path)


def _planes(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H0, W0, 3) RGB, (H0, W0) depth and IR uint8 planes, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    h, w = SRC
    # Smooth gradients plus a little noise: JPEG keeps them close to what was written.
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 255 / (w - 1) * 0.6 + yy * 255 / (h - 1) * 0.3).astype(np.float64)
    rgb = np.stack([base, 255 - base, np.full_like(base, seed * 20 % 256)], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)
    depth = np.clip(base * 0.8 + 20, 0, 255).astype(np.uint8)
    ir = np.clip(200 - base * 0.5, 0, 255).astype(np.uint8)
    return rgb, depth, ir


def _sample(root: Path, video: str, frame: int, seed: int, ext: str = "png",
            ir_as_rgb: bool = False) -> str:
    """Write one C/S/W-style sample (RGB, depth L, IR L or grey RGB); return its list line
    without the label."""
    rgb, depth, ir = _planes(seed)
    rel = {m: f"{video}/{folder}/{frame:04d}.{ext}"
           for m, folder in (("rgb", "color"), ("depth", "depth"), ("ir", "ir"))}
    _image(root / rel["rgb"], rgb)
    _image(root / rel["depth"], depth)
    _image(root / rel["ir"], np.repeat(ir[..., None], 3, axis=-1) if ir_as_rgb else ir)
    return f"{rel['rgb']} {rel['depth']} {rel['ir']}"


def _npz(root: Path, name: str) -> str:
    h, w = SRC
    data = np.empty((2, 5, h, w), dtype=np.float32)
    for c in range(5):
        data[0, c] = P_FRAME0[c]
        data[1, c] = P_FRAME1[c]
    np.savez(root / name, data=data)
    return name


def make_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset root and a list directory with W-train (PNG, 4 samples in 2 videos),
    C-val (JPEG, 2 samples, IR stored as grey RGB) and P-test (2 npz). Lists use CRLF and no
    final newline (C/W) and TAB + LF (P), like the published ones."""
    root, lists = tmp_path / "root", tmp_path / "lists"
    root.mkdir()
    lists.mkdir()
    w = [f"{_sample(root, 'W/live_1', 1, 1)} 1", f"{_sample(root, 'W/live_1', 2, 2)} 1",
         f"{_sample(root, 'W/spoof_1', 1, 3)} 0", f"{_sample(root, 'W/spoof_1', 2, 4)} 0"]
    (lists / "W-train.txt").write_bytes("\r\n".join(w).encode())
    c = [f"{_sample(root, 'C/a/live', 7, 5, 'jpg', ir_as_rgb=True)} 1",
         f"{_sample(root, 'C/a/spoof', 7, 6, 'jpg', ir_as_rgb=True)} 0"]
    (lists / "C-val.txt").write_bytes("\r\n".join(c).encode())
    (lists / "P-test.txt").write_bytes(f"{_npz(root, 'pa.npz')}\t1\n{_npz(root, 'pb.npz')}\t0\n"
                                       .encode())
    return root, lists


def _expected(root: Path, rel: str, mode: str) -> np.ndarray:
    with Image.open(root / rel) as img:
        a = np.asarray(img.convert(mode).resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))
    return a.transpose(2, 0, 1) if a.ndim == 3 else a[None]


def _run(root, lists, out, **kw) -> Summary:
    kw = {"size": SIZE, "workers": 2, "progress": False, **kw}
    return prepare(root, lists, out, **kw)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def test_builds_cache_with_pixels_labels_and_lines(tree, tmp_path, monkeypatch):
    root, lists = tree
    monkeypatch.setattr(prepare_mod, "CHUNK", 3)  # several chunks per shard, out of order
    out = tmp_path / "cache"
    summary = _run(root, lists, out)
    assert not summary.failed and summary.problems == []
    assert summary.counts() == {
        "C": {"val": {"live": 1, "spoof": 1, "videos": 2, "missing": 0}},
        "P": {"test": {"live": 1, "spoof": 1, "videos": 2, "missing": 0}},
        "W": {"train": {"live": 2, "spoof": 2, "videos": 2, "missing": 0}},
    }
    assert [s.status for s in summary.shards] == ["built"] * 3

    cache = open_cache(out)
    assert cache.size == SIZE and cache.domains == ("C", "P", "W")
    assert list(cache.index.columns) == list(INDEX_COLUMNS)
    assert cache.meta["kind"] == "real"
    assert cache.meta["root"] == str(root.resolve()) and cache.meta["lists"] == str(lists.resolve())
    assert cache.meta["code_version"] and cache.meta["environment"]["numpy"]

    w = cache.part("W", "train")
    assert {m: (a.shape, a.dtype) for m, a in w.arrays.items()} == {
        "rgb": ((4, 3, *SIZE), np.uint8), "depth": ((4, 1, *SIZE), np.uint8),
        "ir": ((4, 1, *SIZE), np.uint8)}
    assert w.index["label"].tolist() == [1, 1, 0, 0]
    assert w.index["video"].tolist() == ["W/live_1", "W/live_1", "W/spoof_1", "W/spoof_1"]
    assert w.index["list_line"].tolist() == [1, 2, 3, 4]
    assert w.index["attack"].tolist() == ["live", "live", "", ""]
    assert w.index["source"].tolist()[2] == "W/spoof_1/color/0001.png"
    for row, source in enumerate(w.index["source"]):
        video, frame = source.split("/color/")
        assert np.array_equal(w.arrays["rgb"][row], _expected(root, source, "RGB"))
        assert np.array_equal(w.arrays["depth"][row],
                              _expected(root, f"{video}/depth/{frame}", "L"))
        assert np.array_equal(w.arrays["ir"][row], _expected(root, f"{video}/ir/{frame}", "L"))

    c = cache.part("C", "val")
    assert c.index["video"].tolist() == ["C/a/live", "C/a/spoof"]
    assert np.array_equal(c.arrays["rgb"][1], _expected(root, "C/a/spoof/color/0007.jpg", "RGB"))
    # IR stored as grey RGB: luma of equal channels is that grey value.
    assert np.array_equal(c.arrays["ir"][0], _expected(root, "C/a/live/ir/0007.jpg", "L"))

    p = cache.part("P", "test")
    assert p.index["video"].tolist() == ["pa", "pb"]
    assert p.index["source"].tolist() == ["pa.npz", "pb.npz"]
    assert p.index["list_line"].tolist() == [1, 2]
    for row in range(2):
        for m, channels in (("rgb", (0, 1, 2)), ("ir", (3,)), ("depth", (4,))):
            for k, c_ in enumerate(channels):
                assert (p.arrays[m][row, k] == round(P_FRAME0[c_] * 255)).all(), (m, c_)


def test_jpeg_pixels_close_to_what_was_written(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    _run(root, lists, out, workers=1)
    c = open_cache(out).part("C", "val")
    for row, seed in ((0, 5), (1, 6)):
        rgb, depth, ir = _planes(seed)
        for m, plane in (("rgb", rgb), ("depth", depth), ("ir", ir)):
            resized = np.asarray(Image.fromarray(plane).resize((SIZE[1], SIZE[0]),
                                                               Image.Resampling.BILINEAR))
            want = resized.transpose(2, 0, 1) if resized.ndim == 3 else resized[None]
            diff = np.abs(c.arrays[m][row].astype(int) - want.astype(int))
            assert diff.mean() < 3 and diff.max() < 16, (m, row)


def test_one_worker_equals_pool(tree, tmp_path):
    root, lists = tree
    _run(root, lists, tmp_path / "a", workers=1)
    _run(root, lists, tmp_path / "b", workers=3)
    a, b = open_cache(tmp_path / "a"), open_cache(tmp_path / "b")
    assert a.index.equals(b.index)
    for d, s in (("C", "val"), ("P", "test"), ("W", "train")):
        for m in ("rgb", "depth", "ir"):
            assert np.array_equal(a.part(d, s).arrays[m], b.part(d, s).arrays[m])


def test_rerun_skips_and_changed_list_rebuilds(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    first = _run(root, lists, out)
    mtimes = {d: (shard_dir(out, d, s) / "shard.json").stat().st_mtime_ns
              for d, s in (("C", "val"), ("P", "test"), ("W", "train"))}
    again = _run(root, lists, out)
    assert [s.status for s in again.shards] == ["skipped"] * 3
    assert again.counts() == first.counts()
    assert {d: (shard_dir(out, d, s) / "shard.json").stat().st_mtime_ns
            for d, s in (("C", "val"), ("P", "test"), ("W", "train"))} == mtimes

    # Append a duplicate line to W-train: W is rebuilt, the others are kept.
    w = lists / "W-train.txt"
    w.write_bytes(w.read_bytes() + b"\r\n" + w.read_bytes().split(b"\r\n")[0])
    third = _run(root, lists, out)
    assert {s.domain: s.status for s in third.shards} == {"C": "skipped", "P": "skipped",
                                                          "W": "built"}
    assert third.counts()["W"]["train"] == {"live": 3, "spoof": 2, "videos": 2, "missing": 0}
    part = open_cache(out).part("W", "train")
    assert len(part) == 5 and part.index["list_line"].tolist() == [1, 2, 3, 4, 5]
    assert np.array_equal(part.arrays["rgb"][4], part.arrays["rgb"][0])
    assert (shard_dir(out, "C", "val") / "shard.json").stat().st_mtime_ns == mtimes["C"]


def test_other_size_or_root_rebuilds(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    _run(root, lists, out)
    summary = _run(root, lists, out, size=(8, 8))
    assert [s.status for s in summary.shards] == ["built"] * 3
    assert open_cache(out).size == (8, 8)
    moved = tmp_path / "moved"
    os.rename(root, moved)
    assert [s.status for s in _run(moved, lists, out, size=(8, 8)).shards] == ["built"] * 3
    assert read_shard_info(out, "W", "train")["root"] == str(moved.resolve())


def _break(root: Path) -> None:
    """Remove W-train line 2's depth image; truncate line 3's RGB PNG."""
    (root / "W/live_1/depth/0002.png").unlink()
    rgb = root / "W/spoof_1/color/0001.png"
    rgb.write_bytes(rgb.read_bytes()[:60])


def test_missing_and_corrupt_fail_without_writing_the_shard(tree, tmp_path):
    root, lists = tree
    _break(root)
    out = tmp_path / "cache"
    summary = _run(root, lists, out)
    assert summary.failed
    problems = summary.problems
    assert [(Path(p.list_file).name, p.line, p.path) for p in problems] == [
        ("W-train.txt", 2, "W/live_1/depth/0002.png"),
        ("W-train.txt", 3, "W/spoof_1/color/0001.png")]
    assert problems[0].reason == "missing" and problems[1].reason.startswith("corrupt")
    assert "W-train.txt:2: W/live_1/depth/0002.png: missing" in str(problems[0])
    assert summary.counts()["W"] == {"train": {"live": 0, "spoof": 0, "videos": 0, "missing": 2}}
    assert {s.domain: s.status for s in summary.shards}["W"] == "not written"
    # Nothing half-done: no W shard (not even a temporary one); the good shards are cached.
    assert not (out / "W").exists() or not any((out / "W").iterdir())
    assert open_cache(out).domains == ("C", "P")


def test_allow_missing_drops_and_counts(tree, tmp_path):
    root, lists = tree
    _break(root)
    out = tmp_path / "cache"
    summary = _run(root, lists, out, allow_missing=True)
    assert not summary.failed and len(summary.problems) == 2
    assert summary.counts()["W"]["train"] == {"live": 1, "spoof": 1, "videos": 2, "missing": 2}
    part = open_cache(out).part("W", "train")
    assert part.index["list_line"].tolist() == [1, 4]
    assert part.arrays["rgb"].shape == (2, 3, *SIZE)
    assert np.array_equal(part.arrays["rgb"][1], _expected(root, "W/spoof_1/color/0002.png", "RGB"))
    assert not [p for p in (out / "W").iterdir() if p.name.startswith(".")]  # no temporaries

    # Same inputs: skipped, and the recorded problems are reported again.
    again = _run(root, lists, out, allow_missing=True)
    assert {s.domain: s.status for s in again.shards}["W"] == "skipped"
    assert again.counts() == summary.counts() and len(again.problems) == 2
    # Without --allow-missing the still-missing files are an error even though the shard is kept.
    assert _run(root, lists, out).failed

    # The missing file comes back: rebuilt with it.
    _sample(root, "W/live_1", 2, 2)
    fixed = _run(root, lists, out, allow_missing=True)
    assert {s.domain: s.status for s in fixed.shards}["W"] == "built"
    assert fixed.counts()["W"]["train"]["missing"] == 1


def test_stale_shard_removed_when_its_rebuild_fails(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    _run(root, lists, out)
    _break(root)
    (lists / "W-train.txt").write_bytes((lists / "W-train.txt").read_bytes() + b"\r\n")
    assert _run(root, lists, out).failed
    assert not shard_dir(out, "W", "train").exists()
    assert open_cache(out).domains == ("C", "P")


def test_check_writes_nothing(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    summary = _run(root, lists, out, check=True)
    assert not out.exists()
    assert [s.status for s in summary.shards] == ["checked"] * 3
    assert summary.counts()["W"]["train"] == {"live": 2, "spoof": 2, "videos": 2, "missing": 0}
    _break(root)
    summary = _run(root, lists, None, check=True)
    assert summary.failed and len(summary.problems) == 2
    assert summary.counts()["W"]["train"] == {"live": 1, "spoof": 1, "videos": 2, "missing": 2}
    assert not out.exists()


@pytest.mark.parametrize("data, reason", [
    (np.zeros((2, 4, 16, 20), np.float32), "expected (frames, 5, H, W)"),
    (np.zeros((5, 16, 20), np.float32), "expected (frames, 5, H, W)"),
    (np.zeros((0, 5, 16, 20), np.float32), "expected (frames, 5, H, W)"),
    (np.full((1, 5, 16, 20), 2.0, np.float32), "expected [0, 1]"),
    (np.full((1, 5, 16, 20), np.nan, np.float32), "expected [0, 1]"),
    (np.zeros((1, 5, 16, 20), np.uint8), "expected floats"),
])
def test_bad_npz_arrays_are_problems(tree, tmp_path, data, reason):
    root, lists = tree
    np.savez(root / "pb.npz", data=data)
    summary = _run(root, lists, None, check=True)
    (problem,) = summary.problems
    assert (Path(problem.list_file).name, problem.line, problem.path) == ("P-test.txt", 2, "pb.npz")
    assert reason in problem.reason


def test_npz_without_data_or_garbage(tree, tmp_path):
    root, lists = tree
    np.savez(root / "pa.npz", frames=np.zeros((1, 5, 4, 4)))
    (root / "pb.npz").write_bytes(b"not a zip at all")
    problems = _run(root, lists, None, check=True).problems
    assert [p.line for p in problems] == [1, 2]
    assert "no array 'data'" in problems[0].reason and "corrupt" in problems[1].reason


def test_wrong_image_mode_is_a_problem(tree, tmp_path):
    root, lists = tree
    # A grey image where the RGB frame should be; an RGBA depth image.
    Image.new("L", SRC[::-1], 7).save(root / "W/live_1/color/0001.png")
    Image.new("RGBA", SRC[::-1]).save(root / "W/spoof_1/depth/0002.png")
    problems = _run(root, lists, None, check=True).problems
    assert [(p.line, p.reason) for p in problems] == [
        (1, "image mode L, expected RGB for rgb"),
        (4, "image mode RGBA, expected L or RGB for depth")]


def test_garbage_jpeg_is_corrupt(tree, tmp_path):
    root, lists = tree
    (root / "C/a/spoof/ir/0007.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    (problem,) = _run(root, lists, None, check=True).problems
    assert (problem.line, problem.path) == (2, "C/a/spoof/ir/0007.jpg")
    assert problem.reason.startswith("corrupt: ")


def test_missing_root_is_a_clear_error(tree, tmp_path):
    _, lists = tree
    with pytest.raises(PrepareError, match=f"dataset root {tmp_path / 'nowhere'} does not exist"):
        _run(tmp_path / "nowhere", lists, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_bad_size_is_an_error(tree, tmp_path):
    root, lists = tree
    with pytest.raises(PrepareError, match="size"):
        _run(root, lists, tmp_path / "cache", size=(0, 12))


def test_shard_json_records_inputs(tree, tmp_path):
    root, lists = tree
    out = tmp_path / "cache"
    _run(root, lists, out)
    info = json.loads((shard_dir(out, "P", "test") / "shard.json").read_text())
    assert info["root"] == str(root.resolve()) and info["size"] == list(SIZE)
    assert info["list_file"] == str((lists / "P-test.txt").resolve())
    assert len(info["list_sha256"]) == 64 and info["missing"] == []
