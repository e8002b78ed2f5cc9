"""The one place that wires adapters into services."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from ops_pipeline.adapters.brokers.alpaca.client import AlpacaBroker, check_paper
from ops_pipeline.adapters.brokers.alpaca.market_data import AlpacaMarketData, BrokerClock
from ops_pipeline.adapters.brokers.paper_exchange.app import ApiKey, create_app
from ops_pipeline.adapters.brokers.paper_exchange.server import SpeedClock
from ops_pipeline.adapters.brokers.paper_exchange.state import ExchangeState
from ops_pipeline.adapters.brokers.simulated import SimulatedExchange
from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.adapters.market_data.bars import BarQuality, BarSeries, bar_files, load_bars, slice_dates
from ops_pipeline.adapters.market_data.calendar import Session, TradingCalendar, epoch_to_utc, exchange_date
from ops_pipeline.adapters.market_data.chains import ChainStore
from ops_pipeline.adapters.market_data.quotes import HistoricalMarketData
from ops_pipeline.clock import SimulatedClock, SystemClock
from ops_pipeline.config.loader import ConfigSource, account_spec, load_accounts, load_all, load_credentials, value_sources
from ops_pipeline.config.secrets import Credentials, read_private_file
from ops_pipeline.config.watcher import ConfigChange, ConfigWatcher, Recorder
from ops_pipeline.config.models import AccountConfig, AccountSpec
from ops_pipeline.domain.values import ExecutionMode
from ops_pipeline.errors import ConfigError, DataError
from ops_pipeline.ports import Broker, BrokerAccount, MarketData
from ops_pipeline.services.dispatcher import Dispatcher
from ops_pipeline.services.position_manager import PositionManager
from ops_pipeline.services.runs import account_log
from ops_pipeline.services.signals import SignalEngine

WARMUP_DAYS = 14
"""Calendar days of bars loaded before the replay's start, for the signal windows and realized vol."""


@dataclass
class AccountRuntime:
    """One account's services, its configuration watcher and (when required) its credentials."""

    config: AccountConfig
    dispatcher: Dispatcher
    position_manager: PositionManager
    watcher: ConfigWatcher
    source: ConfigSource
    require_credentials: bool = False
    credentials: Credentials | None = None
    credentials_source: str | None = None
    connect: Callable[[Credentials], tuple[Broker, MarketData]] | None = None
    """Live mode: builds the broker and market data from credentials (again after a rotation)."""

    def before_run(self, now: dt.datetime) -> None:
        """LOOP mode: apply a new valid parameter version; re-read credentials (rotation, no restart).

        Raises:
            ConfigError: credentials are required and missing or invalid.
        """
        change = self.watcher.refresh(now)
        if change.status == "applied":
            self.config = self.dispatcher.config = self.position_manager.config = self.watcher.current
        if self.require_credentials:
            previous = self.credentials_source
            self.credentials, self.credentials_source = load_credentials(self.config.account, self.source)
            self.dispatcher.credentials_label = f"{self.credentials.describe()} from {self.credentials_source}"
            if self.credentials_source != previous:
                account_log("startup", self.config.name).info("credentials: %s", self.dispatcher.credentials_label)
                if self.connect is not None:
                    broker, market = self.connect(self.credentials)
                    for service in (self.dispatcher, self.position_manager):
                        service.broker, service.market = broker, market


def history_recorder(db: Database) -> Recorder:
    """Write each applied or refused configuration version to ``config_versions``."""

    def record(change: ConfigChange, current: AccountConfig, now: dt.datetime) -> None:
        with db.transaction() as conn:
            SharedRepository(conn).record_config_version(
                tier=current.risk.account_tier.value, account_name=current.name, source=change.source,
                version=change.version, at=now, accepted=change.status == "applied", diff=change.diff or None,
                reason=change.reason)

    return record


@dataclass
class ReplayRig:
    db: Database
    calendar: TradingCalendar
    clock: SimulatedClock
    market: HistoricalMarketData
    exchange: SimulatedExchange
    signals: SignalEngine
    accounts: list[AccountRuntime]
    bar_quality: list[BarQuality] = field(default_factory=list)


