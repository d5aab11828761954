#!/usr/bin/env bash
# The GPU node check (benchmarks/gpu_check.py): the Atari learners' and envpool's speed and a ppo_pong training in
# at most 9 minutes, printed as one markdown table to paste into an issue. In a pod or container of the rlkube-gpu
# image, from a checkout of this repository:
#
#   bash benchmarks/gpu_check.sh                 # --device gpu --minutes 9
#   bash benchmarks/gpu_check.sh --help          # the flags, with the tiny budgets of the tests' CPU dry run
#
# The python is $PYTHON, else this checkout's .venv, else python3 on the PATH (the image's virtualenv). The
# checkout's rlkube comes first on the path, so that the table's commit is the code that ran.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$repo/benchmarks/gpu_check.py" "$@"
