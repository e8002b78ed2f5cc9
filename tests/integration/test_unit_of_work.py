"""The replay's unit of work (one transaction until its commit — the replay commits at each
session's close, these scenarios every minute — reads cached until the rows they read change)
must write exactly what plain transactions write, see every write however it was made, and lose
what failed since the last commit whole. On SQLite and PostgreSQL, with the real services."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import event, exists, select, text, type_coerce
from sqlalchemy.types import NullType

from ops_pipeline.adapters.db.database import Database, UnitOfWork, sqlite_url
from ops_pipeline.adapters.db.repositories import AccountRepository
from ops_pipeline.adapters.db.scope import prepared
from ops_pipeline.adapters.db.tables import active_positions, dispatch_decisions, dispatch_executions, metadata
from ops_pipeline.errors import DatabaseError, RunInProgress
from ops_pipeline.reports.invariants import check_account
from tests.conftest import new_pg_database
from tests.e2e.test_replay import WALL_CLOCK
from tests.factories import account_config, quote
from tests.integration.test_services import SYMBOL, Rig
from tests.integration.test_trust_rules import BAD, QQQ, SQLITE_ONLY, insert_raw


def fresh(db: Database, request: pytest.FixtureRequest, tmp_path) -> Database:
    """A second empty database of the same kind as ``db``."""
    if db.dialect == "sqlite":
        other = Database(sqlite_url(tmp_path / "other.db"))
        other.upgrade()
        return other
    return new_pg_database(request.getfixturevalue("postgres_server"))


def dump(db: Database) -> dict[str, list[str]]:
    """Every table's rows as stored (no type processing: SQLite keeps the bad rows' raw values), as
    text (a NaN equals itself)."""
    with db.engine.connect() as conn:
        return {t.name: [repr(tuple(r)) for r in conn.execute(
                    select(*(type_coerce(c, NullType()).label(c.name) for c in t.columns if c.name not in WALL_CLOCK))
                    .order_by(*t.primary_key.columns))]
                for t in metadata.sorted_tables}


def scenario(db: Database, end_of_minute) -> Rig:  # noqa: ANN001 - a callable
    """Two accounts over eight minutes: bad rows beside good ones, fills, marks every minute, a stop,
    a realized loss that latches one account, stale and fresh recommendations, a second ticker.
    ``end_of_minute()`` is called after each minute's runs."""
    large = account_config("large-100k", ticker_cooldown_minutes=0, stop_loss_pct=0.25, max_signals_per_run=50,
                           lookback_window_minutes=3)
    tiny = account_config("tiny-1k", ticker_cooldown_minutes=0, max_signals_per_run=50)
    rig = Rig(db, large, tiny)
    rig.market.set_quote(quote(QQQ, bid="2.46", ask="2.50"))
    insert_raw(db, [values for values, _, _ in BAD + (SQLITE_ONLY if db.dialect == "sqlite" else [])])
    rig.recommend(0)
    rig.recommend(0, "QQQ")
    prices = {2: ("1.73", "1.77"), 3: ("1.70", "1.74"), 5: ("2.58", "2.62")}
    for minute in range(8):
        if minute in prices:
            bid, ask = prices[minute]
            rig.market.set_quote(quote(SYMBOL, bid=bid, ask=ask, at=rig.clock.now()))
            rig.market.set_quote(quote(QQQ, bid=bid, ask=ask, at=rig.clock.now()))
        if minute == 4:
            rig.recommend(minute, "QQQ")
            rig.recommend(minute - 4)  # already decided by both: ignored
        for name in ("large-100k", "tiny-1k"):
            if minute % 2 == 0 or name == "large-100k":  # tiny runs every other minute: recommendations age
                rig.manager(name).run()
                rig.dispatcher(name).run()
        end_of_minute()
        rig.advance(1)
    return rig