def log_startup(cfg: AccountConfig, account: BrokerAccount) -> None:
    """Seed 001 "Startup Logs": tier, parameter source, broker account and buying power, risk limits
    (the lines seed 002 greps for: ``Tier:``, ``Buying power``)."""
    r = cfg.risk
    log = account_log("startup", cfg.name)
    log.info("Account tier: %s (Tier: %s)", r.account_tier.value, r.account_tier.value)
    log.info("Loaded tier-specific config: %s", cfg.parameter_source)
    by_source: dict[str, list[str]] = {}
    for key, source in value_sources(cfg).items():
        by_source.setdefault(source, []).append(key)
    for source, keys in by_source.items():
        log.info("from %s: %s", source, ", ".join(keys))
    log.info("Connected to Alpaca: Account %s, Buying power: $%s", account.account_number, f"{account.buying_power:,.2f}")
    log.info("Risk limits: Max exposure $%s, Max positions %s, Max contracts %s, Max daily loss $%s (then %s), "
             "risk %.0f%% day / %.0f%% swing", f"{r.max_notional_exposure:,.0f}", r.max_open_positions,
             r.contract_cap, f"{r.max_daily_loss:,.0f}", r.daily_loss_action.value, r.risk_pct_day * 100,
             r.risk_pct_swing * 100)


def load_market(data_dir: Path, interval_minutes: int, tickers: list[str] | None, start: dt.date, end: dt.date,
                calendar: TradingCalendar, max_quote_age: dt.timedelta,
                chain_cache: Path | None = None, *, mark_ahead: bool = False) -> tuple[HistoricalMarketData, list[BarQuality]]:
    """Bars of ``tickers`` (cleaned over whole files, then cut to the window plus warm-up) and chains
    (parsed days kept in ``chain_cache`` if given, see :class:`ChainStore`). ``mark_ahead``: see
    :class:`HistoricalMarketData` (a replay, whose clock steps whole minutes).

    Raises:
        DataError: the bar folder or a ticker's file is missing.
    """
    bars: dict[str, BarSeries] = {}
    quality = []
    for ticker, path in bar_files(data_dir / f"bars_{interval_minutes}min", tickers, interval_minutes).items():
        series = load_bars(path, calendar, interval_minutes)
        quality.append(series.quality)
        bars[ticker] = slice_dates(series, start - dt.timedelta(days=WARMUP_DAYS), end)
        if len(series):
            quality[-1].first_date = exchange_date(epoch_to_utc(series.start[0]))
            quality[-1].last_date = exchange_date(epoch_to_utc(series.start[-1]))
    chains = ChainStore(data_dir / "option_chains", calendar, frozenset(bars), bars, cache_dir=chain_cache)
    return HistoricalMarketData(bars, chains, calendar, max_quote_age, mark_ahead=mark_ahead), quality


@dataclass
class ReplayInputs:
    """Everything a replay reads, loaded and checked before any database is touched."""

    configs: list[AccountConfig]
    source: ConfigSource
    calendar: TradingCalendar
    sessions: list[Session]
    market: HistoricalMarketData
    quality: list[BarQuality]
    bars_in_window: int


def load_replay_inputs(*, data_dir: Path, interval_minutes: int, tickers: list[str], start: dt.date, end: dt.date,
                       config_dir: Path | None, max_quote_age: dt.timedelta, accounts: list[str] | None = None,
                       source: ConfigSource | None = None, chain_cache: Path | None = None) -> ReplayInputs:
    """Load and check a replay's configuration and data; nothing is written anywhere.

    Raises:
        ConfigError: the configuration is invalid (every problem listed), or ``accounts`` names
            an account that is not configured.
        DataError: no tickers; no trading session in the window; no bar of any ticker in the
            window (the data's own dates are named); a missing folder or file.
    """
    if not tickers:
        raise DataError("no tickers to replay: give --tickers, e.g. SPY,QQQ")
    if max_quote_age <= dt.timedelta(0):
        raise DataError(f"the real-quote age limit must be positive, not {max_quote_age}")
    source = source or ConfigSource.from_settings(config_dir=config_dir)
    configs = load_all(source)
    if accounts:
        unknown = sorted(set(accounts) - {c.name for c in configs})
        if unknown:
            raise ConfigError(f"no account {', '.join(unknown)}; accounts: {', '.join(c.name for c in configs)}")
        configs = [c for c in configs if c.name in accounts]
    calendar = TradingCalendar()
    sessions = calendar.sessions(start, end)
    if not sessions:
        raise DataError(f"no trading session between {start} and {end} (weekend or market holiday)")
    market, quality = load_market(data_dir, interval_minutes, tickers, start, end, calendar, max_quote_age, chain_cache,
                                  mark_ahead=True)
    lo, hi = sessions[0].open.timestamp(), sessions[-1].close.timestamp()
    in_window = {t: int(((b.start >= lo) & (b.start < hi)).sum()) for t, b in market.bars.items()}
    if not sum(in_window.values()):
        covered = "; ".join(f"{Path(q.path).name} {q.first_date} to {q.last_date}" for q in quality if q.first_date)
        raise DataError(f"no {interval_minutes}-minute bars for {', '.join(tickers)} between {start} and {end}"
                        f" — the data covers {covered or 'nothing'}")
    return ReplayInputs(configs, source, calendar, sessions, market, quality, sum(in_window.values()))


