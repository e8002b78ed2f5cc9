"""Migrations, the account scope, and per-account claims, on SQLite and PostgreSQL."""

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from ops_pipeline.adapters.db.repositories import AccountRepository, SharedRepository
from ops_pipeline.adapters.db.scope import AccountScope
from ops_pipeline.adapters.db.tables import dispatch_executions, metadata, recommendations
from tests.factories import NOON


def test_migrations_match_the_tables_and_go_down_to_nothing(any_db):
    with any_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    any_db.downgrade_to_base()
    assert set(inspect(any_db.engine).get_table_names()) <= {"alembic_version"}
    any_db.upgrade()
    assert "active_positions" in inspect(any_db.engine).get_table_names()


def test_postgres_dates_are_us_trading_days(pg_db):
    with pg_db.transaction() as conn:
        conn.execute(dispatch_executions.insert().values(
            run_id="r", account_name="tiny-1k", ticker="SPY", action="BUY_CALL", strategy_type="day_trade",
            option_symbol="SPY260317C00660000", contracts=1, premium=1, notional=100, client_order_id="x",
            status="filled", simulated_ts=dt.datetime(2026, 3, 17, 1, 30, tzinfo=dt.UTC), execution_mode="SIMULATED"))
    pg_db.engine.dispose()  # a new session, as a user's psql would open, gets the database's TimeZone
    with pg_db.engine.connect() as conn:  # 01:30 UTC on the 17th is 21:30 on the 16th in New York
        assert str(conn.execute(text("SELECT simulated_ts::date FROM dispatch_executions")).scalar_one()) == "2026-03-16"


def test_account_scope_filters_every_statement_and_refuses_shared_tables():
    scope = AccountScope("tiny-1k")
    sql = str(scope.select(dispatch_executions).compile(compile_kwargs={"literal_binds": True}))
    assert "dispatch_executions.account_name = 'tiny-1k'" in sql
    assert "account_name = 'tiny-1k'" in str(scope.update(dispatch_executions).compile(compile_kwargs={"literal_binds": True}))
    with pytest.raises(ValueError, match="not an account-scoped table"):
        scope.select(recommendations)


def add_recommendation(conn, minute: int = 0, ticker: str = "SPY") -> None:
    at = NOON + dt.timedelta(minutes=minute)
    SharedRepository(conn).add_recommendation({
        "source": "test", "ticker": ticker, "action": "BUY_CALL", "strategy_type": "swing_trade",
        "confidence": 0.8, "volume_ratio": 2.5, "underlying_price": 660, "bar_ts": at, "feature_ts": at, "created_at": at})


def test_claims_are_per_account_and_a_rejection_hides_nothing_from_others(any_db):
    with any_db.transaction() as conn:
        for m in range(3):
            add_recommendation(conn, m)
    ttl = dt.timedelta(minutes=10)
    now = NOON + dt.timedelta(minutes=5)
    with any_db.transaction() as conn:
        a = AccountRepository(conn, "tiny-1k")
        claimed = a.claim(run_id="r1", now=now, limit=2, ttl=ttl)
        assert len(claimed) == 2  # the third waits for the next run
        a.decide(claimed[0].id, now=now, status="rejected", reason_code="max_open_positions")
        assert len(a.claim(run_id="r2", now=now, limit=10, ttl=ttl)) == 1
        b = AccountRepository(conn, "large-100k")
        assert [r.id for r in b.claim(run_id="r3", now=now, limit=10, ttl=ttl)] == [r.id for r in claimed] + [3]


def test_a_claim_older_than_the_ttl_is_retried(any_db):
    with any_db.transaction() as conn:
        add_recommendation(conn)
        repo = AccountRepository(conn, "tiny-1k")
        assert len(repo.claim(run_id="r1", now=NOON, limit=5, ttl=dt.timedelta(minutes=10))) == 1
        assert repo.claim(run_id="r2", now=NOON + dt.timedelta(minutes=9), limit=5, ttl=dt.timedelta(minutes=10)) == []
        again = repo.claim(run_id="r3", now=NOON + dt.timedelta(minutes=11), limit=5, ttl=dt.timedelta(minutes=10))
        assert len(again) == 1


def test_same_recommendation_is_stored_once(any_db):
    with any_db.transaction() as conn:
        add_recommendation(conn)
        add_recommendation(conn)
        assert len(conn.execute(select(recommendations.c.id)).all()) == 1


