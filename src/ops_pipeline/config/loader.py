"""Load accounts and their effective configuration (seed 001 "Configuration Loader"; SPEC
"Loading configuration").

Parameters of one account: the tier-specific parameter (``{prefix}/dispatcher_config_{tier}``) →
the default parameter (``{prefix}/dispatcher_config``) → tier defaults in code (logged). Invalid
JSON stops startup naming the parameter and the position of the error; every validation problem
of every account is listed at once.

Credentials (only when asked for: ``EXECUTION_MODE=ALPACA_PAPER`` needs them, the simulated broker
does not): ``{secret_prefix}/{tier}`` → ``{secret_prefix}`` → fail naming both. Whatever the mode,
a key that is not a paper key (``PK…``) is refused, and the secret's ``account_name`` must be the
account's own (a typo must not trade, or pass a check as, another account).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ops_pipeline.config.models import AccountConfig, AccountSpec, RiskConfig, SignalSettings, merge_risk_config
from ops_pipeline.config.secrets import (
    AwsSecretStore,
    Credentials,
    LocalSecretStore,
    SecretStore,
    mask,
    parse_credentials,
)
from ops_pipeline.config.stores import AwsParameterStore, LocalParameterStore, ParameterStore, StoredParameter
from ops_pipeline.domain.values import ExecutionMode, Tier
from ops_pipeline.errors import ConfigError

log = logging.getLogger("ops_pipeline.config")
DEFAULT_PREFIX = "/ops-pipeline"
DEFAULT_SECRET_PREFIX = "ops-pipeline/alpaca"
TIER_DEFAULTS_LABEL = "tier defaults (code)"
PLACEHOLDER_KEY_PREFIX = "REPLACE-WITH"
"""How the placeholder secrets of ``deploy apply`` begin (:func:`ops_pipeline.deploy.resources.placeholder_secret`)."""


def default_config_dir() -> Path:
    """The configuration the package ships (four accounts, four tiers' parameters). Read-only: it is
    never written (see :func:`user_config_dir`)."""
    return Path(str(resources.files("ops_pipeline.config") / "defaults"))


def user_config_dir() -> Path:
    """The user's configuration folder: ``$OPS_PIPELINE_CONFIG_HOME``, else
    ``$XDG_CONFIG_HOME/ops-pipeline``, else ``~/.config/ops-pipeline``. Used instead of the shipped
    configuration once it holds an ``accounts.toml``; ``config set`` creates it."""
    if home := os.environ.get("OPS_PIPELINE_CONFIG_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ops-pipeline"


def config_folder(explicit: Path | None = None) -> Path:
    """Where configuration is read from: ``explicit`` (``--config-dir`` / ``OPS_PIPELINE_CONFIG_DIR``),
    else the user folder if it exists, else the shipped configuration."""
    if explicit is not None:
        return explicit
    user = user_config_dir()
    return user if (user / "accounts.toml").is_file() else default_config_dir()


def parse_tier(value: str) -> Tier:
    """``tiny`` → Tier.TINY.

    Raises:
        ConfigError: unknown tier, listing the valid ones (seed 001 fell back to ``large``; that
            would run a typo'd account with the large account's credentials).
    """
    try:
        return Tier(value)
    except ValueError:
        raise ConfigError(f"unknown tier {value!r}; valid tiers: {', '.join(t.value for t in Tier)}") from None


class StoreSettings(BaseSettings):
    """Where configuration and secrets come from (environment variables, ``OPS_PIPELINE_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="OPS_PIPELINE_", extra="ignore", frozen=True)

    config_dir: Path | None = None
    parameter_store: Literal["local", "aws"] = "local"
    secret_store: Literal["local", "aws"] = "local"
    parameter_prefix: str = DEFAULT_PREFIX
    secret_prefix: str = DEFAULT_SECRET_PREFIX
    secrets_file: Path | None = None
    accounts_parameter: str | None = None
    """An SSM parameter holding the accounts file's TOML (what ``deploy apply`` writes for the ECS
    tasks, ``/ops-pipeline/accounts``); read instead of the folder's ``accounts.toml`` when set."""
    execution_mode: ExecutionMode = Field(
        ExecutionMode.SIMULATED, validation_alias=AliasChoices("EXECUTION_MODE", "OPS_PIPELINE_EXECUTION_MODE")
    )


def quiet_aws_loggers() -> None:
    """Keep botocore's, boto3's and urllib3's loggers at INFO or above whatever the root level:
    botocore logs whole response bodies at DEBUG — ``GetSecretValue`` included — and secrets never
    reach a log."""
    for name in ("botocore", "boto3", "urllib3"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))


