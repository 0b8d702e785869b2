"""Which extractors exist: the built-ins plus every model-repository folder with a ``lookalike.json``.

The registry is read from the repository (``ModelSettings.model_repository``, i.e.
``LOOKALIKE_MODEL_REPOSITORY``) each time it is consulted, cached on the folder listing and the
manifests' modification times, so dropping a folder in (or removing one) changes the set of
extractors without a code change or a restart. A folder whose manifest is broken is left out and
reported (:func:`scan` ``.problems``, and one warning in the log); it never hides the others.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .base import Extractor, ExtractorSpec, ModelSettings, UnknownExtractorError
from .concepts import Concepts
from .effnet import EffnetLite0
from .manifest import MANIFEST_FILE, ManifestError, load_manifest
from .onnxmodel import OnnxModelExtractor, spec_from_manifest
from .phash import PHash

log = logging.getLogger(__name__)

__all__ = ["BUILTINS", "Entry", "ExtractorRegistry", "Scan", "scan"]

BUILTINS: dict[str, type[Extractor]] = {"effnet-lite0": EffnetLite0, "phash": PHash, "concepts": Concepts}


@dataclass(frozen=True)
class Entry:
    """One extractor: its spec, how to build it, and what identifies its current definition."""

    spec: ExtractorSpec
    factory: Callable[[ModelSettings], Extractor]
    source: Path | None = None  # the model folder (None for built-ins)
    version: tuple = ()  # changes when the folder's manifest changes


@dataclass(frozen=True)
class Scan:
    repository: Path
    entries: dict[str, Entry]
    problems: dict[str, str] = field(default_factory=dict)  # folder -> why it is not an extractor


def _builtin_entries(settings: ModelSettings) -> dict[str, Entry]:
    entries = {}
    for name, cls in BUILTINS.items():
        spec = cls.spec_for(settings) if hasattr(cls, "spec_for") else cls.spec  # type: ignore[attr-defined]
        entries[name] = Entry(spec=spec, factory=cls, version=(spec.supports_text,))
    return entries


def _manifest_signature(repository: Path) -> tuple:
    """(folder, mtime, size) of every <repository>/*/lookalike.json, sorted - cheap to recompute."""
    found = []
    try:
        with os.scandir(repository) as it:
            for entry in it:
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                try:
                    st = os.stat(os.path.join(entry.path, MANIFEST_FILE))
                except OSError:
                    continue
                found.append((entry.name, st.st_mtime_ns, st.st_size))
    except OSError:
        return ()
    return tuple(sorted(found))


def _scan_repository(repository: Path, signature: tuple) -> tuple[dict[str, Entry], dict[str, str]]:
    entries: dict[str, Entry] = {}
    problems: dict[str, str] = {}
    for folder, mtime, size in signature:
        model_dir = repository / folder
        try:
            manifest = load_manifest(model_dir / MANIFEST_FILE)
            name = manifest.name_for(folder)
            if name in BUILTINS:
                raise ManifestError(f"{model_dir / MANIFEST_FILE}: {name!r} is a built-in extractor")
            if name in entries:
                raise ManifestError(
                    f"{model_dir / MANIFEST_FILE}: extractor {name!r} is already defined by {entries[name].source}"
                )
        except ManifestError as exc:
            problems[folder] = str(exc)
            continue
        spec = spec_from_manifest(name, manifest)

        def factory(settings: ModelSettings, _n=name, _d=model_dir, _m=manifest) -> Extractor:
            return OnnxModelExtractor(settings, name=_n, model_dir=_d, manifest=_m)

        entries[name] = Entry(spec=spec, factory=factory, source=model_dir, version=(folder, mtime, size))
    return entries, problems


_cache: dict[Path, tuple[tuple, dict[str, Entry], dict[str, str]]] = {}
_cache_lock = threading.Lock()
_reported: set[tuple[str, str]] = set()


def scan(settings: ModelSettings | object | None = None) -> Scan:
    """Every extractor available with ``settings`` (None: the environment), built-ins first."""
    model_settings = ModelSettings.coerce(settings)
    repository = Path(model_settings.model_repository)
    signature = _manifest_signature(repository)
    with _cache_lock:
        cached = _cache.get(repository)
        if cached is None or cached[0] != signature:
            found, problems = _scan_repository(repository, signature)
            _cache[repository] = (signature, found, problems)
            for folder, problem in problems.items():
                if (str(repository / folder), problem) not in _reported:
                    _reported.add((str(repository / folder), problem))
                    log.warning("model repository: %s is not an extractor: %s", folder, problem)
        else:
            _, found, problems = cached
    entries = _builtin_entries(model_settings)
    entries.update(found)
    return Scan(repository=repository, entries=entries, problems=dict(problems))


class ExtractorRegistry(Mapping[str, ExtractorSpec]):
    """Read-only ``name -> ExtractorSpec`` view of :func:`scan` with the environment's settings.

    Looked up afresh on each access (cheap: one directory listing and a stat per manifest), so the
    encoder sees a model folder as soon as it is dropped in. A missing name raises
    :class:`UnknownExtractorError` (a ``KeyError``).
    """

    def __init__(self, settings: ModelSettings | object | None = None) -> None:
        self._settings = settings

    def _entries(self) -> dict[str, Entry]:
        return scan(self._settings).entries

    def __getitem__(self, name: str) -> ExtractorSpec:
        entries = self._entries()
        try:
            return entries[name].spec
        except KeyError:
            raise UnknownExtractorError(name, sorted(entries)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries()))

    def __len__(self) -> int:
        return len(self._entries())

    def __contains__(self, name: object) -> bool:
        return name in self._entries()

    def __repr__(self) -> str:
        return f"ExtractorRegistry({sorted(self._entries())})"
