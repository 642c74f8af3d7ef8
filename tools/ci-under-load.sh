#!/usr/bin/env bash
# Run the whole test suite several times in a row with every core busy, the way a shared CI
# machine runs it. Tests must wait on events, not on the clock: any failure here is a bug.
#
#   tools/ci-under-load.sh [RUNS] [pytest args...]      (default: 3 runs, the whole suite)
#
# The load is stress-ng (apt-get install stress-ng) or, without it, one busy Python loop per
# core. Results go to ci-under-load-*.log in $TMPDIR; the exit status is the number of failed runs.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
shift || true
python=.venv/bin/python
[ -x "$python" ] || { echo "no .venv here: run the README's test command first" >&2; exit 2; }
cores=$(nproc)

hog_pids=()
stop_load() { [ ${#hog_pids[@]} -eq 0 ] || kill "${hog_pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_load EXIT INT TERM
if command -v stress-ng >/dev/null; then
    stress-ng --cpu "$cores" --quiet & hog_pids+=($!)
    load="stress-ng --cpu $cores"
else
    for _ in $(seq "$cores"); do python3 -c 'while True: pass' & hog_pids+=($!); done
    load="$cores busy Python loops"
fi
export RWKV_TUI_REQUIRE_TOOLS=${RWKV_TUI_REQUIRE_TOOLS:-1}

failed=0
for run in $(seq "$runs"); do
    log="${TMPDIR:-/tmp}/ci-under-load-$run.log"
    start=$(date +%s)
    "$python" -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1
    status=$?
    summary=$(tail -n 1 "$log")
    echo "run $run/$runs under $load: exit $status, $(( $(date +%s) - start )) s: $summary"
    if [ "$status" -ne 0 ]; then
        failed=$((failed + 1))
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
    fi
done
echo "$failed of $runs runs failed"
exit "$failed"
