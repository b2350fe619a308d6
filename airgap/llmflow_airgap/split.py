"""Split a bundle directory into a tar stream cut into fixed-size parts.

Removable media and upload limits cap file sizes, so `build --split-size` writes the bundle
as one tar stream cut into `<name>.tar.part-000`, `-001`, ... with a `sha256sum -c` list of
the parts (a truncated or swapped part is caught before anyone unpacks) and the sha256 of the
whole tar (`cat <name>.tar.part-* > <name>.tar && sha256sum -c <name>.tar.sha256`). The tar
is streamed straight into the parts: nothing is staged, memory stays at one buffer.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from llmflow_airgap.bundle import bundle_files
from llmflow_airgap.errors import BundleError

_SIZE = re.compile(r"^(\d+)([KMGT]i?B?|B)?$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """`700M`, `4G`, `1048576` -> bytes (binary units)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise BundleError(f"size {text!r} must look like 700M, 4G or a byte count")
    unit = (match.group(2) or "").upper()[:1]
    size = int(match.group(1)) * _UNITS[unit]
    if size < 1024 * 1024:
        raise BundleError("split size must be at least 1M")
    return size


@dataclass(frozen=True)
class Part:
    """One written part."""

    path: Path
    sha256: str
    size: int


class _PartWriter:
    """A write-only file object that rolls over to a new part every `part_size` bytes."""

    def __init__(self, prefix: Path, part_size: int) -> None:
        self._prefix = prefix
        self._part_size = part_size
        self._handle: BinaryIO | None = None
        self._hasher = hashlib.sha256()
        self._written = 0
        self.whole = hashlib.sha256()
        self.parts: list[Part] = []

    def _path(self, number: int) -> Path:
        return self._prefix.with_name(f"{self._prefix.name}.part-{number:03d}")

    def _roll(self) -> None:
        self._close_part()
        self._handle = self._path(len(self.parts)).open("wb")
        self._hasher = hashlib.sha256()
        self._written = 0

    def _close_part(self) -> None:
        if self._handle is None:
            return
        self._handle.close()
        path = self._path(len(self.parts))
        self.parts.append(Part(path, self._hasher.hexdigest(), self._written))
        self._handle = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._handle is None or self._written >= self._part_size:
                self._roll()
            assert self._handle is not None
            room = self._part_size - self._written
            piece = view[:room]
            self._handle.write(piece)
            self._hasher.update(piece)
            self.whole.update(piece)
            self._written += len(piece)
            view = view[len(piece) :]
        return len(data)

    def close(self) -> None:
        self._close_part()

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def split_bundle(bundle: Path, out_dir: Path, part_size: int) -> list[Part]:
    """Write `bundle` as `<out_dir>/<name>.tar.part-NNN` plus `.sha256sums` and `.sha256`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{bundle.name}.tar"
    for stale in out_dir.glob(f"{prefix.name}.part-*"):
        stale.unlink()
    with (
        _PartWriter(prefix, part_size) as writer,
        tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar,  # type: ignore[call-overload]
    ):
        for rel in bundle_files(bundle):
            info = tar.gettarinfo(str(bundle / rel), arcname=f"{bundle.name}/{rel}")
            # Owner names of the build host mean nothing at the site.
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with (bundle / rel).open("rb") as handle:
                tar.addfile(info, handle)
    parts = writer.parts
    listing = "".join(f"{p.sha256}  {p.path.name}\n" for p in parts)
    (out_dir / f"{prefix.name}.sha256sums").write_text(listing, encoding="utf-8")
    (out_dir / f"{prefix.name}.sha256").write_text(
        f"{writer.whole.hexdigest()}  {prefix.name}\n", encoding="utf-8"
    )
    return parts
