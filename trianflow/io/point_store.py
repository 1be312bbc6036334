"""The triangulated points of every pair, kept out of RAM on long runs.

Each solved pair adds a few thousand points (frame, world xyz, pixel here, colour, pixel in the next
frame: 35 bytes each; KITTI: ~4,800 a pair, 67 MB per 400 frames). :class:`PointStore` holds them in
memory up to ``spill_bytes`` and then appends them to one raw file per field in a temporary folder, so a
run's memory stays flat with its length. :meth:`PointStore.finish` gives a plain ``dict`` of arrays when
nothing was spilled (short runs: the same object as before) and a :class:`SpilledPoints` otherwise: a
read-only mapping with the same keys whose arrays are read from disk on access, and whose chunked
:meth:`~SpilledPoints.move_xyz` and :func:`write_npz` never hold a whole field.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

__all__ = ["POINT_FIELDS", "PointStore", "SpilledPoints", "write_npz"]

# field -> (dtype, columns); a pair's chunk is a tuple in this order
POINT_FIELDS = {"frame": (np.int32, 0), "xyz": (np.float32, 3), "xy": (np.float32, 2), "rgb": (np.uint8, 3),
                "xy2": (np.float32, 2)}
_ROW_BYTES = sum(np.dtype(d).itemsize * max(c, 1) for d, c in POINT_FIELDS.values())
_CHUNK_ROWS = 1 << 18  # rows read at a time by the chunked operations (~9 MB of all fields)


def _shape(field: str, n: int) -> tuple:
    cols = POINT_FIELDS[field][1]
    return (n, cols) if cols else (n,)


def empty_points() -> dict:
    return {k: np.zeros(_shape(k, 0), d) for k, (d, _) in POINT_FIELDS.items()}


class PointStore:
    """Per-pair point chunks ``(frame (M,), xyz (M,3), xy (M,2), rgb (M,3), xy2 (M,2))``.

    ``len(store)`` is the number of chunks appended and ``store.last`` the latest one (what a live viewer
    draws). Chunks stay in memory until they take ``spill_bytes``; then they go to raw files under
    ``spill_dir`` (default: the system's temporary folder), removed when the result is garbage-collected.
    """

    def __init__(self, spill_bytes: int = 64 << 20, spill_dir: Optional[str] = None):
        self.spill_bytes = int(spill_bytes)
        self.spill_dir = spill_dir
        self._chunks: list = []
        self._bytes = 0
        self._count = 0
        self._rows = 0
        self.last = None
        self._dir: Optional[Path] = None

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def append(self, chunk: tuple) -> None:
        chunk = tuple(np.ascontiguousarray(a, dtype=POINT_FIELDS[k][0]) for a, k in zip(chunk, POINT_FIELDS))
        self._chunks.append(chunk)
        self.last = chunk
        self._count += 1
        n = len(chunk[0])
        self._rows += n
        self._bytes += n * _ROW_BYTES
        if self._bytes >= self.spill_bytes:
            self._spill()

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="trianflow-points-", dir=self.spill_dir))
        for i, k in enumerate(POINT_FIELDS):
            with open(self._dir / k, "ab") as fh:
                for c in self._chunks:
                    c[i].tofile(fh)
        self._chunks = []
        self._bytes = 0

    def finish(self):
        """All points: a ``dict`` of arrays (nothing spilled) or a :class:`SpilledPoints`."""
        if self._dir is None:
            if not self._chunks:
                return empty_points()
            return {k: np.concatenate([c[i] for c in self._chunks]) for i, k in enumerate(POINT_FIELDS)}
        self._spill()
        out = SpilledPoints(self._dir, self._rows)
        self._dir = None
        return out


class SpilledPoints(Mapping):
    """Points in raw files, one per field (see :data:`POINT_FIELDS`); ``points[key]`` reads a whole field."""

    def __init__(self, folder: Path, rows: int):
        self.folder = Path(folder)
        self.rows = int(rows)
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in POINT_FIELDS:
            raise KeyError(key)
        return np.fromfile(self.folder / key, dtype=POINT_FIELDS[key][0]).reshape(_shape(key, self.rows))

    def __iter__(self) -> Iterator[str]:
        return iter(POINT_FIELDS)

    def __len__(self) -> int:
        return len(POINT_FIELDS)

    def chunks(self, key: str, rows: int = _CHUNK_ROWS) -> Iterator[np.ndarray]:
        dtype = np.dtype(POINT_FIELDS[key][0])
        width = max(POINT_FIELDS[key][1], 1)
        with open(self.folder / key, "rb") as fh:
            for start in range(0, self.rows, rows):
                n = min(rows, self.rows - start)
                yield np.fromfile(fh, dtype=dtype, count=n * width).reshape(_shape(key, n))

    def move_xyz(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Replace ``xyz`` by ``fn(frame, xyz)`` chunk by chunk (in place on disk)."""
        with open(self.folder / "xyz", "r+b") as fh:
            for frame, xyz in zip(self.chunks("frame"), self.chunks("xyz")):
                fh.write(np.ascontiguousarray(fn(frame, xyz), dtype=np.float32).tobytes())

    def close(self) -> None:
        """Remove the files now (they also go when this object is garbage-collected)."""
        self._cleanup()


def write_npz(fh, arrays) -> None:
    """Write ``arrays`` (a dict or :class:`SpilledPoints`) as an uncompressed ``.npz`` to the binary
    file ``fh`` (what :func:`numpy.load` reads), streaming spilled fields chunk by chunk. Uncompressed:
    deflate took 5.3 s of a 60 s KITTI run for 35 % smaller files."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key in arrays:
            with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                if isinstance(arrays, SpilledPoints):
                    dtype = np.dtype(POINT_FIELDS[key][0])
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": _shape(key, arrays.rows)}
                    np.lib.format.write_array_header_1_0(out, header)
                    for c in arrays.chunks(key):
                        out.write(c.tobytes())
                else:
                    np.lib.format.write_array(out, np.asanyarray(arrays[key]), allow_pickle=False)
