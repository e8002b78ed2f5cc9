"""``ops-pipeline config …``: show, check, validate, diff, set, push, history (thin over config/).

``config set`` never writes the configuration shipped inside the package: without ``--config-dir``
it writes the user configuration folder (``~/.config/ops-pipeline``; created from the shipped
defaults the first time), which is then read by every command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.cli.common import console, open_database, work_dir
from ops_pipeline.config.loader import (
    TIER_DEFAULTS_LABEL,
    ConfigSource,
    StoreSettings,
    boto3_client,
    default_config_dir,
    find_parameter,
    load_accounts,
    load_credentials,
    parse_parameter,
    parse_tier,
    risk_config_for,
    user_config_dir,
)
from ops_pipeline.config.models import AccountSpec, RiskConfig, merge_risk_config
from ops_pipeline.config.secrets import AwsSecretStore
from ops_pipeline.config.stores import AwsParameterStore, LocalParameterStore, StoredParameter
from ops_pipeline.config.watcher import risk_diff
from ops_pipeline.domain.values import Tier
from ops_pipeline.errors import ConfigError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Configuration: parameters, credentials, history.")

TierOption = Annotated[str, typer.Option("--tier", envvar="ACCOUNT_TIER", help="tiny, small, medium or large.")]
ConfigDir = Annotated[Path | None, typer.Option("--config-dir", envvar="OPS_PIPELINE_CONFIG_DIR",
                                                help="Folder with accounts.toml and parameters/.")]


def _source(config_dir: Path | None) -> ConfigSource:
    return ConfigSource.from_settings(config_dir=config_dir)


def _fail(problems: list[str], title: str) -> typer.Exit:
    """Every problem on its own whole line (they get copied and searched), exit 1."""
    console.print(title, style="red", markup=False, soft_wrap=True)
    for problem in problems:
        console.print(f"  - {problem}", markup=False, soft_wrap=True)
    return typer.Exit(1)


def _spec_for(source: ConfigSource, tier: Tier, account: str | None) -> AccountSpec:
    specs = load_accounts(source.accounts_file)
    matches = [s for s in specs if (s.name == account if account else s.tier is tier)]
    if not matches:
        raise ConfigError(f"no account {account or 'of tier ' + tier.value} in {source.accounts_file}; "
                          f"accounts: {', '.join(s.name for s in specs)}")
    if matches[0].tier is not tier:
        raise ConfigError(f"account {matches[0].name} is tier {matches[0].tier.value}, not {tier.value}")
    return matches[0]


def _effective(tier: Tier, source: ConfigSource) -> tuple[RiskConfig, str, StoredParameter | None, dict[str, str]]:
    stored = find_parameter(tier, source)
    risk, label, keys = risk_config_for(tier, stored)
    short = f"{stored.name}@{stored.version}" if stored else TIER_DEFAULTS_LABEL
    sources = {k: (short if k in keys else TIER_DEFAULTS_LABEL) for k in risk.model_dump()}
    return risk, label, stored, sources


@app.command("show")
def show(tier: TierOption, account: Annotated[str | None, typer.Option("--account")] = None,
         as_json: Annotated[bool, typer.Option("--json")] = False, config_dir: ConfigDir = None) -> None:
    """The effective configuration of a tier (or account), each value with its source."""
    try:
        source = _source(config_dir)
        t = parse_tier(tier)
        risk, label, _, sources = _effective(t, source)
        spec = _spec_for(source, t, account) if account else None
    except ConfigError as exc:
        raise _fail(exc.problems, "configuration cannot be loaded") from None
    try:
        credentials, secret_label = load_credentials(spec, source) if spec else (None, None)
        secret = f"{credentials.describe()} from {secret_label}" if credentials else "(not read: give --account)"
    except ConfigError as exc:
        secret = f"unavailable: {exc}"
    values = risk.model_dump(mode="json")
    if as_json:
        console.print_json(json.dumps({"tier": t.value, "account": spec.name if spec else None, "parameter": label,
                                       "values": {k: {"value": v, "source": sources[k]} for k, v in values.items()},
                                       "credentials": secret}))
        return
    table = Table(title=f"{t.value}{' / ' + spec.name if spec else ''}: parameters from {label}", title_justify="left")
    for col in ("key", "value", "source"):
        table.add_column(col, overflow="fold")
    for key, value in values.items():
        table.add_row(key, json.dumps(value), sources[key])
    console.print(table)
    console.print(f"credentials: {secret}", markup=False, soft_wrap=True)


@app.command("check")
def check(tier: TierOption, account: Annotated[str | None, typer.Option("--account")] = None,
          config_dir: ConfigDir = None) -> None:
    """The whole startup load for a tier, credentials included, without calling the broker.
    Exit 0 when everything loads; otherwise exit 1 listing every problem."""
    problems: list[str] = []
    try:
        source = _source(config_dir)
        t = parse_tier(tier)
    except ConfigError as exc:
        raise _fail(exc.problems, "configuration check failed") from None
    risk = None
    try:
        risk, label, _, _ = _effective(t, source)
    except ConfigError as exc:
        problems += exc.problems
    try:
        spec = _spec_for(source, t, account)
        credentials, secret_label = load_credentials(spec, source)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise _fail(problems, f"configuration check failed for tier {t.value} ({len(problems)} problem(s))")
    assert risk is not None
    console.print(f"ok: tier {t.value}, account {spec.name}, parameters from {label}, "
                  f"credentials {credentials.describe()} from {secret_label}, mode {source.execution_mode.value}",
                  markup=False, soft_wrap=True)


def _read_file_parameter(path: Path) -> dict[str, Any]:
    store = LocalParameterStore(path.parent)
    stored = store.get(path.stem) if path.suffix in {".json", ".toml"} else None
    if stored is None:
        raise ConfigError(f"{path}: not a .json or .toml parameter file")
    return parse_parameter(stored.text, str(path), str(path))


@app.command("validate")
def validate(file: Path, tier: Annotated[str | None, typer.Option("--tier", envvar="ACCOUNT_TIER")] = None) -> None:
    """Validate a parameter file (JSON or TOML) against a tier (default: its ``account_tier``)."""
    try:
        params = _read_file_parameter(file)
        t = parse_tier(tier or str(params.get("account_tier", "")))
        merge_risk_config(t, params, source=str(file))
    except ConfigError as exc:
        raise _fail(exc.problems, f"{file} is invalid") from None
    console.print(f"ok: {file} is a valid {t.value} parameter", markup=False, soft_wrap=True)


@app.command("diff")
def diff(file: Path, tier: TierOption, config_dir: ConfigDir = None) -> None:
    """What would change in the tier's effective configuration if FILE became its parameter."""
    try:
        source = _source(config_dir)
        t = parse_tier(tier)
        current, label, _, _ = _effective(t, source)
        proposed = merge_risk_config(t, _read_file_parameter(file), source=str(file))
    except ConfigError as exc:
        raise _fail(exc.problems, "cannot compare") from None
    changes = risk_diff(current, proposed)
    if not changes:
        console.print(f"no change against {label}", markup=False, soft_wrap=True)
    for key, (old, new) in changes.items():
        console.print(f"{key}: {json.dumps(old)} → {json.dumps(new)}", markup=False, soft_wrap=True)


