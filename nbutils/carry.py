"""Carry a run's resume state between machines in checksummed parts of bounded size.

A lent GPU returns at most 8 files of 16 MiB per call, and a w=64 model's `last.pt` (weights,
momentum, RNG states) is about 90 MB. `pack` writes the files a run needs to continue
(config.json, and per model last.pt with its log.json and train_meta.json) as one tar stream
cut into parts of at most `part_bytes`, each with its sha256 in a JSON manifest; `unpack`
checks every part against the manifest before it writes anything, then restores the files
into a run directory, where `python -m nbutils train --resume` continues exactly.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from nbutils import checks
from nbutils.config import TRAINING_KEYS, diff
from nbutils.runs import MODELS, ArtifactError, atomic_write, load_json, save_json

FORMAT = "nbutils-carry/1"
MIB = 2**20
# The device tool's limit per returned file; parts default to a little less.
MAX_PART_BYTES = 16 * MIB
PART_BYTES = 15 * MIB
RUN_FILES = ("config.json", "timings.json")
MODEL_FILES = ("last.pt", "log.json", "train_meta.json")
CHUNK = MIB


def manifest_path(out_dir: Path, name: str) -> Path:
    """The manifest of the pack `name` in `out_dir`."""
    return Path(out_dir) / f"{name}.manifest.json"


def part_name(name: str, index: int) -> str:
    """File name of part `index` of the pack `name` (letters, digits, '.', '_' only)."""
    return f"{name}.part{index:03d}"


def _check_name(name: Any) -> str:
    """A pack name of letters, digits, '_' and '-' (the device tool returns no other names)."""
    ok = isinstance(name, str) and name and all(c.isalnum() or c in "_-" for c in name)
    if not ok or not name.isascii():
        raise ValueError(f"name: must be letters, digits, '_' or '-', got {name!r}")
    return name


def run_files(run_dir: Path, models: tuple[str, ...] | None = None,
              checkpoints: bool = False) -> list[str]:
    """Paths (relative, POSIX) of what continuing the run needs, in a fixed order."""
    root = Path(run_dir)
    if not (root / "config.json").is_file():
        raise ValueError(f"run_dir: {root} has no config.json; it is not a run directory")
    chosen = tuple(m for m in MODELS if (root / m / "last.pt").is_file())
    if models is not None:
        bad = sorted(set(models) - set(MODELS))
        if bad or not models:
            raise ValueError(f"models: unknown {bad or list(models)}; allowed: "
                             f"{', '.join(MODELS)}")
        missing = [m for m in models if m not in chosen]
        if missing:
            raise ValueError(f"models: {', '.join(missing)} has no last.pt in {root}")
        chosen = tuple(m for m in MODELS if m in models)
    if not chosen:
        raise ValueError(f"run_dir: {root} holds no model with a last.pt to carry")
    files = [f for f in RUN_FILES if (root / f).is_file()]
    for model in chosen:
        files += [f"{model}/{f}" for f in MODEL_FILES if (root / model / f).is_file()]
        if checkpoints:
            files += sorted(str(p.relative_to(root).as_posix())
                            for p in (root / model / "checkpoints").glob("epoch_*.pt"))
    return files


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _progress(root: Path, models: list[str]) -> dict[str, int]:
    """Completed epochs of each carried model, from its log."""
    done = {}
    for model in models:
        path = root / model / "log.json"
        log = load_json(path) if path.is_file() else []
        done[model] = log[-1]["epoch"] if log else 0
    return done


def _tar_stream(root: Path, files: list[str]) -> bytes:
    """The files as one uncompressed tar archive (weights do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            # Owner and time of the packing machine mean nothing where it is unpacked.
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(root / rel, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def pack(run_dir: Path, out_dir: Path, name: str = "carry", part_bytes: int = PART_BYTES,
         models: tuple[str, ...] | None = None, checkpoints: bool = False) -> dict[str, Any]:
    """Write the run's resume state into `out_dir` as parts and a manifest; returns it.

    Refuses an `out_dir` that already holds a pack of this name (nothing is overwritten).
    """
    checks.integer("part_bytes", part_bytes, least=1, most=MAX_PART_BYTES)
    _check_name(name)
    checks.flag("checkpoints", checkpoints)
    root, out = Path(run_dir), Path(out_dir)
    files = run_files(root, models, checkpoints)
    if manifest_path(out, name).exists() or any(out.glob(f"{name}.part*")):
        raise ValueError(f"out_dir: {out} already holds a pack named {name!r}; use an empty "
                         "directory or another name")
    stream = _tar_stream(root, files)
    parts = []
    for index, start in enumerate(range(0, len(stream), part_bytes)):
        chunk = stream[start:start + part_bytes]
        path = out / part_name(name, index)
        atomic_write(path, lambda p, c=chunk: p.write_bytes(c))
        parts.append({"file": path.name, "bytes": len(chunk),
                      "sha256": hashlib.sha256(chunk).hexdigest()})
    carried = sorted({f.split("/")[0] for f in files if "/" in f}, key=MODELS.index)
    manifest = {
        "format": FORMAT, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(root), "config": load_json(root / "config.json")["config"],
        "epochs_done": _progress(root, carried), "part_bytes": part_bytes,
        "total_bytes": len(stream), "sha256": hashlib.sha256(stream).hexdigest(),
        "parts": parts,
        "files": [{"path": rel, "bytes": (root / rel).stat().st_size,
                   "sha256": sha256_file(root / rel)} for rel in files],
    }
    # Written last: a manifest on disk means every part it lists is complete.
    save_json(manifest_path(out, name), manifest)
    return manifest


def read_manifest(parts_dir: Path, name: str = "carry") -> dict[str, Any]:
    """The manifest of the pack `name`, checked for its format."""
    path = manifest_path(parts_dir, _check_name(name))
    manifest = load_json(path, remedy="copy the pack's manifest again from where it was made")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT} manifest")
    return manifest


def verify_parts(parts_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """The parts' paths, each checked for presence, size and sha256; names the first bad one."""
    paths, whole = [], hashlib.sha256()
    remedy = "copy it again from the machine that packed it (see its manifest)"
    for part in manifest["parts"]:
        path = Path(parts_dir) / PurePosixPath(part["file"]).name
        if not path.is_file():
            raise ArtifactError(f"carry: part {path} is missing; {remedy}")
        size = path.stat().st_size
        if size != part["bytes"]:
            raise ArtifactError(f"carry: part {path} has {size} bytes, the manifest says "
                                f"{part['bytes']}; {remedy}")
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
                whole.update(block)
        if digest.hexdigest() != part["sha256"]:
            raise ArtifactError(f"carry: part {path} fails its sha256 check (expected "
                                f"{part['sha256']}, got {digest.hexdigest()}); {remedy}")
        paths.append(path)
    if whole.hexdigest() != manifest["sha256"]:
        raise ArtifactError(f"carry: the parts in {parts_dir} do not make the packed stream "
                            "(its sha256 differs); pack the run again")
    return paths


class _Chain(io.RawIOBase):
    """The parts read one after the other as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths: Iterator[Path] = iter(paths)
        self._handle: BinaryIO | None = None

    def readable(self) -> bool:
        """A stream to read."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the current part, moving to the next at its end."""
        while True:
            if self._handle is None:
                path = next(self._paths, None)
                if path is None:
                    return 0
                self._handle = open(path, "rb")
            n = self._handle.readinto(buffer)
            if n:
                return n
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        """Close the part being read."""
        if self._handle is not None:
            self._handle.close()
        super().close()


def _safe_path(rel: str, expected: dict[str, dict]) -> str:
    """A member path the manifest lists, relative and without '..'."""
    parts = PurePosixPath(rel).parts
    if rel not in expected or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ArtifactError(f"carry: the pack holds {rel!r}, which its manifest does not list")
    return rel


def _check_target(root: Path, manifest: dict[str, Any]) -> None:
    """Refuse a run directory made with other training parameters, or further trained."""
    path = root / "config.json"
    if path.is_file():
        changes = diff(load_json(path)["config"], manifest["config"], TRAINING_KEYS)
        if changes:
            raise ValueError(f"run_dir: {root} was made with a different configuration than "
                             "the pack:\n  " + "\n  ".join(changes)
                             + "\nunpack into another run_dir")
    here = _progress(root, list(manifest["epochs_done"]))
    ahead = [f"{m} is at epoch {here[m]}, the pack at {e}"
             for m, e in manifest["epochs_done"].items() if here[m] > e]
    if ahead:
        raise ValueError(f"run_dir: {root} is further trained than the pack ("
                         + "; ".join(ahead) + "); unpack into another run_dir")


def _extract(member: BinaryIO, target: Path, entry: dict[str, Any]) -> None:
    """Write one member to `target` atomically, checking its size and sha256 first."""
    def write(tmp: Path) -> None:
        digest, size = hashlib.sha256(), 0
        with open(tmp, "wb") as handle:
            while block := member.read(CHUNK):
                digest.update(block)
                size += len(block)
                handle.write(block)
        if (size, digest.hexdigest()) != (entry["bytes"], entry["sha256"]):
            raise ArtifactError(f"carry: {entry['path']} fails its sha256 check after unpacking; "
                                "pack the run again")

    atomic_write(target, write)


def unpack(parts_dir: Path, run_dir: Path, name: str = "carry") -> dict[str, Any]:
    """Check every part of the pack `name`, then restore its files into `run_dir`.

    Nothing is written unless every part is present with its size and sha256. A run directory
    made with other training parameters is refused. Returns the manifest.
    """
    manifest = read_manifest(parts_dir, name)
    root = Path(run_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"run_dir: {root} exists and is not a directory")
    paths = verify_parts(parts_dir, manifest)
    _check_target(root, manifest)
    expected = {entry["path"]: entry for entry in manifest["files"]}
    seen = set()
    with _Chain(paths) as chain, tarfile.open(fileobj=chain, mode="r|") as tar:
        for info in tar:
            rel = _safe_path(info.name, expected)
            if not info.isfile():
                raise ArtifactError(f"carry: {rel!r} in the pack is not a regular file")
            _extract(tar.extractfile(info), root / rel, expected[rel])
            seen.add(rel)
    if seen != set(expected):
        raise ArtifactError(f"carry: the pack lacks {sorted(set(expected) - seen)}; pack again")
    return manifest


def copy_parts(manifest: dict[str, Any], src: Path, dst: Path,
               indices: list[int] | None = None) -> list[Path]:
    """Copy the manifest and the chosen parts (default all) from `src` to `dst`, atomically."""
    dst = Path(dst)
    wanted = range(len(manifest["parts"])) if indices is None else indices
    names = [manifest_path(src, manifest["name"]).name]
    names += [manifest["parts"][i]["file"] for i in wanted]
    copied = []
    for file in names:
        def write(tmp: Path, file: str = file) -> None:
            with open(Path(src) / file, "rb") as a, open(tmp, "wb") as b:
                shutil.copyfileobj(a, b)
        copied.append(atomic_write(dst / file, write))
    return copied


def describe(manifest: dict[str, Any]) -> str:
    """One line on a pack: its models' epochs, parts and size."""
    done = ", ".join(f"{m} at epoch {e}" for m, e in manifest["epochs_done"].items())
    return (f"{manifest['name']}: {done}; {len(manifest['parts'])} part(s), "
            f"{manifest['total_bytes'] / MIB:.1f} MiB")
