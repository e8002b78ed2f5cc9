# Sourced by scripts/replay and scripts/test: create .venv and install the project (again only
# when pyproject.toml changed). EXTRAS may name pip extras, e.g. "[test]". pip's output goes to
# .venv/install.log and is shown only if the install fails.
EXTRAS="${EXTRAS:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed${EXTRAS}-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "installing ops-pipeline${EXTRAS} into .venv (first run only)…" >&2
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".${EXTRAS}"; } > .venv/install.log 2>&1; then
    tail -40 .venv/install.log >&2
    echo "error: installing ops-pipeline failed (full log: .venv/install.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