def test_abandoning_a_dead_run_releases_its_claims_but_not_those_that_became_orders(any_db):
    with any_db.transaction() as conn:
        for m in range(3):
            add_recommendation(conn, m)
        repo = AccountRepository(conn, "tiny-1k")
        run_id = repo.start_run("dispatcher-tiny-1k-dead", "dispatcher", NOON, pid=4242)
        claimed = repo.claim(run_id=run_id, now=NOON + dt.timedelta(minutes=5), limit=10, ttl=dt.timedelta(minutes=10))
        assert len(claimed) == 3
        repo.create_execution({  # the first claim became an order before the process died
            "run_id": run_id, "recommendation_id": claimed[0].id, "ticker": "SPY", "action": "BUY_CALL",
            "strategy_type": "swing_trade", "option_symbol": "SPY260327C00660000", "contracts": 1, "premium": 2.5,
            "notional": 250, "client_order_id": "ops-tiny-1k-rec1", "status": "pending_submit",
            "simulated_ts": NOON, "execution_mode": "SIMULATED"})
        other = AccountRepository(conn, "large-100k")
        other_run = other.start_run("dispatcher-large-100k-alive", "dispatcher", NOON)
    with any_db.transaction() as conn:
        (abandoned,) = AccountRepository(conn, "tiny-1k").abandon_running_runs(NOON + dt.timedelta(minutes=6))
        assert (abandoned.run_id, abandoned.pid) == (run_id, 4242)
    with any_db.transaction() as conn:
        runs = {r.run_id: r.status for r in conn.execute(select(text("run_id, status")).select_from(text("dispatch_runs")))}
        assert runs == {run_id: "abandoned", other_run: "running"}  # another account's run is not touched
        left = conn.execute(text("SELECT recommendation_id, status FROM dispatch_decisions ORDER BY 1")).all()
        assert [tuple(r) for r in left] == [(claimed[0].id, "processing")]  # the order's claim stays for settlement
        again = AccountRepository(conn, "tiny-1k").claim(run_id="r2", now=NOON + dt.timedelta(minutes=6), limit=10,
                                                         ttl=dt.timedelta(minutes=10))
        assert [r.id for r in again] == [claimed[1].id, claimed[2].id]  # at once, not after the TTL
    with any_db.transaction() as conn:
        late = AccountRepository(conn, "tiny-1k").claim(run_id="r3", now=NOON + dt.timedelta(minutes=40), limit=10,
                                                        ttl=dt.timedelta(minutes=10))
        assert claimed[0].id not in [r.id for r in late]  # past the TTL too: its order is settled, never re-decided


def test_the_claim_outlook_says_which_queries_could_find_something(any_db):
    """``may_have_claims`` splits what a run could find at the stale cutoff, a recommendation equal
    to it counting on both sides: a false part is a query the dispatcher skips, so it must never be
    false where the query would find a row."""
    with any_db.transaction() as conn:
        add_recommendation(conn, 0)
    ttl = dt.timedelta(minutes=10)
    at = NOON + dt.timedelta(minutes=5)

    def outlook(cutoff_minute: int):
        with any_db.read() as conn:
            return AccountRepository(conn, "tiny-1k").may_have_claims(
                now=at, ttl=ttl, cutoff=NOON + dt.timedelta(minutes=cutoff_minute))

    assert (outlook(-1).stale, outlook(-1).fresh, outlook(-1).stuck) == (False, True, False)
    assert (outlook(0).stale, outlook(0).fresh) == (True, True)
    assert (outlook(1).stale, outlook(1).fresh) == (True, False)
    with any_db.transaction() as conn:
        assert AccountRepository(conn, "tiny-1k").reject_stale(
            run_id="r0", now=at, cutoff=NOON + dt.timedelta(seconds=1), detail="test") == 1
    assert not outlook(1)  # decided: nothing left to find
    with any_db.transaction() as conn:
        add_recommendation(conn, 4)
        repo = AccountRepository(conn, "tiny-1k")
        assert [r.id for r in repo.claim(run_id="r1", now=at, limit=5, ttl=ttl)] == [2]
    assert not outlook(1)  # a claim within its time to live is nobody's to take
    with any_db.read() as conn:
        late = AccountRepository(conn, "tiny-1k").may_have_claims(now=at + ttl + dt.timedelta(minutes=1), ttl=ttl,
                                                                  cutoff=NOON)
    assert (late.stale, late.fresh, late.stuck) == (False, False, True)
    with any_db.transaction() as conn:  # and the claim finds it only when it looks for it
        repo = AccountRepository(conn, "tiny-1k")
        assert repo.claim(run_id="r2", now=at + ttl + dt.timedelta(minutes=1), limit=5, ttl=ttl, stuck=False) == []
        assert [r.id for r in repo.claim(run_id="r2", now=at + ttl + dt.timedelta(minutes=1), limit=5, ttl=ttl)] == [2]
