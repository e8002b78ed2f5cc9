"""The one place that reads or writes account-scoped tables.

An :class:`AccountScope` is built for one ``account_name`` and every statement it builds carries
``account_name = :name``: a SELECT, UPDATE or DELETE gets the filter, an INSERT gets the value.
Repositories build their statements here and have no way to name another account (seed 004: the
position manager that forgot this filter duplicated positions every five minutes).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Column, ColumnElement, Delete, Insert, Select, Table, Update, bindparam, delete, insert, select, update
from sqlalchemy.sql import visitors
from sqlalchemy.sql.util import find_tables

from ops_pipeline.adapters.db.tables import ACCOUNT_SCOPED

S = TypeVar("S")

_PREPARED: dict[tuple[Hashable, ...], Any] = {}
"""Statements built once and executed with parameters: building a statement costs SQLAlchemy more
than running it, and a statement object reused keeps the cache key SQLAlchemy would otherwise
compute again at every execution."""


class Reads(NamedTuple):
    """What a prepared statement names: ``tables`` (names) and ``columns`` (``table.column``), in
    its FROM, joins, sub-queries, select lists (a whole table's columns included) and conditions."""

    tables: frozenset[str]
    columns: frozenset[str]


_READS: dict[int, tuple[Any, Reads]] = {}
"""id of a prepared statement → (the statement, what it reads)."""


def prepared(key: tuple[Hashable, ...], build: Callable[[], S]) -> S:
    """The statement ``build()`` returns, built on the first call with ``key`` and reused after.
    Whatever changes between executions must be a ``bindparam`` in it, never a value baked in."""
    stmt = _PREPARED.get(key)
    if stmt is None:
        stmt = _PREPARED[key] = build()
        _READS[id(stmt)] = (stmt, _reads(stmt))
    return stmt


def _reads(stmt: Any) -> Reads:  # noqa: ANN401 - any statement
    tables = find_tables(stmt, check_columns=True, include_aliases=True, include_joins=True)
    columns: set[str] = set()
    for element in visitors.iterate(stmt):
        named = element.selected_columns if isinstance(element, Select) else (element,)
        columns.update(f"{c.table.name}.{c.name}" for c in named if isinstance(c, Column) and c.table is not None)
    return Reads(frozenset(t.name for t in tables if isinstance(t, Table)), frozenset(columns))


def reads_of(statement: object) -> Reads | None:
    """What a statement built by :func:`prepared` reads; None for any other statement (what it
    reads is not known without walking it)."""
    found = _READS.get(id(statement))
    return found[1] if found is not None and found[0] is statement else None


ROW_ACCOUNT = "_account"
"""The parameter naming each row's account in :func:`update_by_row_account`."""


def update_by_row_account(table: Table) -> Update:
    """UPDATE ``table`` WHERE account_name = :_account: one statement executed with many rows of
    several accounts, each parameter set naming its own (``ROW_ACCOUNT``); what the replay's
    write-behind uses to write every account's marks at once."""
    return update(_scoped(table)).where(table.c.account_name == bindparam(ROW_ACCOUNT))


def _scoped(table: Table) -> Table:
    if table.name not in ACCOUNT_SCOPED:
        raise ValueError(f"{table.name} is not an account-scoped table")
    return table


class AccountScope:
    """Statement builders bound to one account."""

    def __init__(self, account_name: str) -> None:
        if not account_name:
            raise ValueError("an account scope needs an account_name")
        self.account_name = account_name

    def _check(self, table: Table) -> Table:
        return _scoped(table)

    def prepared(self, key: tuple[Hashable, ...], build: Callable[[], S]) -> S:
        """:func:`prepared` for this account: ``build`` makes its statement with this scope."""
        return prepared(("account", self.account_name, *key), build)

    def owns(self, table: Table) -> ColumnElement[bool]:
        """``table.account_name = :account_name`` (for joins and sub-queries)."""
        return self._check(table).c.account_name == self.account_name

    def select(self, table: Table, *columns: Any) -> Select[Any]:
        """SELECT ``columns`` (default: all) FROM ``table`` WHERE account_name = this account."""
        self._check(table)
        return select(*(columns or (table,))).select_from(table).where(self.owns(table))

    def insert(self, table: Table) -> Insert:
        """INSERT INTO ``table`` with account_name preset."""
        return insert(self._check(table)).values(account_name=self.account_name)

    def update(self, table: Table) -> Update:
        return update(self._check(table)).where(self.owns(table))

    def delete(self, table: Table) -> Delete:
        return delete(self._check(table)).where(self.owns(table))