@app.command("set")
def set_value(assignment: str, tier: TierOption, config_dir: ConfigDir = None) -> None:
    """``KEY=VALUE`` (VALUE as JSON, else text) in the tier's parameter, validated before it is written."""
    if "=" not in assignment:
        raise _fail([f"expected KEY=VALUE, got {assignment!r}"], "nothing written")
    key, raw = assignment.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    try:
        settings = StoreSettings()
        if config_dir is None and settings.config_dir is None and settings.parameter_store == "local":
            config_dir = _user_folder()
        source = _source(config_dir)
        t = parse_tier(tier)
        name = source.parameter_names(t)[0]
        stored = source.parameters.get(name)
        current = parse_parameter(stored.text, name, stored.source) if stored else {}
        old = merge_risk_config(t, current, source=name)
        params = {**(current or {"account_tier": t.value}), key.strip(): value}
        new = merge_risk_config(t, params, source=f"{name} with {key.strip()}={raw}")
        written = source.parameters.put(name, json.dumps(params, indent=2) + "\n")
    except ConfigError as exc:
        raise _fail(exc.problems, "nothing written") from None
    changes = risk_diff(old, new)
    console.print(f"wrote {name} (version {written.version}, {written.source}): "
                  + (", ".join(f"{k} {a} → {b}" for k, (a, b) in changes.items()) or "no effective change"),
                  markup=False, soft_wrap=True)


