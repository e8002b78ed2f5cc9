"""Parameter stores behind one Protocol (seed 001 "Configuration Loader").

A parameter is a JSON document under a name such as ``/ops-pipeline/dispatcher_config_tiny``.
The local store (the default) keeps each parameter as a file in a folder:
``{folder}/dispatcher_config_tiny.json`` (the name's last path segment + ``.json``); its version is
a hash of the file's bytes, so a changed file is a new version. The AWS store (SSM) arrives with
the configuration issue behind the same Protocol.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredParameter:
    """A parameter's raw text, where it came from, and its version."""

    name: str
    text: str
    source: str
    version: str


class ParameterStore(Protocol):
    def get(self, name: str) -> StoredParameter | None:
        """The parameter, or ``None`` if the store has no such name."""
        ...


class LocalParameterStore:
    """Parameters as JSON files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, name: str) -> Path:
        return self.folder / f"{name.rstrip('/').rsplit('/', 1)[-1]}.json"

    def get(self, name: str) -> StoredParameter | None:
        path = self.path_for(name)
        if not path.is_file():
            return None
        raw = path.read_bytes()
        return StoredParameter(name, raw.decode("utf-8"), str(path), hashlib.sha256(raw).hexdigest()[:12])