@pytest.mark.parametrize("write_behind", [False, True], ids=["cached", "cached+write-behind"])
def test_a_unit_of_work_writes_exactly_what_plain_transactions_write(any_db, request, tmp_path, write_behind):
    scenario(any_db, lambda: None)
    other = fresh(any_db, request, tmp_path)
    with other.unit_of_work(write_behind=write_behind) as uow:
        cached = scenario(other, uow.commit)
    assert uow.cache.hits > 0  # the cache was used, not bypassed
    assert (uow.write_behind is not None) is write_behind
    expected, got = dump(any_db), dump(other)
    for table in expected:
        assert got[table] == expected[table], table
    assert expected["dispatch_executions"] and expected["daily_loss_halts"]
    for name in ("large-100k", "tiny-1k"):
        with other.read() as conn:
            assert check_account(conn, cached.configs[name]) == []


def test_refreshing_statistics_changes_no_row_and_analyzes_the_claimed_tables(any_db, request, tmp_path):
    """The replay refreshes PostgreSQL's statistics at each session's close (planned as if empty, a
    fresh database's claim queries scan every decision the account made): the rows are those plain
    transactions write, remembered reads stay in use, and on PostgreSQL the tables were analyzed."""
    scenario(any_db, lambda: None)
    other = fresh(any_db, request, tmp_path)
    with other.unit_of_work(write_behind=True) as uow:
        scenario(other, uow.refresh_statistics)
    assert uow.cache.hits > 0
    assert dump(other) == dump(any_db)
    if other.dialect == "postgresql":
        with other.read() as conn:
            for table in UnitOfWork.PLANNED_TABLES:
                rows = conn.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one()
                estimate = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table.name}).scalar_one()
                assert estimate == rows, table.name  # -1 (never analyzed) without the refresh


def test_a_write_made_outside_the_repositories_is_seen_by_the_next_run(any_db):
    """A recommendation inserted with SQL text (another service's way), after an idle run cached
    "nothing to claim", is claimed by the next run of the same unit of work."""
    rig = Rig(any_db, account_config("large-100k", ticker_cooldown_minutes=0))
    with any_db.unit_of_work() as uow:
        assert rig.dispatcher("large-100k").run().claimed == 0
        assert rig.dispatcher("large-100k").run().claimed == 0  # answered from the cache
        hits = uow.cache.hits
        assert hits > 0
        rig.advance(1)
        insert_raw(any_db, [{"created_at": rig.clock.now(), "bar_ts": rig.clock.now(), "feature_ts": rig.clock.now()}])
        assert rig.dispatcher("large-100k").run().executed == 1
        with any_db.read() as conn:  # and through the driver directly
            conn.exec_driver_sql("DELETE FROM dispatch_decisions")
            assert AccountRepository(conn, "large-100k").may_have_claims(now=rig.clock.now(), ttl=dt.timedelta(minutes=5))
        uow.conn.rollback()  # undo the delete: it broke the order's bookkeeping on purpose


def test_a_failed_block_loses_its_whole_minute_and_stops_the_unit(any_db):
    rig = Rig(any_db, account_config("large-100k", ticker_cooldown_minutes=0))
    rig.recommend(0)
    with pytest.raises(DatabaseError, match="rolled back"):
        with any_db.unit_of_work() as uow:
            assert rig.dispatcher("large-100k").run().executed == 1
            uow.commit()  # this minute stays
            rig.advance(1)
            rig.recommend(1)
            with pytest.raises(RuntimeError):
                with any_db.transaction() as conn:
                    AccountRepository(conn, "large-100k").finish_run("nope", rig.clock.now(), "ok", {})
                    raise RuntimeError("a write failed half way")
            rig.dispatcher("large-100k").run()  # refused: the unit is poisoned
    assert [r.recommendation_id for r in rig.rows(dispatch_decisions, "large-100k")] == [1]
    assert len(rig.rows(dispatch_executions, "large-100k")) == 1
    with any_db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM recommendations")).scalar_one() == 1


def test_the_run_lock_is_reentrant_in_its_thread_and_exclusive_across_threads(sqlite_db):
    with sqlite_db.account_lock("large-100k") as taken:
        assert taken is True
        with sqlite_db.account_lock("large-100k") as again:
            assert again is False
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                with sqlite_db.account_lock("large-100k", wait_secs=0):
                    pass
            except RunInProgress as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(errors) == 1  # the inner block's exit did not release the outer hold
    with sqlite_db.account_lock("large-100k", wait_secs=0) as taken:
        assert taken is True


