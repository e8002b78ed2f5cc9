"""Load accounts and their effective configuration (seed 001 "Configuration Loader"; SPEC
"Loading configuration").

Order for one account's parameters: the tier-specific parameter
(``{prefix}/dispatcher_config_{tier}``) → the default parameter (``{prefix}/dispatcher_config``) →
tier defaults in code (logged). Invalid JSON stops startup naming the parameter and the position
of the error; every validation problem of every account is listed at once.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ops_pipeline.config.models import AccountConfig, AccountSpec, merge_risk_config
from ops_pipeline.config.stores import LocalParameterStore, ParameterStore
from ops_pipeline.errors import ConfigError

log = logging.getLogger("ops_pipeline.config")
DEFAULT_PREFIX = "/ops-pipeline"


def default_config_dir() -> Path:
    """The configuration the package ships (four accounts, four tiers' parameters)."""
    return Path(str(resources.files("ops_pipeline.config") / "defaults"))


@dataclass(frozen=True)
class ConfigSource:
    """Where configuration is read from: an accounts file and a parameter store."""

    accounts_file: Path
    parameters: ParameterStore
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_dir(cls, folder: Path | None) -> ConfigSource:
        """``folder/accounts.toml`` and ``folder/parameters/`` (default: the shipped configuration)."""
        folder = folder or default_config_dir()
        return cls(folder / "accounts.toml", LocalParameterStore(folder / "parameters"))


def load_accounts(path: Path) -> list[AccountSpec]:
    """Read the accounts file.

    Raises:
        ConfigError: missing file, bad TOML, duplicate names, or invalid entries (all listed).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"accounts file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    unknown = sorted(set(data) - {"accounts"})
    problems = [f"{key}: unknown top-level key" for key in unknown]
    specs: list[AccountSpec] = []
    for i, entry in enumerate(data.get("accounts", [])):
        try:
            specs.append(AccountSpec.model_validate(entry))
        except ValidationError as exc:
            problems += [f"accounts[{i}].{p}" for p in ConfigError.from_validation(exc, source=str(path)).problems]
    names = [s.name for s in specs]
    problems += [f"account {n!r} is declared more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    if not specs and not problems:
        problems.append("no [[accounts]] declared")
    if problems:
        raise ConfigError(f"invalid accounts file {path}", problems)
    return specs


def _parse_parameter(text: str, name: str, source: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"parameter {name} ({source}) is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"parameter {name} ({source}) must be a JSON object, got {type(value).__name__}")
    return value


def load_account_config(spec: AccountSpec, source: ConfigSource) -> AccountConfig:
    """The effective configuration of one account.

    Raises:
        ConfigError: invalid JSON (parameter and position named) or invalid values (all listed).
    """
    tier = spec.tier.value
    for name in (f"{source.prefix}/dispatcher_config_{tier}", f"{source.prefix}/dispatcher_config"):
        stored = source.parameters.get(name)
        if stored is not None:
            params = _parse_parameter(stored.text, name, stored.source)
            label = f"{name} (version {stored.version}, {stored.source})"
            break
    else:
        params, label = {}, f"tier defaults for {tier} (no parameter found)"
        log.warning("[%s] no parameter %s/dispatcher_config_%s or default: using tier defaults", spec.name, source.prefix, tier)
    risk = merge_risk_config(spec.tier, params, source=label)
    return AccountConfig(account=spec, risk=risk, parameter_source=label)


def load_all(source: ConfigSource) -> list[AccountConfig]:
    """Every account's configuration, or one :class:`ConfigError` listing every problem."""
    configs: list[AccountConfig] = []
    problems: list[str] = []
    for spec in load_accounts(source.accounts_file):
        try:
            configs.append(load_account_config(spec, source))
        except ConfigError as exc:
            problems += [f"{spec.name}: {p}" for p in exc.problems]
    if problems:
        raise ConfigError("configuration is invalid; nothing was started", problems)
    return configs
