"""``ops-pipeline deploy`` and ``--target aws``: the accounts as ECS tasks started by EventBridge
Scheduler (seeds 000 and 002; docs/deploy-aws.md).

- :mod:`.settings`: the deploy file (``deploy.toml``), validated whole;
- :mod:`.resources`: names, task definitions, schedules and the dashboard, as values;
- :mod:`.aws`: reading, comparing and changing them with boto3.
"""

from __future__ import annotations

from pathlib import Path

from ops_pipeline.config.loader import ConfigSource, load_accounts, parse_parameter
from ops_pipeline.config.models import AccountSpec, merge_risk_config
from ops_pipeline.deploy import resources
from ops_pipeline.deploy.aws import Deployer, clients
from ops_pipeline.deploy.settings import load_deploy_file
from ops_pipeline.errors import ConfigError


def load_deployer(deploy_file: Path, config_dir: Path | None = None) -> Deployer:
    """The deployer of ``deploy_file`` for the accounts and parameters of the local configuration
    (``--config-dir``, else the user's or the shipped one).

    Every local parameter is validated as a run would (a bad parameter never reaches SSM).

    Raises:
        ConfigError: the deploy file, the accounts file or a parameter is invalid (every problem listed).
    """
    source = ConfigSource.from_dir(config_dir)
    specs = load_accounts(source.accounts_file)
    settings = load_deploy_file(deploy_file, [s.name for s in specs])
    problems: list[str] = []
    parameters: dict[str, str | None] = {}
    for spec in specs:
        problems += [f"{spec.name}: {p}" for p in _schedule_problems(spec)]
        local_name = source.parameter_names(spec.tier)[0]
        stored = source.parameters.get(local_name)
        if stored is not None:
            try:
                merge_risk_config(spec.tier, parse_parameter(stored.text, local_name, stored.source), source=stored.source)
            except ConfigError as exc:
                problems += [f"{spec.name}: {p}" for p in exc.problems]
        parameters[resources.parameter_name(settings, spec.tier)] = stored.text if stored is not None else None
    if problems:
        raise ConfigError("the configuration cannot be deployed", problems)
    return Deployer(settings, specs, clients(settings.region), parameters,
                    source.accounts_file.read_text(encoding="utf-8"))


def _schedule_problems(spec: AccountSpec) -> list[str]:
    try:
        resources.schedule_expression(spec.schedule)
    except ConfigError as exc:
        return exc.problems
    return []