def build_replay(*, db: Database, inputs: ReplayInputs, require_credentials: bool = False) -> ReplayRig:
    """Wire a replay from checked inputs: one simulated exchange, every selected account's services."""
    calendar, configs, market = inputs.calendar, inputs.configs, inputs.market
    first = inputs.sessions[0].open
    clock = SimulatedClock(first)
    exchange = SimulatedExchange(market, clock, calendar)
    with db.transaction() as conn:
        shared = SharedRepository(conn)
        for cfg in configs:
            spec = cfg.account
            shared.register_account(name=spec.name, tier=spec.tier.value, initial_balance=spec.initial_balance,
                                    state=spec.state, notes=spec.notes, secret_name="", now=first)
    runtimes = []
    recorder = history_recorder(db)
    for cfg in configs:
        exchange.open_account(cfg.name, cfg.account.initial_balance)
        broker = exchange.broker_for(cfg.name)
        log_startup(cfg, broker.get_account())
        recorder(ConfigChange("applied", cfg.parameter_source.split(" (")[0], cfg.parameter_version,
                              reason="loaded at startup"), cfg, first)
        runtimes.append(AccountRuntime(
            cfg,
            Dispatcher(db, cfg, broker, market, clock, ExecutionMode.SIMULATED),
            PositionManager(db, cfg, broker, market, clock, calendar),
            ConfigWatcher(cfg, inputs.source, recorder),
            inputs.source,
            require_credentials,
        ))
    return ReplayRig(db, calendar, clock, market, exchange, SignalEngine(db, market.bars), runtimes, inputs.quality)


MIN_OPTIONS_LEVEL = 2
"""Buying calls and puts needs Alpaca options trading level 2 or more."""


def verify_alpaca_account(config: AccountConfig, broker: AlpacaBroker) -> BrokerAccount:
    """Seed 001 "Startup Sequence", step 3: connect, check the account, log what it is.

    Raises:
        ConfigError: the account cannot buy options (trading level below 2).
        BrokerError: the broker refused the credentials or cannot be reached.
    """
    account = broker.get_account()
    level = broker.options_trading_level()
    if level < MIN_OPTIONS_LEVEL:
        raise ConfigError(f"Alpaca account {account.account_number} of {config.name} has options trading level "
                          f"{level}; level {MIN_OPTIONS_LEVEL} or more is needed to buy calls and puts")
    log_startup(config, account)
    return account


EXCHANGE_SECRET_ENV = "OPS_PIPELINE_EXCHANGE_SECRET_"


def exchange_secret_env(name: str) -> str:
    """``tiny-1k`` → ``OPS_PIPELINE_EXCHANGE_SECRET_TINY_1K``: where ``--account`` finds its secret."""
    return EXCHANGE_SECRET_ENV + "".join(c if c.isalnum() else "_" for c in name).upper()


