"""The deploy file (``deploy.toml``): where and how the accounts run on AWS.

One file for every account of ``accounts.toml``; ``[accounts.NAME]`` changes one account's image
(seed 002 "Update Single Account": a hotfix image for tiny only). Validated whole before anything
is read from or written to AWS: every problem is listed at once.

Example (``deploy/deploy.example.toml``)::

    region = "us-west-2"
    cluster = "ops-pipeline-cluster"
    subnets = ["subnet-0abc"]
    security_groups = ["sg-0abc"]
    image_repository = "160027201036.dkr.ecr.us-west-2.amazonaws.com/ops-pipeline"
    image_tag = "v0.1.0"
    execution_role_arn = "arn:aws:iam::160027201036:role/ops-pipeline-task-execution"
    task_role_arn = "arn:aws:iam::160027201036:role/ops-pipeline-task-{tier}"
    scheduler_role_arn = "arn:aws:iam::160027201036:role/ops-pipeline-scheduler"
    database_url = "arn:aws:secretsmanager:us-west-2:160027201036:secret:ops-pipeline/database-url"

    [accounts.tiny-1k]
    image_tag = "tiny-hotfix"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ops_pipeline.errors import ConfigError

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                      3288, 3653)
"""The values CloudWatch Logs accepts for a log group's retention (``PutRetentionPolicy``)."""
FARGATE_CPU = (256, 512, 1024, 2048, 4096)
SECRET_LIKE = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|DATABASE_URL)", re.IGNORECASE)
LIVE_HOSTS = ("api.alpaca.markets", "data.alpaca.markets")
ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/{}-]+$"


class AccountDeploy(BaseModel):
    """One account's differences from the file's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_repository: str | None = None
    image_tag: str | None = None


class DeploySettings(BaseModel):
    """Where the ECS tasks run and what they run. Units: ``cpu`` in CPU units (256 = ¼ vCPU),
    ``memory`` in MiB, ``log_retention_days`` in days."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]
    cluster: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")] = "ops-pipeline-cluster"
    subnets: Annotated[tuple[str, ...], Field(min_length=1)]
    security_groups: Annotated[tuple[str, ...], Field(min_length=1)]
    assign_public_ip: bool = False
    image_repository: Annotated[str, Field(min_length=1)]
    image_tag: Annotated[str, Field(pattern=r"^[\w][\w.-]{0,127}$")]
    execution_role_arn: Annotated[str, Field(pattern=ROLE_ARN)]
    task_role_arn: Annotated[str, Field(pattern=ROLE_ARN)]
    """May hold ``{tier}``: each account's task gets its own role, which reads only its own secret."""
    scheduler_role_arn: Annotated[str, Field(pattern=ROLE_ARN)]
    database_url: str
    """The ARN of a Secrets Manager secret or an SSM parameter holding the database URL; ECS puts it
    in ``OPS_PIPELINE_DATABASE_URL`` when the task starts. Never the URL itself (it has a password)."""
    cpu: int = 256
    memory: Annotated[int, Field(ge=512, le=30720)] = 512
    log_retention_days: int = 30
    dashboard: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")] = "ops-pipeline"
    parameter_prefix: Annotated[str, Field(pattern=r"^/[\w./-]+$")] = "/ops-pipeline"
    secret_prefix: Annotated[str, Field(pattern=r"^[\w./+=@-]+$")] = "ops-pipeline/alpaca"
    alpaca_base_url: str | None = None
    """A paper exchange's address instead of Alpaca's paper API (tests, rehearsals)."""
    alpaca_data_url: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    """More environment variables for every task (never a secret: refused by name)."""
    accounts: dict[str, AccountDeploy] = Field(default_factory=dict)

    @field_validator("database_url")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not re.match(r"^arn:aws[a-z-]*:(secretsmanager|ssm):[a-z0-9-]+:\d{12}:(secret:|parameter/)\S+$", value):
            raise ValueError("must be the ARN of a Secrets Manager secret or an SSM parameter holding the URL "
                             "(arn:aws:secretsmanager:…:secret:… or arn:aws:ssm:…:parameter/…), not the URL itself")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: int) -> int:
        if value not in FARGATE_CPU:
            raise ValueError(f"Fargate cpu must be one of {', '.join(map(str, FARGATE_CPU))}")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs retention must be one of {', '.join(map(str, LOG_RETENTION_DAYS))} days")
        return value

    @field_validator("alpaca_base_url", "alpaca_data_url")
    @classmethod
    def _paper(cls, value: str | None) -> str | None:
        if value is not None and any(host in value for host in LIVE_HOSTS) and "paper" not in value:
            raise ValueError("live Alpaca endpoints are refused: paper trading only")
        return value

    @field_validator("environment")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if SECRET_LIKE.search(k))
        if bad:
            raise ValueError(f"{', '.join(bad)}: looks like a secret; secrets go in Secrets Manager, not in a task "
                             "definition's environment")
        return value

    def image_for(self, account: str) -> str:
        """``repository:tag`` of ``account`` (its own ``[accounts.NAME]`` values first)."""
        own = self.accounts.get(account, AccountDeploy())
        return f"{own.image_repository or self.image_repository}:{own.image_tag or self.image_tag}"

    @property
    def account_id(self) -> str:
        """The AWS account id, read from the execution role's ARN."""
        return self.execution_role_arn.split(":")[4]

    @property
    def cluster_arn(self) -> str:
        return f"arn:aws:ecs:{self.region}:{self.account_id}:cluster/{self.cluster}"


def load_deploy_file(path: Path, account_names: list[str]) -> DeploySettings:
    """Read and validate ``path`` against the accounts of ``accounts.toml``.

    Raises:
        ConfigError: missing file, bad TOML, invalid values, or ``[accounts.NAME]`` for an account
            ``accounts.toml`` does not declare — every problem listed.
    """
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"deploy file not found: {path} (start from deploy/deploy.example.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    problems: list[str] = []
    try:
        settings = DeploySettings.model_validate(data)
    except ValidationError as exc:
        problems += ConfigError.from_validation(exc, source=str(path)).problems
        settings = None
    unknown = sorted(set(data.get("accounts", {})) - set(account_names))
    problems += [f"accounts.{name}: no such account in accounts.toml ({', '.join(account_names)})" for name in unknown]
    if problems or settings is None:
        raise ConfigError(f"invalid deploy file {path}", problems)
    return settings