def _user_folder() -> Path:
    """The user configuration folder, created from the shipped defaults the first time."""
    folder = user_config_dir()
    if not (folder / "accounts.toml").is_file():
        shipped = default_config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shipped / "accounts.toml", folder / "accounts.toml")
        shutil.copytree(shipped / "parameters", folder / "parameters", dirs_exist_ok=True)
        console.print(f"created {folder} from the shipped configuration; it is used from now on "
                      "(--config-dir or OPS_PIPELINE_CONFIG_DIR choose another)", markup=False, soft_wrap=True)
    return folder


@app.command("push")
def push(to: Annotated[str, typer.Option("--to", help="Only 'aws'.")] = "aws", config_dir: ConfigDir = None,
         prefix: Annotated[str | None, typer.Option("--prefix")] = None) -> None:
    """Create or update every tier's parameter in SSM from the local files, and a placeholder secret
    per tier in Secrets Manager that is never overwritten if present."""
    if to != "aws":
        raise _fail([f"--to must be aws, not {to!r}"], "nothing pushed")
    settings = StoreSettings()
    local = ConfigSource.from_dir(config_dir or settings.config_dir)
    ssm = AwsParameterStore(boto3_client("ssm"))
    secrets_client = boto3_client("secretsmanager")
    secrets = AwsSecretStore(secrets_client)
    param_prefix = (prefix or settings.parameter_prefix).rstrip("/")
    for tier in Tier:
        name = f"{local.prefix}/dispatcher_config_{tier.value}"
        stored = local.parameters.get(name)
        if stored is None:
            console.print(f"{tier.value}: no local parameter, skipped", markup=False, soft_wrap=True)
            continue
        try:
            merge_risk_config(tier, parse_parameter(stored.text, name, stored.source), source=stored.source)
        except ConfigError as exc:
            raise _fail(exc.problems, f"{stored.source} is invalid; nothing more pushed") from None
        target = f"{param_prefix}/dispatcher_config_{tier.value}"
        written = ssm.put(target, stored.text)
        secret_name = f"{settings.secret_prefix}/{tier.value}"
        if secrets.get(secret_name) is None:
            placeholder = {"api_key": "PK-REPLACE-ME", "api_secret": "REPLACE-ME", "account_name": f"{tier.value}-account"}
            secrets_client.create_secret(Name=secret_name, SecretString=json.dumps(placeholder))
            secret_state = "placeholder created (fill in the real paper keys)"
        else:
            secret_state = "exists, left as it is"
        console.print(f"{tier.value}: {target} version {written.version}; secret {secret_name} {secret_state}", markup=False, soft_wrap=True)


@app.command("history")
def history(tier: Annotated[str | None, typer.Option("--tier")] = None,
            account: Annotated[str | None, typer.Option("--account")] = None,
            database_url: Annotated[str | None, typer.Option("--database-url", envvar="OPS_PIPELINE_DATABASE_URL")] = None,
            limit: int = 50) -> None:
    """Applied and refused configuration versions, newest first."""
    db = open_database(database_url, default=work_dir() / "replay.db", read_only=True)
    with db.read() as conn:
        rows = SharedRepository(conn).config_history(tier=tier, account_name=account, limit=limit)
    table = Table(title="configuration history", title_justify="left")
    for col in ("when (UTC)", "account", "tier", "parameter", "version", "accepted", "diff / reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        detail = r.reason if not r.accepted or not r.diff else ", ".join(f"{k} {a} → {b}" for k, (a, b) in r.diff.items())
        table.add_row(f"{r.recorded_at:%Y-%m-%d %H:%M}", r.account_name or "", r.tier, r.source, r.version or "",
                      "yes" if r.accepted else "[red]refused[/]", detail or "")
    console.print(table)

