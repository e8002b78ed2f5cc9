# Sourced by scripts/replay and scripts/test: create .venv and install the project (again only
# when pyproject.toml changed). EXTRAS may name pip extras, e.g. "[test]".
EXTRAS="${EXTRAS:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed${EXTRAS}-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".${EXTRAS}"
  touch "$stamp"
fi
