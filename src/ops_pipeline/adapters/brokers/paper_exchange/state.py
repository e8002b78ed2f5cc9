"""The paper exchange's state in a SQLite file, so a restarted exchange resumes where it stopped:
every account's cash, holdings, orders (resting ones included) and order ids, the expiry
settlements, and the market time.

The exchange saves an account's book after every request that touched it, before answering (so an
answer the client received always describes saved state; a crash before the save loses the
request and its answer together, which the client settles by ``client_order_id``). Orders are
saved as they change (:attr:`~ops_pipeline.adapters.brokers.simulated.Book.dirty`), not all at
every request. Money is stored as decimal text, times as ISO 8601 UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from ops_pipeline.adapters.brokers.simulated import Book, Holding, Settlement
from ops_pipeline.domain.market import QuoteSource
from ops_pipeline.domain.values import OccSymbol
from ops_pipeline.errors import DatabaseError
from ops_pipeline.ports import OrderRequest, OrderResult, OrderSide, OrderStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, account_number TEXT NOT NULL, cash TEXT NOT NULL,
                                     sequence INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS holdings (account TEXT NOT NULL, symbol TEXT NOT NULL, qty INTEGER NOT NULL,
                                     avg_price TEXT NOT NULL, PRIMARY KEY (account, symbol));
CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, account TEXT NOT NULL, seq INTEGER NOT NULL,
                                   client_order_id TEXT NOT NULL, result TEXT NOT NULL, resting TEXT);
CREATE INDEX IF NOT EXISTS orders_account ON orders (account, seq);
CREATE TABLE IF NOT EXISTS settlements (account TEXT NOT NULL, n INTEGER NOT NULL, symbol TEXT NOT NULL,
                                        qty INTEGER NOT NULL, price TEXT NOT NULL, at TEXT NOT NULL,
                                        PRIMARY KEY (account, n));
"""


def _encode(value: Any) -> Any:  # noqa: ANN401 - JSON values
    if isinstance(value, Decimal | OccSymbol):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, OrderSide | OrderStatus | QuoteSource):
        return value.value
    return value


def _dumps(obj: OrderResult | OrderRequest) -> str:
    return json.dumps({f.name: _encode(getattr(obj, f.name)) for f in fields(obj)})


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _result(text: str) -> OrderResult:
    d = json.loads(text)
    return OrderResult(
        broker_order_id=d["broker_order_id"], client_order_id=d["client_order_id"], symbol=OccSymbol.parse(d["symbol"]),
        side=OrderSide(d["side"]), qty=d["qty"], status=OrderStatus(d["status"]), filled_qty=d["filled_qty"],
        filled_avg_price=_decimal(d["filled_avg_price"]), submitted_at=_time(d["submitted_at"]),  # type: ignore[arg-type]
        filled_at=_time(d["filled_at"]), quote_source=QuoteSource(d["quote_source"]) if d["quote_source"] else None,
        quote_time=_time(d["quote_time"]), quote_snapshot=d["quote_snapshot"], limit_price=_decimal(d["limit_price"]),
    )


def _request(text: str) -> OrderRequest:
    d = json.loads(text)
    return OrderRequest(d["client_order_id"], OccSymbol.parse(d["symbol"]), OrderSide(d["side"]), d["qty"],
                        _decimal(d["limit_price"]))


class ExchangeState:
    """One state file. Not thread-safe: the exchange calls it under its own lock.

    Raises:
        DatabaseError: the file cannot be opened or is not a paper-exchange state.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"cannot use {path} as the paper exchange's state: {exc}") from None

    def market_time(self) -> dt.datetime | None:
        """The market time last saved, or ``None`` for a new state."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'market_time'").fetchone()
        return None if row is None else dt.datetime.fromisoformat(row[0])

    def load(self) -> dict[str, Book]:
        """Every saved account's book."""
        books: dict[str, Book] = {}
        for name, number, cash, sequence in self._conn.execute("SELECT name, account_number, cash, sequence FROM accounts"):
            books[name] = Book(account_number=number, cash=Decimal(cash), sequence=sequence)
        for account, symbol, qty, price in self._conn.execute("SELECT account, symbol, qty, avg_price FROM holdings"):
            books[account].holdings[symbol] = Holding(qty, Decimal(price))
        for order_id, account, client_id, result, resting in self._conn.execute(
                "SELECT order_id, account, client_order_id, result, resting FROM orders ORDER BY account, seq"):
            book = books[account]
            book.orders[order_id] = _result(result)
            book.by_client_id[client_id] = order_id
            if resting is not None:
                book.resting[order_id] = _request(resting)
        for account, symbol, qty, price, at in self._conn.execute(
                "SELECT account, symbol, qty, price, at FROM settlements ORDER BY account, n"):
            books[account].settlements.append(Settlement(OccSymbol.parse(symbol), qty, Decimal(price),
                                                         dt.datetime.fromisoformat(at)))
        return books

    def save(self, name: str, book: Book, market_time: dt.datetime) -> None:
        """Save one account's book (changed orders only) and the market time, in one transaction."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT INTO accounts VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                      "cash = excluded.cash, sequence = excluded.sequence", (name, book.account_number, str(book.cash),
                                                                            book.sequence))
            c.execute("DELETE FROM holdings WHERE account = ?", (name,))
            c.executemany("INSERT INTO holdings VALUES (?, ?, ?, ?)",
                          [(name, s, h.qty, str(h.avg_price)) for s, h in book.holdings.items()])
            for order_id in sorted(book.dirty):
                order = book.orders[order_id]
                resting = book.resting.get(order_id)
                c.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET "
                          "result = excluded.result, resting = excluded.resting",
                          (order_id, name, int(order_id.rsplit("-", 1)[-1]), order.client_order_id, _dumps(order),
                           _dumps(resting) if resting else None))
            saved = c.execute("SELECT COUNT(*) FROM settlements WHERE account = ?", (name,)).fetchone()[0]
            c.executemany("INSERT INTO settlements VALUES (?, ?, ?, ?, ?, ?)",
                          [(name, n, str(s.symbol), s.qty, str(s.price), s.at.isoformat())
                           for n, s in enumerate(book.settlements) if n >= saved])
            self.save_market_time(market_time)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        book.dirty.clear()

    def save_market_time(self, market_time: dt.datetime) -> None:
        self._conn.execute("INSERT INTO meta VALUES ('market_time', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (market_time.astimezone(dt.UTC).isoformat(),))

    def close(self) -> None:
        self._conn.close()
