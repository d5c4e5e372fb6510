"""List readers on real lines of the published MMDG lists and on synthetic malformed files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from rise_dist.data.lists import (
    ListError,
    ListFormatError,
    find_lists,
    list_stats,
    parse_list_name,
    read_list,
)

FIXTURES = Path(__file__).parent / "fixtures" / "mmdg-lists"

# (lines, live, spoof, videos, duplicates) of each fixture file: lines 1-3 and the last three of
# each original (plus a triplicated line in C-test, S-train, S-test; P: first and last three).
EXPECTED = {
    ("C", "train"): (6, 3, 3, 2, 0), ("C", "val"): (6, 3, 3, 2, 0), ("C", "test"): (9, 3, 6, 3, 2),
    ("P", "train"): (6, 3, 3, 6, 0), ("P", "val"): (6, 3, 3, 6, 0), ("P", "test"): (6, 3, 3, 6, 0),
    ("S", "train"): (9, 6, 3, 3, 2), ("S", "val"): (6, 3, 3, 2, 0), ("S", "test"): (9, 3, 6, 3, 2),
    ("W", "train"): (6, 3, 3, 2, 0), ("W", "val"): (6, 3, 3, 2, 0), ("W", "test"): (6, 3, 3, 2, 0),
}


def test_fixtures_keep_the_published_bytes():
    # Guards against an editor or git normalising the fixtures into something easier to read.
    for path in FIXTURES.glob("[CSW]-*.txt"):
        raw = path.read_bytes()
        assert b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n"), path
        assert not raw.endswith(b"\n"), path
    for path in FIXTURES.glob("P-*.txt"):
        raw = path.read_bytes()
        assert b"\t" in raw and b"\r" not in raw and raw.endswith(b"\n"), path


def test_find_lists_finds_all_twelve_in_order():
    lists = find_lists(FIXTURES)
    assert list(lists) == list(EXPECTED)
    assert all(p.name == f"{d}-{s}.txt" for (d, s), p in lists.items())


@pytest.mark.parametrize("key", list(EXPECTED))
def test_fixture_counts(key):
    entries = read_list(find_lists(FIXTURES)[key])
    s = list_stats(entries)
    assert (s.lines, s.live, s.spoof, s.videos, s.duplicates) == EXPECTED[key]
    assert all((e.domain, e.split) == key for e in entries)
    assert [e.line for e in entries] == list(range(1, len(entries) + 1))
    assert {e.label for e in entries} == {0, 1}


def test_image_line_fields_and_video():
    first, *_, last = read_list(FIXTURES / "C-train.txt")
    assert first.paths == {
        "rgb": "CeFA/CeFA-Race/AF/AF-000/1_000_1_1_1/profile/0026.jpg",
        "depth": "CeFA/CeFA-Race/AF/AF-000/1_000_1_1_1/depth/0026.jpg",
        "ir": "CeFA/CeFA-Race/AF/AF-000/1_000_1_1_1/ir/0026.jpg",
    }
    assert first.label == 1 and first.video == "CeFA/CeFA-Race/AF/AF-000/1_000_1_1_1"
    assert first.source == first.paths["rgb"] and not first.is_npz
    # The last line has no final newline: its label must not carry a stray '\r' or be lost.
    assert last.label == 0 and last.line == 6
    assert last.paths["ir"] == "CeFA/CeFA-Race/CA/CA-199/2_199_3_2_2/ir/0015.jpg"


def test_npz_line_fields_and_video():
    first = read_list(FIXTURES / "P-val.txt")[0]
    assert first.paths == {"npz": "z892e2c8.npz"} and first.is_npz
    assert first.video == "z892e2c8" and first.source == "z892e2c8.npz" and first.label == 1


def test_duplicates_are_kept_in_order():
    entries = read_list(FIXTURES / "S-train.txt")
    assert [e.line for e in entries[3:6]] == [4, 5, 6]
    assert entries[3].paths == entries[4].paths == entries[5].paths
    assert entries[3].video == "CASIA-SURF-CROP/real_part/real_train_part/CLKJ_CS0004/real.rssdk"


def test_entries_pickle():
    # Entries travel to decoding worker processes.
    entries = read_list(FIXTURES / "W-test.txt")
    assert pickle.loads(pickle.dumps(entries)) == entries


# --- tolerance ----------------------------------------------------------------------------------

A = "V/a/color/1.jpg V/a/depth/1.jpg V/a/ir/1.jpg"
B = "V/b/color/2.png V/b/depth/2.png V/b/ir/2.png"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data", [
    f"{A} 1\n{B} 0\n".encode(),                                      # plain LF
    f"{A} 1\r\n{B} 0".encode(),                                      # CRLF, no final newline
    f"{A} 1\r{B} 0\r".encode(),                                      # old Mac CR
    b"\xef\xbb\xbf" + f"{A} 1\n{B} 0\n".encode(),                    # UTF-8 BOM
    f"{A} 1   \t\n{B} 0 \r\n\r\n".encode(),                           # trailing whitespace
    f"{A.replace(' ', chr(9))}\t1\n{B.replace(' ', '   ')}  0\n".encode(),  # tabs, spaces
    f"  {A} 1\n{B} 0\n".encode(),                                     # leading whitespace
])
def test_tolerated_variants(tmp_path, data):
    entries = read_list(_write(tmp_path, "W-train.txt", data))
    assert [(e.label, e.video) for e in entries] == [(1, "V/a"), (0, "V/b")]
    assert entries[0].paths["rgb"] == "V/a/color/1.jpg"


def test_blank_lines_skipped_but_numbered(tmp_path):
    path = _write(tmp_path, "S-val.txt", f"\n{A} 1\n\n   \n{B} 0\n\n".encode())
    assert [e.line for e in read_list(path)] == [2, 5]


def test_windows_separators_normalised(tmp_path):
    line = b"V\\a\\color\\1.jpg V\\a\\depth\\1.jpg V\\a\\ir\\1.jpg 0"
    path = _write(tmp_path, "C-test.txt", line)
    (entry,) = read_list(path)
    assert entry.paths["depth"] == "V/a/depth/1.jpg" and entry.video == "V/a"


def test_npz_with_spaces_and_crlf(tmp_path):
    path = _write(tmp_path, "P-test.txt", b"\xef\xbb\xbfab12.npz 1\r\n\r\ncd34.npz\t\t0")
    assert [(e.video, e.label, e.line) for e in read_list(path)] == [("ab12", 1, 1), ("cd34", 0, 3)]


def test_duplicate_count(tmp_path):
    path = _write(tmp_path, "S-test.txt", f"{A} 1\n{A} 1\n{B} 0\n{A} 1\n".encode())
    s = list_stats(read_list(path))
    assert (s.lines, s.live, s.spoof, s.videos, s.duplicates) == (4, 3, 1, 2, 2)


def test_empty_file_has_no_entries(tmp_path):
    assert read_list(_write(tmp_path, "C-val.txt", b"\r\n\r\n")) == []


# --- malformed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, body, line, reason", [
    ("W-train.txt", f"{A} 1\n{A}\n", 2, "expected 4 fields"),
    ("W-train.txt", f"{A} 1 extra\n", 1, "expected 4 fields"),
    ("W-train.txt", f"{A} 1\n\n{A} 2\n", 3, "label '2'"),
    ("W-train.txt", f"{A} live\n", 1, "label 'live'"),
    ("C-val.txt", "V/a/color/1.jpg V/a/depth/1.txt V/a/ir/1.jpg 0\n", 1, "not an image"),
    ("C-val.txt", "a.jpg b.jpg c.jpg 1\n", 1, "<video>/<modality>/<frame>"),
    ("C-val.txt", "/abs/a/color/1.jpg V/a/depth/1.jpg V/a/ir/1.jpg 1\n", 1, "absolute"),
    ("C-val.txt", "C:/a/color/1.jpg V/a/depth/1.jpg V/a/ir/1.jpg 1\n", 1, "absolute"),
    ("S-test.txt", "V/../../etc/color/1.jpg V/a/depth/1.jpg V/a/ir/1.jpg 1\n", 1, "leaves"),
    ("S-test.txt", "x.npz\t1\n", 1, "expected 4 fields"),
    ("P-train.txt", "ab.npz\t1\r\nab.jpg\t0\r\n", 2, "not an .npz name"),
    ("P-train.txt", "ab.npz\t1\ncd.npz\n", 2, "expected 2 fields"),
    ("P-train.txt", f"{A} 1\n", 1, "expected 2 fields"),
    ("P-train.txt", "ab.npz\t1.0\n", 1, "label '1.0'"),
    ("P-train.txt", ".npz\t1\n", 1, "not an .npz name"),
])
def test_malformed_lines_name_file_and_line(tmp_path, name, body, line, reason):
    path = _write(tmp_path, name, body.encode())
    with pytest.raises(ListFormatError) as info:
        read_list(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.path, err.line) == (path, line)
    assert f"{path}:{line}:" in str(err) and reason in str(err)
    assert pickle.loads(pickle.dumps(err)).line == line


def test_not_utf8_names_line(tmp_path):
    path = _write(tmp_path, "W-val.txt", f"{A} 1\n".encode() + b"V/\xff/color/1.jpg x y 1\n")
    with pytest.raises(ListFormatError, match=r"W-val\.txt:2: not UTF-8"):
        read_list(path)


@pytest.mark.parametrize("name", ["X-train.txt", "C-dev.txt", "c-train.txt", "C_train.txt",
                                  "C-train.csv"])
def test_unknown_file_name(tmp_path, name):
    path = _write(tmp_path, name, f"{A} 1\n".encode())
    with pytest.raises(ListFormatError, match=r"\{C,P,S,W\}-\{train,val,test\}\.txt"):
        read_list(path)
    with pytest.raises(ListFormatError, match=name):
        parse_list_name(path)


def test_find_lists_errors(tmp_path):
    with pytest.raises(ListError, match="does not exist"):
        find_lists(tmp_path / "nope")
    (tmp_path / "README.md").write_text("not a list")
    (tmp_path / "C-dev.txt").write_text(f"{A} 1\n")
    with pytest.raises(ListError, match=rf"no list files in {tmp_path}"):
        find_lists(tmp_path)
    (tmp_path / "P-test.txt").write_text("a.npz\t1\n")
    assert find_lists(tmp_path) == {("P", "test"): tmp_path / "P-test.txt"}
