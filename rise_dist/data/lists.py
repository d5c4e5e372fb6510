"""Readers for the published MMDG benchmark lists (one sample per line).

File names are ``{C,P,S,W}-{train,val,test}.txt`` (domain, split). Line formats:

- C, S, W: ``<rgb path> <depth path> <ir path> <label>``, image paths relative to the dataset
  root; the video is the RGB path minus its last two components (modality folder, frame file),
  e.g. ``CeFA/CeFA-Race/AF/AF-300/1_300_1_1_1``.
- P: ``<name>.npz<TAB><label>``; the video is the npz stem.

Label 1 = live, 0 = spoof. The files come from several systems, so a reader tolerates a UTF-8
BOM, CRLF/CR/LF endings, a missing final newline, blank lines, trailing whitespace and any run of
spaces/tabs between fields. Duplicate lines are kept (the lineage evaluates them; the published
C and S lists contain some) and counted by ``list_stats``. A line that cannot be used raises
``ListFormatError`` naming the file and the 1-based line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rise_dist.data.cache import DOMAINS, LIVE, MODALITIES, SPLITS, SPOOF

NPZ_DOMAINS = ("P",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LIST_NAME = re.compile(r"^(?P<domain>[CPSW])-(?P<split>train|val|test)\.txt$")
_DRIVE = re.compile(r"^[A-Za-z]:")  # "C:/..." or "C:\\..." from a Windows list
LIST_PATTERN = f"{{{','.join(DOMAINS)}}}-{{{','.join(SPLITS)}}}.txt"


class ListError(ValueError):
    """A list file or list directory that cannot be used."""


class ListFormatError(ListError):
    """A line (or the name) of a list file that cannot be used; ``line`` is 1-based, 0 = file."""

    def __init__(self, path: str | Path, line: int, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        where = f"{self.path}:{line}" if line else f"{self.path}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep it picklable across processes despite the custom __init__
        return type(self), (self.path, self.line, self.reason)


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file.

    ``paths`` maps ``rgb``/``depth``/``ir`` to paths relative to the dataset root for C/S/W, and
    ``npz`` to the npz name for P. ``line`` is the 1-based line number in the list file.
    """

    domain: str
    split: str
    line: int
    label: int
    video: str
    paths: dict[str, str] = field(hash=False)

    @property
    def is_npz(self) -> bool:
        return "npz" in self.paths

    @property
    def source(self) -> str:
        """The sample's name in the cache index: the RGB path (C/S/W) or the npz name (P)."""
        return self.paths["npz"] if self.is_npz else self.paths["rgb"]


@dataclass(frozen=True)
class ListStats:
    """Counts of one list: lines (= samples, duplicates included), lives, spoofs, distinct
    videos, and duplicates (lines repeating an earlier line's sample)."""

    lines: int
    live: int
    spoof: int
    videos: int
    duplicates: int


def parse_list_name(path: str | Path) -> tuple[str, str]:
    """``(domain, split)`` from a list file name such as ``C-train.txt``."""
    m = LIST_NAME.match(Path(path).name)
    if m is None:
        raise ListFormatError(path, 0, f"not a benchmark list name; expected {LIST_PATTERN}")
    return m["domain"], m["split"]


def find_lists(list_dir: str | Path) -> dict[tuple[str, str], Path]:
    """The list files present in ``list_dir``, keyed by ``(domain, split)`` in DOMAINS x SPLITS
    order. Other files (a README) are ignored; a directory with none of them is an error."""
    list_dir = Path(list_dir).expanduser()
    if not list_dir.is_dir():
        raise ListError(f"list directory {list_dir} does not exist")
    found = {}
    for domain in DOMAINS:
        for split in SPLITS:
            p = list_dir / f"{domain}-{split}.txt"
            if p.is_file():
                found[(domain, split)] = p
    if not found:
        raise ListError(f"no list files in {list_dir}; expected names {LIST_PATTERN}")
    return found


def read_list(path: str | Path) -> list[ListEntry]:
    """Every sample line of one list file, in file order, duplicates kept."""
    path = Path(path)
    domain, split = parse_list_name(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ListFormatError(path, 0, f"cannot read: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ListFormatError(path, line, f"not UTF-8 text (byte {raw[e.start]:#04x})") from e
    # Normalise endings explicitly: str.splitlines would also split on \f, \x1c, U+2028 ...,
    # which would silently shift line numbers in a malformed file.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    parse = _parse_npz_line if domain in NPZ_DOMAINS else _parse_image_line
    entries = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if fields:
            entries.append(parse(path, domain, split, number, fields))
    return entries


def list_stats(entries: Iterable[ListEntry]) -> ListStats:
    entries = list(entries)
    live = sum(e.label == LIVE for e in entries)
    distinct = {(e.label, tuple(sorted(e.paths.items()))) for e in entries}
    return ListStats(lines=len(entries), live=live, spoof=len(entries) - live,
                     videos=len({e.video for e in entries}),
                     duplicates=len(entries) - len(distinct))


def _label(path: Path, number: int, text: str) -> int:
    if text not in ("0", "1"):
        raise ListFormatError(path, number,
                              f"label {text!r} is not {LIVE} (live) or {SPOOF} (spoof)")
    return int(text)


def _relative(path: Path, number: int, text: str) -> str:
    """``text`` as a '/'-separated path relative to the dataset root (plain string operations:
    pathlib would triple the time to read the lists)."""
    # Lists written on Windows may use backslashes; the datasets' own trees use '/'.
    norm = text.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise ListFormatError(path, number, f"path {text!r} is absolute; expected one relative "
                              "to the dataset root")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ListFormatError(path, number, f"path {text!r} leaves the dataset root")
    return "/".join(parts)


def _suffix(rel: str) -> str:
    name = rel.rpartition("/")[2]
    stem, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and stem else ""


def _parse_image_line(path: Path, domain: str, split: str, number: int,
                      fields: list[str]) -> ListEntry:
    if len(fields) != 4:
        raise ListFormatError(path, number, f"expected 4 fields (<rgb> <depth> <ir> <label>), "
                              f"got {len(fields)}")
    paths = {}
    for modality, text in zip(MODALITIES, fields[:3], strict=True):
        rel = _relative(path, number, text)
        if _suffix(rel) not in IMAGE_SUFFIXES:
            raise ListFormatError(path, number, f"{modality} path {text!r} is not an image "
                                  f"({'/'.join(IMAGE_SUFFIXES)})")
        if rel.count("/") < 2:
            raise ListFormatError(path, number, f"{modality} path {text!r} has no "
                                  "<video>/<modality>/<frame> components")
        paths[modality] = rel
    label = _label(path, number, fields[3])
    video = paths["rgb"].rsplit("/", 2)[0]
    return ListEntry(domain, split, number, label, video, paths)


def _parse_npz_line(path: Path, domain: str, split: str, number: int,
                    fields: list[str]) -> ListEntry:
    if len(fields) != 2:
        raise ListFormatError(path, number, f"expected 2 fields (<name>.npz <label>), "
                              f"got {len(fields)}")
    rel = _relative(path, number, fields[0])
    if _suffix(rel) != ".npz":
        raise ListFormatError(path, number, f"{fields[0]!r} is not an .npz name")
    label = _label(path, number, fields[1])
    stem = rel.rpartition("/")[2][: -len(".npz")]
    return ListEntry(domain, split, number, label, stem, {"npz": rel})
