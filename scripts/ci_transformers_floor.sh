#!/usr/bin/env bash
# CI: the family matrix and the core model tests against the OLDEST transformers pyproject allows, in its own
# venv (.venv-floor), and a check that the main venv (scripts/setup.sh) holds the NEWEST one pyproject allows.
# pyproject's bounds ("transformers>=FLOOR,<=CEILING") are therefore exactly the two versions CI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
spec=$(grep -o '"transformers>=[^"]*"' pyproject.toml | tr -d '"')
floor=$(sed -n 's/^transformers>=\([0-9.]*\),<=.*/\1/p' <<<"$spec")
ceiling=$(sed -n 's/^transformers>=[0-9.]*,<=\([0-9.]*\)$/\1/p' <<<"$spec")
if [ -z "$floor" ] || [ -z "$ceiling" ]; then
  echo "pyproject.toml must pin transformers as \"transformers>=FLOOR,<=CEILING\" (got: ${spec:-nothing})" >&2
  exit 1
fi
newest=$(.venv/bin/python -c "import transformers; print(transformers.__version__)")
if [ "$newest" != "$ceiling" ]; then
  echo "the main venv has transformers $newest but pyproject's ceiling is $ceiling: CI must test the ceiling" >&2
  exit 1
fi
PY=${PYTHON:-python3}
[ -x .venv-floor/bin/python ] || "$PY" -m venv .venv-floor
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv-floor/bin/python -m pip install -q torch==2.13.0  # pinned CPU build first, as in setup.sh
.venv-floor/bin/python -m pip install -q -e ".[serve,data,test]" "transformers==$floor"
got=$(.venv-floor/bin/python -c "import transformers; print(transformers.__version__)")
[ "$got" = "$floor" ] || { echo "floor venv has transformers $got, expected $floor" >&2; exit 1; }
echo "transformers floor $floor (newest tested: $ceiling in .venv)"
.venv-floor/bin/python -m pytest -q -p no:cacheprovider tests/test_families.py tests/test_no_deprecations.py \
  tests/test_exactness.py tests/test_mixed.py tests/test_base.py tests/test_interop.py tests/test_artifacts.py \
  tests/test_card.py