def test_write_behind_rows_are_read_back_at_once_and_only_on_an_empty_database(sqlite_db):
    """A buffered run row is in the database for the next statement of the unit; a database that
    already has runs gets no buffer (its run ids are not all known), one that has decisions buffers
    none of them."""
    now = dt.datetime(2026, 3, 16, 16, 0, tzinfo=dt.UTC)
    rig = Rig(sqlite_db, account_config("large-100k"))
    rig.recommend(0)
    with sqlite_db.transaction() as conn:
        assert len(AccountRepository(conn, "tiny-1k").claim(run_id="r", now=rig.clock.now(), limit=1,
                                                            ttl=dt.timedelta(minutes=5))) == 1
    with sqlite_db.unit_of_work(write_behind=True) as uow:
        assert uow.write_behind is not None and not uow.write_behind.buffers_decisions
        with sqlite_db.transaction() as conn:
            repo = AccountRepository(conn, "large-100k")
            first = repo.start_run("run-a", "dispatcher", now, 1)
            second = repo.start_run("run-a", "dispatcher", now, 1)
            assert (first, second) == ("run-a", "run-a-2")  # as ON CONFLICT DO NOTHING decides it
            repo.finish_run(first, now, "ok", {"claimed": 0})
            assert [r.run_id for r in repo.abandon_running_runs(now)] == ["run-a-2"]  # flushed, then read
            assert repo.latest_run().status in {"ok", "abandoned"}
    with sqlite_db.unit_of_work(write_behind=True) as uow:
        assert uow.write_behind is None


def test_one_unit_of_work_per_thread(sqlite_db):
    with sqlite_db.unit_of_work():
        with pytest.raises(DatabaseError, match="already open"):
            with sqlite_db.unit_of_work():
                pass


def _position(repo: AccountRepository, symbol: str, now: dt.datetime) -> int:
    repo.create_position({
        "execution_id": None, "ticker": "SPY", "option_symbol": symbol, "strategy_type": "swing_trade", "contracts": 1,
        "entry_price": Decimal("2.00"), "notional_value": Decimal("200.00"), "stop_price": Decimal("1.50"),
        "target_price": Decimal("3.00"), "expiration_date": dt.date(2026, 3, 20), "status": "open", "opened_at": now})
    return max(p.id for p in repo.open_positions())


@pytest.mark.parametrize("write_behind", [False, True], ids=["cached", "cached+write-behind"])
def test_a_mark_is_applied_to_the_remembered_positions_and_stored_before_anything_reads_the_database(
        any_db, write_behind):
    """A mark neither makes the open positions be read again nor is ever missed: the remembered read
    shows it at once (as the database will give it back), and with write-behind it is in the
    database before any statement that reads it, and at the commit."""
    now = dt.datetime(2026, 3, 16, 16, 0, tzinfo=dt.UTC)
    statements: list[str] = []
    event.listen(any_db.engine, "before_cursor_execute", lambda _c, _k, sql, *_a: statements.append(sql))
    with any_db.unit_of_work(write_behind=write_behind) as uow:
        with any_db.transaction() as conn:
            repo = AccountRepository(conn, "large-100k")
            first, second = _position(repo, "SPY260320C00600000", now), _position(repo, "SPY260320P00580000", now)
            assert [p.current_price for p in repo.open_positions()] == [None, None]
            statements.clear()
            repo.update_position(first, current_price=Decimal("2.345"), unrealized_pnl=Decimal("34.5"),
                                 marked_at=now.astimezone(dt.timezone(dt.timedelta(hours=-4))))
            rows = repo.open_positions()
            # the remembered read was patched, not read again (and nothing reached the database with write-behind)
            assert not any(s.lstrip().upper().startswith("SELECT") for s in statements)
            assert bool(statements) is not write_behind
            assert (rows[0].current_price, rows[0].unrealized_pnl, rows[0].marked_at) == (
                Decimal("2.3450"), Decimal("34.50"), now)
            assert rows[1].current_price is None and rows[1].id == second
            assert rows[0]._mapping["current_price"] == Decimal("2.3450")
            # any read that reaches the database sees the mark: it was written first
            stored = conn.execute(select(active_positions.c.current_price).where(active_positions.c.id == first)).scalar()
            assert stored == Decimal("2.3450")
            repo.update_position(second, current_price=Decimal("1.10"), unrealized_pnl=Decimal("-90"), marked_at=now)
        uow.commit()  # the commit writes what waits
        if write_behind:
            assert uow.write_behind is not None and not uow.write_behind.marks
    with any_db.read() as conn:
        fresh_rows = AccountRepository(conn, "large-100k").open_positions()
    assert [(r.current_price, r.unrealized_pnl, r.marked_at) for r in fresh_rows] == [
        (rows[0].current_price, rows[0].unrealized_pnl, rows[0].marked_at), (Decimal("1.1000"), Decimal("-90.00"), now)]