@dataclass(frozen=True)
class ExchangeAccount:
    """An account served by the paper exchange: its name, Alpaca-style key and secret, balance."""

    name: str
    key: str
    secret: str = field(repr=False)
    balance: Decimal

    @classmethod
    def parse(cls, text: str, environ: dict[str, str] | None = None) -> ExchangeAccount:
        """``NAME:KEY:BALANCE``; the secret comes from ``OPS_PIPELINE_EXCHANGE_SECRET_<NAME>`` (a secret on
        the command line would show in the process list).

        Raises:
            ConfigError: malformed, a secret given on the command line, or no secret in the environment.
        """
        env = os.environ if environ is None else environ
        parts = text.split(":")
        if len(parts) == 4:
            raise ConfigError("--account takes NAME:KEY:BALANCE; a secret on the command line is visible to every "
                              f"user in the process list — put it in {exchange_secret_env(parts[0])} or use --accounts-file")
        if len(parts) != 3:
            raise ConfigError("--account must be NAME:KEY:BALANCE (the secret in OPS_PIPELINE_EXCHANGE_SECRET_<NAME>)")
        name, key, balance = parts
        secret = env.get(exchange_secret_env(name))
        if not secret:
            raise ConfigError(f"--account {name}: no secret in {exchange_secret_env(name)}")
        return cls(name, key, secret, cls._balance(name, balance))

    @staticmethod
    def _balance(name: str, value: object) -> Decimal:
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            raise ConfigError(f"account {name}: balance {value!r} is not a number") from None
        if not amount.is_finite() or amount <= 0:
            raise ConfigError(f"account {name}: balance must be a positive number of dollars, not {value!r}")
        return amount

    @classmethod
    def from_file(cls, path: Path) -> list[ExchangeAccount]:
        """Accounts from a chmod-600 JSON or TOML file: ``[[accounts]]`` (TOML) or a list (JSON) of
        ``{name, key, secret, balance}``.

        Raises:
            ConfigError: the file is readable by others, malformed, or an entry is incomplete.
        """
        data = read_private_file(path)
        entries = data.get("accounts") if isinstance(data, dict) else data
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: expected a list of accounts ({{name, key, secret, balance}})")
        accounts = []
        for i, entry in enumerate(entries):
            missing = [k for k in ("name", "key", "secret", "balance") if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ConfigError(f"{path}: account {i + 1} lacks {', '.join(missing)}")
            accounts.append(cls(str(entry["name"]), str(entry["key"]), str(entry["secret"]),
                                cls._balance(str(entry["name"]), entry["balance"])))
        return accounts


def build_paper_exchange(*, data_dir: Path, start: dt.datetime, speed: float, accounts: list[ExchangeAccount],
                         source: ConfigSource | None = None, state_path: Path | None = None,
                         fresh: bool = False) -> tuple[FastAPI, SpeedClock, list[ExchangeAccount], dt.datetime | None]:
    """The paper exchange over the 1-minute data, market time from ``start`` at ``speed``× real time.

    Without ``accounts``, serves the configured accounts with their credentials from the secret store.
    With ``state_path`` the books and the market time are kept in that file: an existing state is
    resumed (its market time wins over ``start``) unless ``fresh``, which starts it over. Returns the
    app, its clock, the accounts served and the market time resumed from (``None``: a new state).

    Raises:
        ConfigError: a configured account has no credentials, or a key is not a paper key.
        DataError: the data folder lacks the 1-minute bars.
        DatabaseError: the state file cannot be used.
    """
    if not accounts:
        source = source or ConfigSource.from_settings()
        for spec in load_accounts(source.accounts_file):
            credentials, _ = load_credentials(spec, source)
            accounts.append(ExchangeAccount(spec.name, credentials.api_key.get_secret_value(),
                                            credentials.api_secret.get_secret_value(), spec.initial_balance))
    for account in accounts:
        check_paper(account.key, None)
    state = None
    resumed = None
    if state_path is not None:
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{state_path}{suffix}").unlink(missing_ok=True)
        state = ExchangeState(state_path)
        resumed = state.market_time()
    begin = resumed or start
    calendar = TradingCalendar()
    day = exchange_date(begin)
    market, _ = load_market(data_dir, 1, None, day, day + dt.timedelta(days=45), calendar, dt.timedelta(minutes=30))
    market.chains.preload(begin)
    clock = SpeedClock(begin, speed)
    exchange = SimulatedExchange(market, clock, calendar)
    keys = {}
    for account in accounts:
        exchange.open_account(account.name, account.balance)
        keys[account.key] = ApiKey(account.name, account.secret)
    if state is not None:
        for name, book in state.load().items():
            exchange.restore(name, book)
        for name, book in exchange.books().items():
            state.save(name, book, begin)
    return create_app(exchange, keys, market, clock, state), clock, accounts, resumed


def alpaca_urls() -> tuple[str | None, str | None]:
    """Trading and market-data base URLs: ``OPS_PIPELINE_ALPACA_BASE_URL`` /
    ``OPS_PIPELINE_ALPACA_DATA_URL`` (a paper exchange), else Alpaca's paper endpoints."""
    return os.environ.get("OPS_PIPELINE_ALPACA_BASE_URL") or None, os.environ.get("OPS_PIPELINE_ALPACA_DATA_URL") or None


DEFAULT_TIMEOUT_SECS = 10.0


def alpaca_timeout_secs() -> float:
    """Seconds any one request to Alpaca may take: ``OPS_PIPELINE_ALPACA_TIMEOUT_SECS`` (default 10).

    Raises:
        ConfigError: not a positive number.
    """
    raw = os.environ.get("OPS_PIPELINE_ALPACA_TIMEOUT_SECS")
    if raw is None:
        return DEFAULT_TIMEOUT_SECS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise ConfigError(f"OPS_PIPELINE_ALPACA_TIMEOUT_SECS must be a number of seconds above 0, not {raw!r}")
    return value


def register_accounts(db: Database, source: ConfigSource) -> list[AccountSpec]:
    """Register every account of the accounts file that the database does not know yet (in the
    state the file gives); returns the accounts file's accounts, in its order.

    Raises:
        ConfigError: the accounts file is missing or invalid.
    """
    specs = load_accounts(source.accounts_file)
    with db.transaction() as conn:
        repo = SharedRepository(conn)
        for spec in specs:
            repo.register_account(name=spec.name, tier=spec.tier.value, initial_balance=spec.initial_balance,
                                  state=spec.state, notes=spec.notes, secret_name=source.secret_names(spec.tier)[0],
                                  now=SystemClock().now())
    return specs


def live_market(source: ConfigSource, account_name: str) -> tuple[BrokerClock, AlpacaMarketData]:
    """The broker's clock and market data, read with ``account_name``'s credentials: what the
    supervisor schedules on and what the live signal engine reads bars from.

    Raises:
        ConfigError: not in ALPACA_PAPER mode, unknown account, missing or live credentials.
    """
    if source.execution_mode is not ExecutionMode.ALPACA_PAPER:
        raise ConfigError("live runs trade through Alpaca: set EXECUTION_MODE=ALPACA_PAPER "
                          "(the simulated broker runs in `ops-pipeline replay` and behind `paper-exchange serve`)")
    credentials, _ = load_credentials(account_spec(source.accounts_file, account_name), source)
    key, secret = credentials.api_key.get_secret_value(), credentials.api_secret.get_secret_value()
    trading_url, data_url = alpaca_urls()
    timeout = alpaca_timeout_secs()
    broker = AlpacaBroker(key, secret, base_url=trading_url, timeout_secs=timeout)
    return BrokerClock(broker), AlpacaMarketData(key, secret, trading_url=trading_url, data_url=data_url,
                                                 timeout_secs=timeout)


def build_live_account(*, db: Database, account_name: str, source: ConfigSource | None = None) -> AccountRuntime:
    """One account on Alpaca paper (``EXECUTION_MODE=ALPACA_PAPER``): credentials from the secret
    store, verified at startup, the broker's clock, the same dispatcher and position manager.

    Raises:
        ConfigError: not in ALPACA_PAPER mode, unknown account, missing/live credentials, options level,
            a bad ``OPS_PIPELINE_ALPACA_TIMEOUT_SECS``.
        BrokerError: the broker refused or cannot be reached.
    """
    source = source or ConfigSource.from_settings()
    if source.execution_mode is not ExecutionMode.ALPACA_PAPER:
        raise ConfigError("live runs trade through Alpaca: set EXECUTION_MODE=ALPACA_PAPER "
                          "(the simulated broker runs in `ops-pipeline replay` and behind `paper-exchange serve`)")
    configs = {c.name: c for c in load_all(source)}
    if account_name not in configs:
        raise ConfigError(f"no account {account_name!r}; accounts: {', '.join(configs)}")
    cfg = configs[account_name]
    trading_url, data_url = alpaca_urls()
    timeout = alpaca_timeout_secs()

    def connect(credentials: Credentials) -> tuple[Broker, MarketData]:
        key, secret = credentials.api_key.get_secret_value(), credentials.api_secret.get_secret_value()
        broker = AlpacaBroker(key, secret, base_url=trading_url, timeout_secs=timeout)
        verify_alpaca_account(cfg, broker)
        return broker, AlpacaMarketData(key, secret, trading_url=trading_url, data_url=data_url, timeout_secs=timeout)

    credentials, credentials_source = load_credentials(cfg.account, source)
    broker, market = connect(credentials)
    clock = BrokerClock(broker)
    with db.transaction() as conn:
        spec = cfg.account
        SharedRepository(conn).register_account(name=spec.name, tier=spec.tier.value, initial_balance=spec.initial_balance,
                                                state=spec.state, notes=spec.notes,
                                                secret_name=source.secret_names(spec.tier)[0],
                                                now=SystemClock().now())  # the market clock is read by each run
    runtime = AccountRuntime(
        cfg, Dispatcher(db, cfg, broker, market, clock, ExecutionMode.ALPACA_PAPER),
        PositionManager(db, cfg, broker, market, clock, TradingCalendar()),
        ConfigWatcher(cfg, source, history_recorder(db)), source, require_credentials=True,
        credentials=credentials, credentials_source=credentials_source, connect=connect,
    )
    runtime.dispatcher.credentials_label = f"{credentials.describe()} from {credentials_source}"
    account_log("startup", cfg.name).info("Loaded credentials for account: %s (%s)", cfg.name,
                                          runtime.dispatcher.credentials_label)
    return runtime
