"""Tier defaults, parameter merging, validation listing every violation, the accounts file."""

import json
from pathlib import Path

import pytest

from ops_pipeline.config.loader import ConfigSource, load_account_config, load_accounts, load_all
from ops_pipeline.config.models import AccountSpec, merge_risk_config
from ops_pipeline.domain.values import StrategyType, Tier
from ops_pipeline.errors import ConfigError


def test_shipped_configuration_has_the_four_accounts_with_spec_limits():
    configs = {c.name: c for c in load_all(ConfigSource.from_dir(None))}
    assert list(configs) == ["large-100k", "tiny-1k", "small-5k", "medium-25k"]
    expected = {"tiny-1k": (1500, 2, 2, 100), "small-5k": (4000, 3, 3, 200),
                "medium-25k": (15000, 4, 5, 300), "large-100k": (10000, 5, 10, 500)}
    for name, (exposure, positions, cap, loss) in expected.items():
        r = configs[name].risk
        assert (r.max_notional_exposure, r.max_open_positions, r.contract_cap, r.max_daily_loss) == (exposure, positions, cap, loss)
    assert configs["tiny-1k"].risk.risk_pct(StrategyType.DAY_TRADE) == 0.15
    assert configs["large-100k"].account.schedule.every_minutes == 1
    assert [configs[n].account.schedule.offset_minutes for n in ("tiny-1k", "small-5k", "medium-25k")] == [0, 1, 2]


def test_parameter_store_contract_cap_overrides_the_tier_default():
    assert merge_risk_config(Tier.TINY, {}, source="t").contract_cap == 1
    assert merge_risk_config(Tier.TINY, {"max_contracts_per_trade": 2}, source="t").contract_cap == 2


def test_every_violation_is_listed_at_once_with_its_key():
    with pytest.raises(ConfigError) as err:
        merge_risk_config(Tier.SMALL, {
            "max_notional_exposure": 0, "confidence_min_options_swing": 1.5, "allowed_actions": [],
            "stop_loss_pct": 25, "max_open_positions": "3", "max_exposure": 100,
        }, source="/ops-pipeline/dispatcher_config_small")
    text = str(err.value)
    for key in ("max_notional_exposure", "confidence_min_options_swing", "allowed_actions", "stop_loss_pct",
                "max_open_positions", "max_exposure: unknown key"):
        assert key in text
    assert len(err.value.problems) == 6
    assert "/ops-pipeline/dispatcher_config_small" in text


def test_unknown_action_is_named():
    with pytest.raises(ConfigError, match="SELL_CALL"):
        merge_risk_config(Tier.LARGE, {"allowed_actions": ["BUY_CALL", "SELL_CALL"]}, source="t")


def test_declared_tier_must_match():
    with pytest.raises(ConfigError, match="account_tier is 'large'"):
        merge_risk_config(Tier.TINY, {"account_tier": "large"}, source="t")


def write_config(tmp_path: Path, accounts: str, parameters: dict[str, str]) -> ConfigSource:
    (tmp_path / "parameters").mkdir()
    (tmp_path / "accounts.toml").write_text(accounts)
    for name, text in parameters.items():
        (tmp_path / "parameters" / f"{name}.json").write_text(text)
    return ConfigSource.from_dir(tmp_path)


ONE = '[[accounts]]\nname = "tiny-1k"\ntier = "tiny"\ninitial_balance = 1000\n'


def test_invalid_json_names_the_parameter_and_position(tmp_path):
    source = write_config(tmp_path, ONE, {"dispatcher_config_tiny": '{\n  "max_open_positions": 2,\n}'})
    with pytest.raises(ConfigError, match=r"dispatcher_config_tiny .*line 3 column 1"):
        load_all(source)


def test_tier_specific_then_default_then_tier_defaults(tmp_path):
    source = write_config(tmp_path, ONE, {"dispatcher_config": json.dumps({"max_open_positions": 7})})
    spec = load_accounts(source.accounts_file)[0]
    cfg = load_account_config(spec, source)
    assert cfg.risk.max_open_positions == 7 and cfg.parameter_source.startswith("/ops-pipeline/dispatcher_config ")
    (tmp_path / "parameters" / "dispatcher_config_tiny.json").write_text(json.dumps({"max_open_positions": 1}))
    assert load_account_config(spec, source).risk.max_open_positions == 1
    for f in (tmp_path / "parameters").iterdir():
        f.unlink()
    fallback = load_account_config(spec, source)
    assert fallback.risk.max_open_positions == 2 and "tier defaults" in fallback.parameter_source


def test_accounts_file_problems_are_all_listed(tmp_path):
    accounts = ONE + '[[accounts]]\nname = "tiny-1k"\ntier = "huge"\ninitial_balance = -5\nextra = 1\n'
    source = write_config(tmp_path, accounts, {})
    with pytest.raises(ConfigError) as err:
        load_accounts(source.accounts_file)
    text = str(err.value)
    assert "valid tiers: tiny, small, medium, large" in text
    assert "initial_balance" in text and "extra: unknown key" in text


def test_schedule_offset_must_be_inside_the_period():
    with pytest.raises(ValueError, match="offset_minutes"):
        AccountSpec.model_validate({"name": "x1", "tier": "tiny", "initial_balance": 1, "schedule": {"every_minutes": 5, "offset_minutes": 5}})
