"""``ops-pipeline recommendations import FILE``: recommendations from another system, from a CSV or
JSON file (SPEC "The signal engine": it accepts recommendations from outside).

Columns (CSV header, or keys of each JSON object; a JSON file is a list of objects or
``{"recommendations": [...]}``):

============== ======== ==========================================================================
column         required meaning
============== ======== ==========================================================================
ticker         yes      normalised symbol (``SPY``, ``BRK.B``)
action         yes      ``BUY_CALL`` or ``BUY_PUT``
strategy_type  yes      ``day_trade`` (0–1 DTE) or ``swing_trade`` (7–30 DTE)
confidence     yes      0 to 1
volume_ratio   yes      ≥ 0 (the bar's volume against its recent average)
bar_ts         yes      when the bar the idea comes from closed (RFC 3339; no offset: UTC)
feature_ts     no       when its features were computed (default: ``bar_ts``)
created_at     no       when it was issued (default: ``feature_ts``); the lookback window counts from it
underlying_price no     the underlying's price then, dollars
source         no       who issued it (default ``import``)
============== ======== ==========================================================================

Every row gets the validation a claim applies (:func:`~ops_pipeline.domain.recommendations.parse_recommendation`);
a refused row is named by its line (CSV; the header is line 1) or record number (JSON) and its
fields, and the good rows are stored. A row already stored (same source, ticker, bar time and
action) is not stored again, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops_pipeline.adapters.db.database import Database
from ops_pipeline.adapters.db.repositories import SharedRepository
from ops_pipeline.domain.market import Recommendation
from ops_pipeline.domain.recommendations import parse_recommendation
from ops_pipeline.errors import DataError

REQUIRED = ("ticker", "action", "strategy_type", "confidence", "volume_ratio", "bar_ts")
OPTIONAL = ("feature_ts", "created_at", "underlying_price", "source")
DEFAULT_SOURCE = "import"
MAX_BYTES = 50 * 1024 * 1024


@dataclass
class ImportResult:
    """Rows read, stored (new), already present, and refused (``where: problems``)."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each row of a CSV or JSON file (by its extension, else by its first character).

    Raises:
        DataError: unreadable, too large, not CSV/JSON, or columns the format does not know.
    """
    try:
        if path.stat().st_size > MAX_BYTES:
            raise DataError(f"{path}: larger than {MAX_BYTES // 1024 // 1024} MB")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    is_json = path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv" and text.lstrip()[:1] in "[{")
    rows = _json_rows(path, text) if is_json else _csv_rows(path, text)
    known = set(REQUIRED) | set(OPTIONAL)
    unknown = sorted({k for _, row in rows for k in row if not k.startswith('__')} - known)
    if unknown:
        raise DataError(f"{path}: unknown column(s) {', '.join(unknown)}; columns: {', '.join((*REQUIRED, *OPTIONAL))}")
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise DataError(f"{path}: empty (a header line is expected: {','.join(REQUIRED)})")
    unknown = sorted({f.strip() for f in reader.fieldnames} - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise DataError(f"{path}: unknown column(s) {', '.join(unknown)}; columns: {', '.join((*REQUIRED, *OPTIONAL))}")
    rows = []
    for row in reader:
        extra = row.pop(None, None)  # type: ignore[call-overload]
        where = f"line {reader.line_num}"
        if extra:
            rows.append((where, {"__extra__": extra}))
            continue
        rows.append((where, {k.strip(): (v.strip() if isinstance(v, str) and v.strip() != "" else None)
                             for k, v in row.items() if k is not None}))
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if isinstance(data, dict) and isinstance(data.get("recommendations"), list):
        data = data["recommendations"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a list of objects or {{"recommendations": [...]}}')
    return [(f"record {i}", item if isinstance(item, dict) else {"__not_an_object__": item})
            for i, item in enumerate(data, start=1)]


def _validated(row: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    if "__extra__" in row:
        return None, ["more fields than the header names"]
    if "__not_an_object__" in row:
        return None, ["not an object"]
    missing = [k for k in REQUIRED if row.get(k) in (None, "")]
    feature = row.get("feature_ts") or row.get("bar_ts")
    raw = {**row, "id": 0, "feature_ts": feature, "created_at": row.get("created_at") or feature}
    parsed = parse_recommendation(raw)
    problems = [f"{k}: required" for k in missing]
    if not isinstance(parsed, Recommendation):
        problems += [p for p in parsed.problems if not any(p.startswith(f"{k}=None") for k in missing)]
        return None, problems
    if problems:
        return None, problems
    source = row.get("source") or DEFAULT_SOURCE
    if not isinstance(source, str) or len(source) > 40:
        return None, [f"source={source!r}: text of at most 40 characters"]
    return {
        "source": source, "ticker": parsed.ticker, "action": parsed.action.value,
        "strategy_type": parsed.strategy_type.value, "confidence": parsed.confidence,
        "volume_ratio": parsed.volume_ratio,
        "underlying_price": parsed.underlying_price if row.get("underlying_price") is not None else None,
        "bar_ts": parsed.bar_time, "feature_ts": parsed.feature_time, "created_at": parsed.created_at,
        "features": {"imported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    }, []


def import_recommendations(db: Database, path: Path) -> ImportResult:
    """Validate every row of ``path`` and store the good ones in one transaction.

    Raises:
        DataError: the file as a whole cannot be used (see :func:`read_rows`); nothing is stored.
    """
    rows = read_rows(path)
    result = ImportResult(read=len(rows))
    good = []
    for where, row in rows:
        values, problems = _validated(row)
        if values is None:
            result.refused.append(f"{where}: {'; '.join(problems)}")
        else:
            good.append(values)
    with db.transaction() as conn:
        repo = SharedRepository(conn)
        for values in good:
            if repo.add_recommendation(values):
                result.stored += 1
            else:
                result.duplicates += 1
    return result
