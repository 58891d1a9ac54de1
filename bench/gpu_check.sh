#!/usr/bin/env bash
# GPU check (issue 15): bench/gpu_check.py with unbuffered output (a remote run shows the log's tail); args pass through.
PYTHONUNBUFFERED=1 exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"
