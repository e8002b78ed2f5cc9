"""Parameter and secret stores, local and AWS (moto's server on 127.0.0.1, boto3 via
AWS_ENDPOINT_URL): lookup order, validation, credentials, paper-only keys, the CLI."""

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops_pipeline.cli import app
from ops_pipeline.config.loader import ConfigSource, StoreSettings, load_account_config, load_accounts, load_credentials
from ops_pipeline.config.secrets import SecretsFileStore, secret_env_name
from ops_pipeline.config.stores import LocalParameterStore
from ops_pipeline.errors import ConfigError

KEY, SECRET = "PKTESTKEY0000WXYZ", "s3cr3t-VALUE-never-shown-9999"
ACCOUNTS = "".join(f'[[accounts]]\nname = "{n}"\ntier = "{t}"\ninitial_balance = {b}\n\n'
                   for n, t, b in (("tiny-1k", "tiny", 1000), ("large-100k", "large", 100000)))


class Backend:
    """Writes parameters and secrets where one kind of store will read them."""

    def __init__(self, kind: str, tmp: Path, monkeypatch, aws_clients=None):
        self.kind, self.tmp, self.monkeypatch = kind, tmp, monkeypatch
        self.ssm, self.sm = aws_clients or (None, None)
        (tmp / "parameters").mkdir(exist_ok=True)
        (tmp / "accounts.toml").write_text(ACCOUNTS)
        monkeypatch.setenv("OPS_PIPELINE_CONFIG_DIR", str(tmp))
        monkeypatch.setenv("OPS_PIPELINE_PARAMETER_STORE", kind)
        monkeypatch.setenv("OPS_PIPELINE_SECRET_STORE", kind)

    def parameter(self, name: str, value) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        if self.kind == "aws":
            self.ssm.put_parameter(Name=name, Value=text, Type="String", Overwrite=True)
        else:
            LocalParameterStore(self.tmp / "parameters").put(name, text)

    def secret(self, name: str, value) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        if self.kind == "aws":
            try:
                self.sm.create_secret(Name=name, SecretString=text)
            except self.sm.exceptions.ResourceExistsException:
                self.sm.put_secret_value(SecretId=name, SecretString=text)
        else:
            self.monkeypatch.setenv(secret_env_name(name), text)

    def source(self) -> ConfigSource:
        return ConfigSource.from_settings(StoreSettings())


@pytest.fixture(params=["local", "aws"])
def backend(request, tmp_path, monkeypatch):
    clients = request.getfixturevalue("aws") if request.param == "aws" else None
    for name in list(os.environ):
        if name.startswith("OPS_PIPELINE_SECRET_"):
            monkeypatch.delenv(name)
    return Backend(request.param, tmp_path, monkeypatch, clients)


def creds(account="tiny-1k", key=KEY) -> dict:
    return {"api_key": key, "api_secret": SECRET, "account_name": account, "initial_balance": 1000}


def tiny(source: ConfigSource):
    return next(s for s in load_accounts(source.accounts_file) if s.name == "tiny-1k")


def test_tier_specific_parameter_wins_over_the_default(backend):
    backend.parameter("/ops-pipeline/dispatcher_config", {"max_open_positions": 7})
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", {"max_open_positions": 1})
    cfg = load_account_config(tiny(backend.source()), backend.source())
    assert cfg.risk.max_open_positions == 1 and cfg.parameter_source.startswith("/ops-pipeline/dispatcher_config_tiny ")


def test_default_parameter_is_the_fallback(backend):
    backend.parameter("/ops-pipeline/dispatcher_config", {"max_open_positions": 7})
    cfg = load_account_config(tiny(backend.source()), backend.source())
    assert cfg.risk.max_open_positions == 7 and cfg.parameter_keys == ("max_open_positions",)


def test_a_configurable_prefix(backend, monkeypatch):
    monkeypatch.setenv("OPS_PIPELINE_PARAMETER_PREFIX", "/paper-lab")
    backend.parameter("/paper-lab/dispatcher_config_tiny", {"max_daily_loss": 50})
    assert load_account_config(tiny(backend.source()), backend.source()).risk.max_daily_loss == 50


def test_tier_specific_then_default_secret(backend):
    backend.secret("ops-pipeline/alpaca", creds())
    credentials, label = load_credentials(tiny(backend.source()), backend.source())
    assert label.startswith("ops-pipeline/alpaca (") and credentials.account_name == "tiny-1k"
    backend.secret("ops-pipeline/alpaca/tiny", creds(key="PKOTHERKEY00001111"))
    credentials, label = load_credentials(tiny(backend.source()), backend.source())
    assert label.startswith("ops-pipeline/alpaca/tiny (") and credentials.api_key.get_secret_value().endswith("1111")


def test_missing_secret_fails_the_check_naming_the_secret(backend):
    result = CliRunner().invoke(app, ["config", "check", "--tier", "tiny"])
    assert result.exit_code == 1
    assert "secret ops-pipeline/alpaca/tiny not found, nor ops-pipeline/alpaca" in result.output


