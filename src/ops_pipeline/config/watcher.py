"""Reload in LOOP mode (SPEC "Loading configuration"; seed 001 Phase 12).

Before each run the watcher looks at the account's parameter. A new version (SSM ``Version``, or
the file's content hash) is validated: if valid it is applied and the diff logged; if not, the
old configuration is kept and the refusal logged and counted. Either way the version is recorded
once in the config history (``config_versions``), with the diff or the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops_pipeline.config.loader import ConfigSource, find_parameter, load_account_config
from ops_pipeline.config.models import AccountConfig, RiskConfig
from ops_pipeline.errors import ConfigError

log = logging.getLogger("ops_pipeline.config")


def risk_diff(old: RiskConfig, new: RiskConfig) -> dict[str, list[Any]]:
    """``{key: [old, new]}`` for every effective value that changed (JSON values)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return {key: [before[key], after[key]] for key in sorted(after) if before.get(key) != after[key]}


@dataclass(frozen=True)
class ConfigChange:
    """What a refresh did: ``unchanged``, ``applied`` (with the diff) or ``refused`` (with the reason)."""

    status: str
    source: str
    version: str | None
    diff: dict[str, list[Any]] = field(default_factory=dict)
    reason: str | None = None


Recorder = Callable[[ConfigChange, AccountConfig, dt.datetime], None]


class ConfigWatcher:
    """Keeps one account's configuration current between runs."""

    def __init__(self, current: AccountConfig, source: ConfigSource, recorder: Recorder | None = None) -> None:
        self.current = current
        self.source = source
        self.recorder = recorder
        self.refusals = 0
        self._seen = self._key(current.parameter_source, current.parameter_version)

    @staticmethod
    def _key(source: str, version: str | None) -> tuple[str, str | None]:
        return source.split(" (")[0], version

    def refresh(self, now: dt.datetime) -> ConfigChange:
        """Look for a new parameter version; apply it if valid."""
        spec = self.current.account
        stored = find_parameter(spec.tier, self.source)
        name, version = (stored.name, stored.version) if stored else ("tier defaults", None)
        if self._key(name, version) == self._seen:
            return ConfigChange("unchanged", name, version)
        self._seen = self._key(name, version)
        try:
            new = load_account_config(spec, self.source)
        except ConfigError as exc:
            self.refusals += 1
            change = ConfigChange("refused", name, version, reason=str(exc))
            log.error("[%s] new configuration %s version %s refused, keeping version %s: %s",
                      spec.name, name, version, self.current.parameter_version, exc)
        else:
            change = ConfigChange("applied", name, version, diff=risk_diff(self.current.risk, new.risk))
            log.warning("[%s] configuration %s version %s applied; changed: %s", spec.name, name, version,
                        ", ".join(f"{k} {a} → {b}" for k, (a, b) in change.diff.items()) or "nothing")
            self.current = new
        if self.recorder:
            self.recorder(change, self.current, now)
        return change