def test_marks_wait_for_a_read_that_may_see_positions(any_db):
    """With write-behind a mark is in the database before any read that names a mark column
    anywhere (a sub-query's condition, a whole row) or whose columns are not known, and waits
    through the reads built once that name none: the claim's queries, run for every new
    recommendation, and the positions' own reads of ids, status or realized P&L."""
    now = dt.datetime(2026, 3, 16, 16, 0, tzinfo=dt.UTC)
    p, e = active_positions, dispatch_executions
    with any_db.unit_of_work(write_behind=True) as uow:
        buffer = uow.write_behind
        assert buffer is not None
        with any_db.transaction() as conn:
            repo = AccountRepository(conn, "large-100k")
            position = _position(repo, "SPY260320C00600000", now)
            repo.open_positions()

            def mark(price: str) -> None:
                repo.update_position(position, current_price=Decimal(price), unrealized_pnl=Decimal("1"), marked_at=now)
                assert buffer.marks

            def stored() -> Decimal:
                return conn.execute(select(p.c.current_price).where(p.c.id == position)).scalar_one()

            mark("2.50")
            assert repo.claim(run_id="r", now=now, limit=5, ttl=dt.timedelta(minutes=5)) == []
            assert buffer.marks  # recommendations and decisions only: still waiting
            unpositioned = prepared(("test", "unpositioned"), lambda: select(e.c.id).where(
                ~exists(select(p.c.id).where(p.c.execution_id == e.c.id))))
            conn.execute(unpositioned).all()
            assert buffer.marks  # positions named, no mark column: still waiting
            marked_in_a_condition = prepared(("test", "marked"), lambda: select(e.c.id).where(
                exists(select(p.c.id).where(p.c.execution_id == e.c.id, p.c.unrealized_pnl > 0))))
            conn.execute(marked_in_a_condition).all()
            assert not buffer.marks
            mark("2.55")
            conn.execute(prepared(("test", "whole rows"), lambda: select(p))).all()
            assert not buffer.marks
            mark("2.60")
            conn.execute(select(dispatch_decisions.c.id)).all()  # not built once: what it reads is not known
            assert not buffer.marks
            mark("2.70")
            assert stored() == Decimal("2.7000")


def test_an_account_claiming_fewer_than_wait_claims_the_rest_without_reading_them_again(any_db):
    """Inside a unit of work the undecided recommendations are read once per new recommendation:
    this account's own claims are taken out of what it remembers, so a run that may claim one at a
    time claims the next at each run, oldest first, and none is forgotten."""
    rig = Rig(any_db, account_config("large-100k", ticker_cooldown_minutes=0, max_signals_per_run=1,
                                     lookback_window_minutes=30, max_trades_per_ticker_per_day=10))
    for ticker in ("IWM", "DIA", "XLF"):  # no quotes: each is claimed, then rejected (no contract)
        rig.recommend(0, ticker)
    statements: list[str] = []
    event.listen(any_db.engine, "before_cursor_execute", lambda _c, _k, sql, *_a: statements.append(" ".join(sql.split())))
    with any_db.unit_of_work(write_behind=True):
        claimed = []
        for _ in range(4):
            rig.manager("large-100k").run()
            claimed.append(rig.dispatcher("large-100k").run().claimed)
            rig.advance(1)
    assert claimed == [1, 1, 1, 0]
    assert [d.recommendation_id for d in rig.rows(dispatch_decisions, "large-100k")] == [1, 2, 3]
    undecided = [s for s in statements if "recommendations.created_at >=" in s and "LIMIT" not in s.upper()]
    processing = [s for s in statements if s.startswith("SELECT dispatch_decisions.recommendation_id, dispatch_decisions.claimed_at")]
    assert (len(undecided), len(processing)) == (1, 1)  # both patched by each claim and decision, never read again