def test_invalid_json_names_the_parameter_and_the_position(backend):
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", '{"max_open_positions": 2,, }')
    with pytest.raises(ConfigError, match=r"parameter /ops-pipeline/dispatcher_config_tiny .*line 1 column 26 \(char 25\)"):
        load_account_config(tiny(backend.source()), backend.source())


@pytest.mark.parametrize(("key", "value"), [
    ("max_notional_exposure", 0), ("max_open_positions", 0), ("max_contracts_per_trade", -1), ("max_daily_loss", 0),
    ("confidence_min_options_swing", 1.2), ("confidence_min_options_daytrade", -0.1), ("allowed_actions", []),
    ("allowed_actions", ["BUY_CALL", "SELL_PUT"]), ("stop_loss_pct", 1.5), ("take_profit_pct", 0),
    ("max_open_positions", "3"), ("paper_ignore_buying_power", "false"),
])
def test_each_broken_rule_is_named_by_its_key(backend, key, value):
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", {key: value})
    with pytest.raises(ConfigError) as err:
        load_account_config(tiny(backend.source()), backend.source())
    assert any(p.startswith(f"{key}") for p in err.value.problems), err.value.problems


def test_an_unknown_key_is_named(backend):
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", {"max_open_position": 2})
    result = CliRunner().invoke(app, ["config", "show", "--tier", "tiny"])
    assert result.exit_code == 1 and "max_open_position: unknown key" in result.output


def test_an_unknown_tier_lists_the_valid_ones(backend):
    result = CliRunner().invoke(app, ["config", "check", "--tier", "tinyy"])
    assert result.exit_code == 1 and "valid tiers: tiny, small, medium, large" in result.output


def test_a_live_key_is_refused_in_alpaca_paper_mode(backend, monkeypatch):
    backend.secret("ops-pipeline/alpaca/tiny", creds(key="AKLIVEKEY000000ABCD"))
    monkeypatch.setenv("EXECUTION_MODE", "ALPACA_PAPER")
    result = CliRunner().invoke(app, ["config", "check", "--tier", "tiny"])
    assert result.exit_code == 1 and "not an Alpaca paper key" in result.output and "…ABCD" in result.output
    assert "AKLIVEKEY000000" not in result.output


def test_another_accounts_secret_is_refused_in_alpaca_paper_mode(backend, monkeypatch):
    backend.secret("ops-pipeline/alpaca", creds(account="large-100k"))
    monkeypatch.setenv("EXECUTION_MODE", "ALPACA_PAPER")
    with pytest.raises(ConfigError, match="belongs to account 'large-100k', not 'tiny-1k'"):
        load_credentials(tiny(backend.source()), backend.source())


def test_check_passes_and_shows_only_the_last_four_characters(backend):
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", {"max_open_positions": 2})
    backend.secret("ops-pipeline/alpaca/tiny", creds())
    result = CliRunner().invoke(app, ["config", "check", "--tier", "tiny"])
    assert result.exit_code == 0, result.output
    assert "key …WXYZ" in result.output and KEY[:-4] not in result.output and SECRET not in result.output


def test_show_gives_each_value_with_its_source(backend):
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", {"max_open_positions": 1})
    result = CliRunner().invoke(app, ["config", "show", "--tier", "tiny", "--json"])
    values = json.loads(result.output)["values"]
    assert values["max_open_positions"] == {"value": 1, "source": values["max_open_positions"]["source"]}
    assert values["max_open_positions"]["source"].startswith("/ops-pipeline/dispatcher_config_tiny@")
    assert values["max_daily_loss"]["source"] == "tier defaults (code)"


def test_set_validates_before_writing(backend):
    backend.parameter("/ops-pipeline/dispatcher_config_tiny", {"max_open_positions": 2})
    bad = CliRunner().invoke(app, ["config", "set", "max_daily_loss=-5", "--tier", "tiny"])
    assert bad.exit_code == 1 and "max_daily_loss" in bad.output
    good = CliRunner().invoke(app, ["config", "set", "max_daily_loss=75", "--tier", "tiny"])
    assert good.exit_code == 0 and "max_daily_loss 100.0 → 75.0" in good.output
    cfg = load_account_config(tiny(backend.source()), backend.source())
    assert (cfg.risk.max_daily_loss, cfg.risk.max_open_positions) == (75, 2)


def test_push_creates_parameters_and_never_overwrites_a_secret(aws, tmp_path, monkeypatch):
    ssm, sm = aws
    sm.create_secret(Name="ops-pipeline/alpaca/tiny", SecretString=json.dumps(creds()))
    result = CliRunner().invoke(app, ["config", "push", "--to", "aws"])
    assert result.exit_code == 0, result.output
    assert json.loads(ssm.get_parameter(Name="/ops-pipeline/dispatcher_config_large")["Parameter"]["Value"])["max_open_positions"] == 5
    assert json.loads(sm.get_secret_value(SecretId="ops-pipeline/alpaca/tiny")["SecretString"])["api_key"] == KEY
    assert json.loads(sm.get_secret_value(SecretId="ops-pipeline/alpaca/small")["SecretString"])["api_key"] == "PK-REPLACE-ME"
    again = CliRunner().invoke(app, ["config", "push", "--to", "aws"])
    assert "version 2" in again.output and "exists, left as it is" in again.output


