"""The on-disk cache (embeddings, n-gram counts, kNN graphs, built embedding backends under
one directory) is an optimisation, never a dependency:

- an entry is written atomically (a temporary file, then a rename) and a write that fails
  (a full or read-only disk) is skipped with a warning, its temporary file removed;
- an entry that cannot be read (truncated, damaged, not ours) is deleted with a warning and
  recomputed by the caller;
- the directory is kept under a size bound: `prune` deletes the least recently used entries
  (a read touches an entry) until the total fits.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditors.config import DEFAULT_CACHE_MAX_BYTES
from auditors.errors import TrainguardError, one_line

DEFAULT_MAX_BYTES = DEFAULT_CACHE_MAX_BYTES
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# entries: one file each under these folders; a built backend is one directory
_FILE_KINDS = ("embeddings", "ngram-counts", "knn-graphs")
_DIR_KIND = "models"
KINDS = (*_FILE_KINDS, _DIR_KIND)  # the cache's top-level folders
# The paths trainguard writes, and so may delete: `--cache` may name a folder that also
# holds the user's own files (a project's `models/my-bert/checkpoint-500`), never entries.
_ENTRY_PATHS = re.compile(
    r"embeddings/[^/]+/[^/]+/(prompt|response|rejected)-[0-9a-f]{32}\.npz"
    r"|ngram-counts/[0-9a-f]{16}/[0-9a-f]{32}\.npz"
    r"|knn-graphs/[^/]+/[^/]+/[0-9a-f]{16}-k[0-9]+\.npz"
    r"|models/[^/]+-[0-9a-f]{12}/(onnx-int8|static)")  # backends.BACKENDS built from a model
_TMP_SUFFIX = ".tmp.npz"
_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per message and process (an audit reads many entries)."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: cache: {one_line(message)}", file=sys.stderr, flush=True)


def save_npz(path: str | Path, **arrays) -> bool:
    """Write `arrays` (no pickle) to `path` atomically; False, with a warning, when the disk
    refuses (the audit goes on without this entry)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warn(f"cannot write {path.parent} ({exc.strerror or exc}); continuing without caching")
        return False


def load_npz(path: str | Path, read):
    """`read(stored)` of the npz file at `path`, touched as recently used; None when it is
    missing, or damaged (then it is deleted, with a warning, and the caller recomputes)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            value = read(stored)
    except FileNotFoundError:  # never written, or pruned meanwhile
        return None
    except MemoryError:  # the entry may be sound: keep it
        raise
    except Exception as exc:  # truncated (BadZipFile, EOFError), damaged or foreign
        discard(path, f"{type(exc).__name__}: {exc}")
        return None
    touch(path)
    return value


def discard(path: Path, why: str) -> None:
    warn(f"discarded damaged entry {path} ({why}); recomputing it")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):  # a read-only cache: it stays, unused
            path.unlink(missing_ok=True)


def touch(path: str | Path) -> None:
    """Mark an entry as used now (least-recently-used order is by modification time)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def parse_size(text: str) -> int:
    """`10G`, `500M`, `2.5G`, `1048576` -> bytes (binary units)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[:len(value) - len(unit)])
    except ValueError:
        number = -1.0
    if not 0 <= number < 2**60:  # also NaN and infinity
        raise TrainguardError(f"cannot read the size {text!r} (e.g. 10G, 500M)")
    return int(number * _UNITS[unit])


@dataclass
class Entry:
    path: Path
    size: int
    used: float  # modification time: written or last read


def entries(root: str | Path) -> list[Entry]:
    """Every entry under `root`, least recently used first."""
    root = Path(root)
    found = []
    for kind in _FILE_KINDS:
        for path in (root / kind).rglob("*.npz") if (root / kind).is_dir() else []:
            if _is_entry(root, path):
                found.append(_entry(path, [path]))
    models = root / _DIR_KIND
    for path in models.glob("*/*") if models.is_dir() else []:
        if path.is_dir() and _is_entry(root, path):
            found.append(_entry(path, [p for p in path.rglob("*") if p.is_file()]))
    return sorted((e for e in found if e is not None), key=lambda e: e.used)


def _is_entry(root: Path, path: Path) -> bool:
    return _ENTRY_PATHS.fullmatch(path.relative_to(root).as_posix()) is not None


def _entry(path: Path, files: list[Path]) -> Entry | None:
    try:
        return Entry(path, sum(f.stat().st_size for f in files), path.stat().st_mtime)
    except OSError:  # removed meanwhile
        return None


@dataclass
class Pruned:
    removed: int
    freed: int  # bytes
    kept: int  # bytes left


def prune(root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Pruned:
    """Delete the least recently used entries until the rest fit in `max_bytes`, and the
    temporary files of writers that died."""
    _remove_dead_writers_files(Path(root))
    found = entries(root)
    total = sum(e.size for e in found)
    removed = freed = 0
    for entry in found:
        if total - freed <= max_bytes:
            break
        if entry.path.is_dir():
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            entry.path.unlink(missing_ok=True)
        removed, freed = removed + 1, freed + entry.size
    return Pruned(removed, freed, total - freed)


def prune_quietly(root: str | Path | None, max_bytes: int) -> None:
    """`prune` after an audit: a cache that cannot be pruned is only warned about."""
    if root is None or not Path(root).is_dir():
        return
    try:
        prune(root, max_bytes)
    except OSError as exc:
        warn(f"cannot prune {root} ({exc.strerror or exc})")


def _remove_dead_writers_files(root: Path) -> None:
    folders = [root / kind for kind in _FILE_KINDS if (root / kind).is_dir()]
    for tmp in (tmp for folder in folders for tmp in folder.rglob(f".*{_TMP_SUFFIX}")):
        pid = tmp.name[:-len(_TMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