def test_a_claim_and_its_decision_are_one_insert_written_before_any_read_of_decisions(any_db):
    """With write-behind on a database without decisions, a run's claims wait in the buffer, take
    their decisions there, and reach the database as one INSERT, in claim order, before anything
    reads decisions."""
    rig = Rig(any_db, account_config("large-100k", ticker_cooldown_minutes=0))
    statements: list[str] = []
    event.listen(any_db.engine, "before_cursor_execute", lambda _c, _k, sql, *_a: statements.append(" ".join(sql.split())))
    with any_db.unit_of_work(write_behind=True) as uow:
        buffer = uow.write_behind
        assert buffer is not None and buffer.buffers_decisions
        rig.recommend(0, "IWM")
        assert rig.dispatcher("large-100k").run().claimed == 1  # the account's reads are remembered from here
        rig.advance(1)
        rig.recommend(1, "DIA")
        rig.recommend(1)
        statements.clear()
        assert rig.dispatcher("large-100k").run().claimed == 2
        assert not [s for s in statements if "dispatch_decisions" in s and not s.startswith("SELECT")]
        assert [(k[0], r["status"]) for k, r in buffer.decisions.items()][-2:] == [(2, "rejected"), (3, "executed")]
        with any_db.read() as conn:  # a read that may see decisions: written first
            rows = conn.execute(select(dispatch_decisions.c.id, dispatch_decisions.c.recommendation_id,
                                       dispatch_decisions.c.status).order_by(dispatch_decisions.c.id)).all()
        assert [tuple(r) for r in rows] == [(1, 1, "rejected"), (2, 2, "rejected"), (3, 3, "executed")]
        assert len([s for s in statements if s.startswith("INSERT INTO dispatch_decisions")]) == 1
        assert not [s for s in statements if s.startswith("UPDATE dispatch_decisions")]


def test_a_claim_left_processing_is_found_stuck_from_the_remembered_reads(any_db):
    """The remembered processing claims gain a new claim and lose it when it is decided, exactly as
    reading them again would say: a claim never decided is found stuck once its time to live is
    over, and a decided one never is."""
    rig = Rig(any_db, account_config("tiny-1k"))
    rig.recommend(0)
    ttl, now = dt.timedelta(minutes=5), rig.clock.now()
    late = now + ttl + dt.timedelta(minutes=1)
    with any_db.unit_of_work(write_behind=True) as uow, any_db.transaction() as conn:
        repo = AccountRepository(conn, "tiny-1k")
        assert repo.may_have_claims(now=now, ttl=ttl).fresh
        (claim,) = repo.claim(run_id="r1", now=now, limit=5, ttl=ttl)
        misses = uow.cache.misses
        assert not repo.may_have_claims(now=now, ttl=ttl)
        outlook = repo.may_have_claims(now=late, ttl=ttl)
        assert (outlook.fresh, outlook.stuck) == (False, True)
        repo.decide(claim.id, now=now, status="rejected", reason_code="test")
        assert not repo.may_have_claims(now=late, ttl=ttl)
        assert uow.cache.misses == misses  # all of it from the patched reads