def test_a_secrets_file_must_be_private_and_outside_the_repository(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"ops-pipeline/alpaca/tiny": creds()}))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        SecretsFileStore(path).get("ops-pipeline/alpaca/tiny")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert SecretsFileStore(path).get("ops-pipeline/alpaca/tiny") is not None
    inside = Path(__file__).resolve().parent / "secrets.json"
    with pytest.raises(ConfigError, match="inside the repository"):
        SecretsFileStore(inside).get("x") if inside.exists() else SecretsFileStore(_write_private(inside)).get("x")


def _write_private(path: Path) -> Path:
    path.write_text("{}")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _no_secret_file_left():
    yield
    (Path(__file__).resolve().parent / "secrets.json").unlink(missing_ok=True)


def test_stores_can_be_chosen_in_the_accounts_file_and_the_environment_wins(tmp_path, monkeypatch):
    for name in ("OPS_PIPELINE_PARAMETER_STORE", "OPS_PIPELINE_SECRET_STORE", "OPS_PIPELINE_PARAMETER_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "accounts.toml").write_text('[stores]\nparameter_prefix = "/lab"\nsecret_store = "local"\n\n' + ACCOUNTS)
    source = ConfigSource.from_settings(StoreSettings(), config_dir=tmp_path)
    assert source.prefix == "/lab"
    monkeypatch.setenv("OPS_PIPELINE_PARAMETER_PREFIX", "/env")
    assert ConfigSource.from_settings(StoreSettings(), config_dir=tmp_path).prefix == "/env"
    (tmp_path / "accounts.toml").write_text('[stores]\nparameter_stor = "aws"\n\n' + ACCOUNTS)
    with pytest.raises(ConfigError, match="unknown key.*parameter_stor"):
        ConfigSource.from_settings(StoreSettings(), config_dir=tmp_path)


def test_local_parameters_may_be_toml(tmp_path, monkeypatch):
    (tmp_path / "parameters").mkdir()
    (tmp_path / "accounts.toml").write_text(ACCOUNTS)
    (tmp_path / "parameters" / "dispatcher_config_tiny.toml").write_text('max_open_positions = 1\nallowed_actions = ["BUY_PUT"]\n')
    source = ConfigSource.from_settings(StoreSettings(), config_dir=tmp_path)
    cfg = load_account_config(tiny(source), source)
    assert cfg.risk.max_open_positions == 1 and [a.value for a in cfg.risk.allowed_actions] == ["BUY_PUT"]


def test_validate_and_diff_a_parameter_file(tmp_path, monkeypatch):
    monkeypatch.delenv("OPS_PIPELINE_CONFIG_DIR", raising=False)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"account_tier": "small", "max_open_positions": 2, "max_daily_loss": 150}))
    bad.write_text(json.dumps({"account_tier": "small", "max_open_positions": 0, "typo_key": 1}))
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "validate", str(good)])
    assert ok.exit_code == 0 and "valid small parameter" in ok.output
    refused = runner.invoke(app, ["config", "validate", str(bad)])
    assert refused.exit_code == 1 and "max_open_positions" in refused.output and "typo_key: unknown key" in refused.output
    diff = runner.invoke(app, ["config", "diff", str(good), "--tier", "small"])
    assert "max_open_positions: 3 → 2" in diff.output and "max_daily_loss: 200.0 → 150.0" in diff.output


def test_a_local_parameter_read_again_whenever_its_file_may_have_changed(tmp_path):
    """A loop asks the store before every run, so a settled file is answered from its status
    alone; an edit must still count at once, even one of the same size whose modification time is
    put back (``cp -p``, ``rsync -t``): its change time moves."""
    later = [0]
    store = LocalParameterStore(tmp_path, clock_ns=lambda: os.stat(path).st_ctime_ns + later[0])
    path = tmp_path / "dispatcher_config_tiny.json"
    path.write_text('{"max_open_positions": 2}')
    fresh = store.get("/ops-pipeline/dispatcher_config_tiny")
    assert json.loads(fresh.text) == {"max_open_positions": 2}
    later[0] = 10**10  # the file last changed 10 s before it was read: its status vouches for it
    settled = store.get("/ops-pipeline/dispatcher_config_tiny")
    assert settled == fresh and store.get("/ops-pipeline/dispatcher_config_tiny") is settled
    before = os.stat(path)
    probe = tmp_path / "probe"
    for _ in range(10**6):  # past the file system's timestamp tick, so the edit's change time differs
        probe.touch()
        if os.stat(probe).st_ctime_ns > before.st_ctime_ns:
            break
    path.write_text('{"max_open_positions": 3}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    edited = store.get("/ops-pipeline/dispatcher_config_tiny")
    assert json.loads(edited.text) == {"max_open_positions": 3} and edited.version != fresh.version
    path.unlink()
    assert store.get("/ops-pipeline/dispatcher_config_tiny") is None