def boto3_client(service: str) -> Any:
    """A boto3 client (``AWS_ENDPOINT_URL``, ``AWS_REGION``… apply), its loggers quiet
    (:func:`quiet_aws_loggers`)."""
    import boto3  # imported here: only the AWS backends need it

    quiet_aws_loggers()
    return boto3.client(service)


STORE_KEYS = ("parameter_store", "secret_store", "parameter_prefix", "secret_prefix", "secrets_file")


def with_file_defaults(settings: StoreSettings, accounts_file: Path) -> StoreSettings:
    """Fill what the environment did not set from the accounts file's ``[stores]`` table.

    Raises:
        ConfigError: the table has unknown keys or invalid values.
    """
    try:
        table = tomllib.loads(accounts_file.read_text(encoding="utf-8")).get("stores", {})
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return settings  # load_accounts reports these
    unknown = sorted(set(table) - set(STORE_KEYS))
    if unknown:
        raise ConfigError(f"{accounts_file} [stores]: unknown key(s) {', '.join(unknown)}; known: {', '.join(STORE_KEYS)}")
    from_file = {k: v for k, v in table.items() if k not in settings.model_fields_set}
    if not from_file:
        return settings
    try:
        return StoreSettings.model_validate({**settings.model_dump(exclude_unset=True), **from_file})
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, source=f"{accounts_file} [stores]") from None


@dataclass(frozen=True)
class ConfigSource:
    """Where configuration is read from: an accounts file, a parameter store, a secret store."""

    accounts_file: Path
    parameters: ParameterStore
    secrets: SecretStore
    prefix: str = DEFAULT_PREFIX
    secret_prefix: str = DEFAULT_SECRET_PREFIX
    execution_mode: ExecutionMode = ExecutionMode.SIMULATED

    @classmethod
    def from_dir(cls, folder: Path | None) -> ConfigSource:
        """``folder/accounts.toml`` and ``folder/parameters/`` (default: the shipped configuration),
        secrets from the environment."""
        folder = config_folder(folder)
        return cls(folder / "accounts.toml", LocalParameterStore(folder / "parameters"), LocalSecretStore())

    @classmethod
    def from_settings(cls, settings: StoreSettings | None = None, *, config_dir: Path | None = None) -> ConfigSource:
        """Stores chosen by ``OPS_PIPELINE_PARAMETER_STORE`` / ``OPS_PIPELINE_SECRET_STORE`` (local|aws)."""
        settings = settings or StoreSettings()
        folder = config_folder(config_dir or settings.config_dir)
        accounts_file = (accounts_from_parameter(settings.accounts_parameter) if settings.accounts_parameter
                         else folder / "accounts.toml")
        settings = with_file_defaults(settings, accounts_file)
        parameters: ParameterStore = (
            AwsParameterStore(boto3_client("ssm")) if settings.parameter_store == "aws"
            else LocalParameterStore(folder / "parameters")
        )
        secrets: SecretStore = (
            AwsSecretStore(boto3_client("secretsmanager")) if settings.secret_store == "aws"
            else LocalSecretStore(settings.secrets_file)
        )
        return cls(accounts_file, parameters, secrets, settings.parameter_prefix.rstrip("/"),
                   settings.secret_prefix.rstrip("/"), settings.execution_mode)

    def parameter_names(self, tier: Tier) -> tuple[str, str]:
        return f"{self.prefix}/dispatcher_config_{tier.value}", f"{self.prefix}/dispatcher_config"

    def secret_names(self, tier: Tier) -> tuple[str, str]:
        return f"{self.secret_prefix}/{tier.value}", self.secret_prefix


def accounts_from_parameter(name: str) -> Path:
    """The accounts file kept in the SSM parameter ``name``, copied to a private temporary file (the
    loader reads files; an ECS task's disk is its own and goes with it).

    Raises:
        ConfigError: no such parameter.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stored = AwsParameterStore(boto3_client("ssm")).get(name)
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read the accounts parameter {name} from SSM: {exc}") from None
    if stored is None:
        raise ConfigError(f"accounts parameter {name} not found in SSM (`ops-pipeline deploy apply` writes it)")
    folder = Path(tempfile.mkdtemp(prefix="ops-pipeline-accounts-"))
    path = folder / "accounts.toml"
    path.write_text(stored.text, encoding="utf-8")
    log.info("accounts from %s (version %s)", name, stored.version)
    return path


def _read_accounts_file(path: Path) -> dict[str, Any]:
    """The accounts file's TOML.

    Raises:
        ConfigError: missing file or bad TOML.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"accounts file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def load_accounts(path: Path) -> list[AccountSpec]:
    """Read the accounts file.

    Raises:
        ConfigError: missing file, bad TOML, duplicate names, or invalid entries (all listed).
    """
    data = _read_accounts_file(path)
    unknown = sorted(set(data) - {"accounts", "stores", "signals"})
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