def test_a_new_recommendation_joins_the_remembered_undecided_ones_exactly_as_read(any_db):
    """Inside a unit of work a new recommendation is added, as the database returns it, to every
    account's remembered undecided recommendations instead of making four accounts read them again:
    the patched read equals reading again, value for value, and the claim takes it from there."""
    rig = Rig(any_db, account_config("large-100k"), account_config("tiny-1k"))
    rig.recommend(0)
    statements: list[str] = []
    event.listen(any_db.engine, "before_cursor_execute", lambda _c, _k, sql, *_a: statements.append(" ".join(sql.split())))
    with any_db.unit_of_work(write_behind=True) as uow, any_db.transaction() as conn:
        repos = [AccountRepository(conn, name) for name in ("large-100k", "tiny-1k")]
        now, ttl = rig.clock.now() + dt.timedelta(minutes=3), dt.timedelta(minutes=5)
        assert all(repo.may_have_claims(now=now, ttl=ttl).fresh for repo in repos)
        for minute, ticker in ((1, "QQQ"), (2, "IWM")):
            rig.recommend(minute, ticker)
        statements.clear()
        patched = [repo._undecided_rows(now) for repo in repos]
        assert not statements  # nothing read again
        uow.cache.forget()
        again = [repo._undecided_rows(now) for repo in repos]
        assert statements  # read from the database this time
        for mine, read in zip(patched, again, strict=True):
            assert sorted(tuple(r) for r in mine) == sorted(tuple(r) for r in read) and len(read) == 3
        claimed = repos[0].claim(run_id="r", now=now, limit=2, ttl=ttl)
        assert [c.id for c in claimed] == [1, 2] and [c.ticker for c in claimed] == ["SPY", "QQQ"]


def test_a_read_run_on_the_driver_gives_exactly_what_sqlalchemy_gives(sqlite_db, monkeypatch):
    """Inside a unit of work on SQLite the statements built once are read on the driver's cursor
    (``_read_on_driver``). Every such read of the scenario (bad rows included) is also run through
    ``conn.execute``: the same rows, values of the same types, under the same keys."""
    from ops_pipeline.adapters.db import database

    on_driver = database._read_on_driver
    compared: set[str] = set()

    def both(conn, plan, statement, given):  # noqa: ANN001, ANN202
        fast = on_driver(conn, plan, statement, given).all()
        slow = conn.execute(statement, given or {}).all()
        assert [r._fields for r in fast] == [r._fields for r in slow], plan.sql
        assert [repr(tuple(r)) for r in fast] == [repr(tuple(r)) for r in slow], plan.sql
        assert [[type(v) for v in r] for r in fast] == [[type(v) for v in r] for r in slow], plan.sql
        compared.add(plan.sql)
        return on_driver(conn, plan, statement, given)

    monkeypatch.setattr(database, "_read_on_driver", both)
    statements: list[str] = []
    event.listen(sqlite_db.engine, "before_cursor_execute", lambda _c, _k, sql, *_a: statements.append(sql))
    with sqlite_db.unit_of_work(write_behind=True) as uow:
        scenario(sqlite_db, uow.commit)
    assert len(compared) >= 10  # positions, executions, exposure, trades, claims, halts…
    assert set(compared) <= set(statements)  # cursor events fired for them as for any statement


def test_a_converted_summary_is_reused_only_for_a_summary_written_alike():
    """Run rows go to SQLite's driver with each JSON summary converted once per distinct value
    (``_json_key``): two values may share a conversion only if ``json.dumps`` writes them alike."""
    import json
    import math

    from ops_pipeline.adapters.db.database import _json_key

    values = [None, 0, 1, True, False, -0.0, 0.0, 1.0, math.nan, "1", "true", [], {}, [1], [True], {"a": 1},
              {"a": True}, {"a": 1.0}, {"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": {"b": None}}, {"a": {"b": "None"}},
              {1: 1}, {"1": 1}, {"rejected": {"no_contract": 2}}, {"rejected": {"no_contract": 2}}, ("a",), ["a"]]
    for a in values:
        for b in values:
            ka, kb = _json_key(a), _json_key(b)
            if ka is not None and kb is not None and ka == kb:
                assert json.dumps(a) == json.dumps(b), (a, b)
    assert _json_key({"claimed": 0, "rejected": {}}) == _json_key({"claimed": 0, "rejected": {}})  # idle runs share one
    assert _json_key({"a": 1.5}) is None and _json_key({1: "a"}) is None  # not keyed: converted each time
