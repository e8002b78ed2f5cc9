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
import tomllib
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


class LocalParameterStore:
    """Parameters as JSON files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, name: str, suffix: str = ".json") -> Path:
        return self.folder / f"{name.rstrip('/').rsplit('/', 1)[-1]}{suffix}"

    def get(self, name: str) -> StoredParameter | None:
        for suffix in (".json", ".toml"):
            path = self.path_for(name, suffix)
            if path.is_file():
                raw = path.read_bytes()
                text = raw.decode("utf-8")
                if suffix == ".toml":
                    try:
                        text = json.dumps(tomllib.loads(text))
                    except tomllib.TOMLDecodeError as exc:
                        raise ConfigError(f"parameter {name} ({path}) is not valid TOML: {exc}") from None
                return StoredParameter(name, text, str(path), hashlib.sha256(raw).hexdigest()[:12])
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
