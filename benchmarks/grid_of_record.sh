#!/usr/bin/env bash
# The benchmark grid of record (issue 11): 2 datasets × ipc 1/2/5/10 × random, MTT, DATM,
# PTM, PTM+DOM (with the random@method controls) × seeds 0-2, plus the full-data ceilings,
# at the cpu preset, on a Dask LocalCluster of one single-threaded worker per core.
# Resumable: rerun the same command and finished cells are skipped, running distillations
# resume from their checkpoints. One invocation, so no worker waits at a barrier: the
# full-data ceilings start first (the longest cells), then ipc 2 and 10 for both datasets
# (the claims' stability and ipc-2 cells), then 1 and 5 (mdd.benchmark.GridConfig.cells).
# While it runs, a heartbeat (Unix time, once a minute) goes to $BEAT; benchmarks/grid_wall.py turns it into the grid's wall time across sessions.
#
#   PATH=.venv/bin:$PATH MDD_DATA=../shared/medmnist bash benchmarks/grid_of_record.sh
set -euo pipefail
RUNS=${RUNS:-runs/benchmark_v2}
RESULTS=${RESULTS:-results/benchmark.csv}
# committed beside the rows: a new checkout loses runs/, not the wall time so far
BEAT=${BEAT:-results/benchmark_heartbeat.log}
mkdir -p "$(dirname "$BEAT")"
( while true; do date +%s >> "$BEAT"; sleep 60; done ) &
beat=$!
trap 'kill $beat 2>/dev/null || true' EXIT
mdd benchmark --preset cpu --flags breastmnist pneumoniamnist --ipcs 2 10 1 5 \
    --methods random mtt datm ptm ptm+dom full --seeds 0 1 2 \
    --runs "$RUNS" --results "$RESULTS" --format table
mdd benchmark --report --results "$RESULTS" --format table > /dev/null
mdd benchmark --claims --results "$RESULTS" --runs "$RUNS" --format table
python benchmarks/grid_wall.py "$BEAT" --md "$(dirname "$RESULTS")/benchmark_wall.md"
