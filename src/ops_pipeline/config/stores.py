"""Parameter stores behind one Protocol (seed 001 "Configuration Loader").

A parameter is a JSON document under a name such as ``/ops-pipeline/dispatcher_config_tiny``.

- **local** (the default) keeps each parameter as a file in a folder:
  ``{folder}/dispatcher_config_tiny.json`` or ``.toml`` (the name's last path segment); its version
  is a hash of the file's bytes, so a changed file is a new version. TOML is converted to JSON text.
- **aws** reads SSM Parameter Store (``GetParameter``; the version is SSM's ``Version``) through
  boto3, so ``AWS_ENDPOINT_URL`` and the usual AWS settings apply.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ops_pipeline.errors import ConfigError


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

    def put(self, name: str, text: str) -> StoredParameter:
        """Create or replace the parameter; returns what is now stored."""
        ...


SETTLED_NS = 2_000_000_000
"""How long ago (ns) a file must have last changed for its status to vouch for its bytes."""


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class LocalParameterStore:
    """Parameters as JSON files in one folder.

    Every :meth:`get` looks at the file (a loop asks before every run, and an edit must count at
    once). The bytes are read again unless the file's status (device, inode, size, modification
    and change times) equals the one they were read under *and* the file had last changed at least
    :data:`SETTLED_NS` before that read: a later write, a rename over it or a ``touch`` changes
    the change time, which no one can set back, and a write within the file system's timestamp
    granularity of the read (the case a status alone misses) is excluded by the margin (git's
    "racily clean" rule)."""

    def __init__(self, folder: Path, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.folder = folder
        self._clock_ns = clock_ns
        """Wall time in ns, as the file system stamps files (injected by tests)."""
        self._read: dict[str, tuple[tuple[int, ...], StoredParameter]] = {}
        self._paths: dict[str, list[tuple[str, Path, str]]] = {}

    def path_for(self, name: str, suffix: str = ".json") -> Path:
        return self.folder / f"{name.rstrip('/').rsplit('/', 1)[-1]}{suffix}"

    def _candidates(self, name: str) -> list[tuple[str, Path, str]]:
        """``name``'s possible files, ``(suffix, path, path as text)``, JSON first."""
        found = self._paths.get(name)
        if found is None:
            found = self._paths[name] = [(suffix, path, str(path))
                                         for suffix in (".json", ".toml") for path in [self.path_for(name, suffix)]]
        return found

    def get(self, name: str) -> StoredParameter | None:
        for suffix, path, text_path in self._candidates(name):
            try:
                st = os.stat(text_path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            seen = self._read.get(text_path)
            if seen is not None and seen[0] == _signature(st) and seen[1].name == name:
                return seen[1]
            read_at = self._clock_ns()
            raw = path.read_bytes()
            text = raw.decode("utf-8")
            if suffix == ".toml":
                try:
                    text = json.dumps(tomllib.loads(text))
                except tomllib.TOMLDecodeError as exc:
                    raise ConfigError(f"parameter {name} ({path}) is not valid TOML: {exc}") from None
            stored = StoredParameter(name, text, str(path), hashlib.sha256(raw).hexdigest()[:12])
            try:
                after = os.stat(text_path)
            except OSError:
                after = None
            settled = read_at - max(st.st_mtime_ns, st.st_ctime_ns) >= SETTLED_NS
            if after is not None and _signature(after) == _signature(st) and settled:
                self._read[text_path] = (_signature(st), stored)
            else:
                self._read.pop(text_path, None)
            return stored
        return None

    def put(self, name: str, text: str) -> StoredParameter:
        """Write a parameter as JSON (replacing a TOML file of the same name).

        Raises:
            ConfigError: the folder is the configuration shipped inside the package.
        """
        shipped = Path(__file__).resolve().parent / "defaults"
        if self.folder.resolve().is_relative_to(shipped):
            raise ConfigError(f"{self.folder} is the configuration shipped with ops-pipeline and is never written; "
                              "give --config-dir, or write to the user configuration folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path_for(name, ".toml").unlink(missing_ok=True)
        self.path_for(name).write_text(text, encoding="utf-8")
        stored = self.get(name)
        assert stored is not None
        return stored


class AwsParameterStore:
    """SSM Parameter Store; a missing parameter is ``None``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get(self, name: str) -> StoredParameter | None:
        try:
            answer = self._client.get_parameter(Name=name)["Parameter"]
        except self._client.exceptions.ParameterNotFound:
            return None
        return StoredParameter(name, answer["Value"], f"aws ssm {name}", str(answer["Version"]))

    def put(self, name: str, text: str) -> StoredParameter:
        """Create or overwrite a String parameter."""
        self._client.put_parameter(Name=name, Value=text, Type="String", Overwrite=True)
        stored = self.get(name)
        assert stored is not None
        return stored
