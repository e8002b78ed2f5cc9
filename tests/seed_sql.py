"""The SQL users already run, taken verbatim from the seed documents."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
_EMBEDDED = re.compile(r"'sql':\s*\"\"\"(.*?)\"\"\"", re.S)


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--")).strip()


def seed_queries(seeds_dir: Path) -> list[tuple[str, str]]:
    """Every SELECT/WITH statement in seeds 002 and 003 that reads dispatch_executions or
    account_metadata, as (label, sql) with the SQL unchanged."""
    found = []
    for path in sorted(seeds_dir.glob("00[23]_*.txt")):
        text = path.read_text(encoding="utf-8")
        blocks = _BLOCK.findall(text) + _EMBEDDED.findall(text)
        for n, block in enumerate(blocks):
            for statement in (s.strip() for s in block.split(";")):
                body = _strip_comments(statement)
                if not body.upper().startswith(("SELECT", "WITH")):
                    continue
                if "dispatch_executions" in body or "account_metadata" in body:
                    first_comment = next((l.strip("- ").strip() for l in statement.splitlines() if l.strip().startswith("--")), "")
                    found.append((f"{path.name[:3]}#{n} {first_comment}".strip(), statement))
    return found