def account_spec(path: Path, name: str) -> AccountSpec:
    """The account ``name`` of the accounts file.

    Raises:
        ConfigError: the file is missing or invalid, or declares no such account (its accounts named).
    """
    specs = {s.name: s for s in load_accounts(path)}
    if name not in specs:
        raise ConfigError(f"no account {name!r}; accounts: {', '.join(specs)}")
    return specs[name]


def load_signal_settings(path: Path) -> SignalSettings:
    """The accounts file's ``[signals]`` table (defaults when absent).

    Raises:
        ConfigError: missing file, bad TOML, or invalid settings (all listed).
    """
    try:
        return SignalSettings.model_validate(_read_accounts_file(path).get("signals", {}))
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, source=f"{path} [signals]") from None


def parse_parameter(text: str, name: str, source: str) -> dict[str, Any]:
    """A parameter's JSON object.

    Raises:
        ConfigError: not JSON (the parameter and the line, column and character named) or not an object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"parameter {name} ({source}) is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"parameter {name} ({source}) must be a JSON object, got {type(value).__name__}")
    return value


def find_parameter(tier: Tier, source: ConfigSource) -> StoredParameter | None:
    """The tier-specific parameter, else the default one, else ``None``."""
    for name in source.parameter_names(tier):
        stored = source.parameters.get(name)
        if stored is not None:
            return stored
    return None


def risk_config_for(tier: Tier, stored: StoredParameter | None, *,
                    account_name: str = "") -> tuple[RiskConfig, str, tuple[str, ...]]:
    """Merge a stored parameter (or nothing) with the tier defaults.

    Returns ``(config, label, keys)``: the label names the parameter and its version; ``keys`` are
    the keys the parameter set (the rest come from the tier defaults).

    Raises:
        ConfigError: invalid JSON or invalid values (every problem listed).
    """
    if stored is None:
        log.warning("[%s] no parameter found for tier %s: using tier defaults", account_name or tier.value, tier.value)
        return merge_risk_config(tier, {}, source=TIER_DEFAULTS_LABEL), TIER_DEFAULTS_LABEL, ()
    label = f"{stored.name} (version {stored.version}, {stored.source})"
    params = parse_parameter(stored.text, stored.name, stored.source)
    return merge_risk_config(tier, params, source=label), label, tuple(sorted(params))


def load_account_config(spec: AccountSpec, source: ConfigSource) -> AccountConfig:
    """The effective configuration of one account (no credentials).

    Raises:
        ConfigError: invalid JSON (parameter and position named) or invalid values (all listed).
    """
    stored = find_parameter(spec.tier, source)
    risk, label, keys = risk_config_for(spec.tier, stored, account_name=spec.name)
    return AccountConfig(account=spec, risk=risk, parameter_source=label,
                         parameter_version=stored.version if stored else None, parameter_keys=keys)


def value_sources(config: AccountConfig) -> dict[str, str]:
    """Each effective value's source: the parameter (name and version) or the tier defaults."""
    return {key: (config.parameter_source if key in config.parameter_keys else TIER_DEFAULTS_LABEL)
            for key in config.risk.model_dump()}


def load_credentials(spec: AccountSpec, source: ConfigSource) -> tuple[Credentials, str]:
    """Read this account's credentials now (call per run: rotation needs no restart).

    Returns ``(credentials, "secret name (version …)")``.

    Raises:
        ConfigError: no secret under either name (both named); invalid JSON or fields; a live key or
            another account's secret under ``ALPACA_PAPER``.
    """
    tried = source.secret_names(spec.tier)
    for name in tried:
        stored = source.secrets.get(name)
        if stored is not None:
            break
    else:
        raise ConfigError(f"no credentials for account {spec.name}: secret {tried[0]} not found, nor {tried[1]}")
    credentials = parse_credentials(stored)
    if credentials.api_key.get_secret_value().startswith(PLACEHOLDER_KEY_PREFIX):
        raise ConfigError(f"secret {stored.name} still holds the placeholder `ops-pipeline deploy apply` created: put "
                          f"account {spec.name}'s Alpaca paper keys in it")
    if not credentials.is_paper_key:
        raise ConfigError(
            f"secret {stored.name}: key {mask(credentials.api_key)} is not an Alpaca paper key (paper keys start "
            "with PK); live trading is refused"
        )
    if credentials.account_name != spec.name:
        raise ConfigError(f"secret {stored.name} belongs to account {credentials.account_name!r}, not {spec.name!r} "
                          f"(the accounts file gives tier {spec.tier.value} to {spec.name})")
    return credentials, f"{stored.name} (version {stored.version}, {stored.source})"


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
