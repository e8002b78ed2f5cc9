"""Secret stores and broker credentials (seed 001 "Secrets Manager Schema", "Security").

A secret is a JSON object ``{"api_key", "api_secret", "account_name", "initial_balance"}`` under a
name such as ``ops-pipeline/alpaca/tiny``. Backends:

- **env** — ``OPS_PIPELINE_SECRET_OPS_PIPELINE_ALPACA_TINY`` holds the JSON of secret
  ``ops-pipeline/alpaca/tiny`` (the name upper-cased, every non-alphanumeric as ``_``);
- **file** — a JSON or TOML file, outside the repository and readable by its owner only, mapping
  secret names to objects (``OPS_PIPELINE_SECRETS_FILE``);
- **local** — env first, then the file when one is configured (the default);
- **aws** — Secrets Manager through boto3 (``AWS_ENDPOINT_URL`` and the usual settings apply).

The key and the secret are :class:`pydantic.SecretStr`: they print as ``**********``; show a key
with :func:`mask` (its last four characters at most). Error messages never quote a secret's text.

A secret's *version* never derives from its text (a hash of the text would let anyone holding a log
line test guesses of the secret): Secrets Manager's ``VersionId``; for a file, its modification
time; for the environment, ``env`` (it cannot change while a process runs). Credentials are shown
as the key's last four characters and the secret's name and version.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ops_pipeline.errors import ConfigError

ENV_PREFIX = "OPS_PIPELINE_SECRET_"
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


def mask(key: str | SecretStr | None) -> str:
    """``…WXYZ``: at most the last four characters of a key."""
    if key is None:
        return "(none)"
    text = key.get_secret_value() if isinstance(key, SecretStr) else key
    return "…" + text[-4:] if len(text) > 8 else "…" + "*" * 4


def secret_env_name(secret_name: str) -> str:
    """``ops-pipeline/alpaca/tiny`` → ``OPS_PIPELINE_SECRET_OPS_PIPELINE_ALPACA_TINY``."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", secret_name).upper()


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """A secret's raw JSON text, where it came from and its version. ``repr`` hides the text."""

    name: str
    text: str
    source: str
    version: str

    def __repr__(self) -> str:
        return f"StoredSecret(name={self.name!r}, source={self.source!r}, version={self.version!r})"


class SecretStore(Protocol):
    def get(self, name: str) -> StoredSecret | None:
        """The secret, or ``None`` if the store has no such name."""
        ...


def read_private_file(path: Path) -> Any:  # noqa: ANN401 - parsed JSON or TOML
    """The parsed content of a JSON or TOML file that holds secrets.

    Raises:
        ConfigError: the file is missing, inside the repository, readable by group or others, or not
            valid JSON/TOML (the position named, never the content).
    """
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"secrets file not found: {path}")
    if path.is_relative_to(REPOSITORY_ROOT):
        raise ConfigError(f"secrets file {path} is inside the repository {REPOSITORY_ROOT}; keep it outside")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"secrets file {path} is readable by others (mode {stat.filemode(mode)}); run chmod 600 {path}")
    raw = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(raw) if path.suffix == ".toml" else json.loads(raw)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        position = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"secrets file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}{position}") from None


def file_version(path: Path) -> str:
    """A file secret's version: its modification time (changes when the file is rewritten)."""
    return "modified " + dt.datetime.fromtimestamp(path.stat().st_mtime_ns / 1e9, dt.UTC).isoformat(timespec="microseconds")


class EnvSecretStore:
    """Secrets in environment variables (see :func:`secret_env_name`)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = environ

    def get(self, name: str) -> StoredSecret | None:
        env = self._environ if self._environ is not None else os.environ
        variable = secret_env_name(name)
        text = env.get(variable)
        return None if text is None else StoredSecret(name, text, f"env {variable}", "env")


class SecretsFileStore:
    """Secrets in one JSON or TOML file that only its owner can read, kept outside the repository.

    Raises (on first read):
        ConfigError: the file is inside the repository, readable by group or others, or not a
            mapping of names to objects.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        data = read_private_file(self.path)
        if not isinstance(data, dict):
            raise ConfigError(f"secrets file {self.path} must map secret names to objects")
        return data

    def get(self, name: str) -> StoredSecret | None:
        value = self._load().get(name)
        if value is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return StoredSecret(name, text, f"file {self.path}", file_version(self.path.expanduser().resolve()))


class LocalSecretStore:
    """Environment first, then the secrets file if one is configured."""

    def __init__(self, secrets_file: Path | None = None, environ: dict[str, str] | None = None) -> None:
        self._stores: list[SecretStore] = [EnvSecretStore(environ)]
        if secrets_file is not None:
            self._stores.append(SecretsFileStore(secrets_file))

    def get(self, name: str) -> StoredSecret | None:
        for store in self._stores:
            found = store.get(name)
            if found is not None:
                return found
        return None


class AwsSecretStore:
    """AWS Secrets Manager (``GetSecretValue``); a missing secret is ``None``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get(self, name: str) -> StoredSecret | None:
        try:
            answer = self._client.get_secret_value(SecretId=name)
        except self._client.exceptions.ResourceNotFoundException:
            return None
        return StoredSecret(name, answer["SecretString"], f"aws secretsmanager {name}", answer.get("VersionId", ""))


class Credentials(BaseModel):
    """Broker credentials of one account (the secret's JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr
    api_secret: SecretStr
    account_name: Annotated[str, Field(min_length=1)]
    initial_balance: Annotated[Decimal, Field(gt=0)] | None = None

    @property
    def is_paper_key(self) -> bool:
        """Alpaca paper keys start with ``PK`` (live keys with ``AK``)."""
        return self.api_key.get_secret_value().startswith("PK")

    def describe(self) -> str:
        return f"account {self.account_name}, key {mask(self.api_key)}"


def parse_credentials(secret: StoredSecret) -> Credentials:
    """Validate a secret's JSON.

    Raises:
        ConfigError: naming the secret and the position or the fields at fault, never the values.
    """
    try:
        data = json.loads(secret.text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"secret {secret.name} ({secret.source}) is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    try:
        return Credentials.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, source=f"secret {secret.name} ({secret.source})") from None
