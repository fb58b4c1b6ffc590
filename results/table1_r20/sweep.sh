#!/usr/bin/env bash
# The Table 1 at ResNet-20 study (issue 34), in the order the issue asks for: seeds 0-2 of the
# baseline and the scratch gate (an interim answer), then the baseline-initialised gate of seeds
# 0-2, then seeds 3-4. Two one-thread lanes (--jobs 2). The second sweep is the whole grid: it
# goes seed by seed, so binit 0-2 come first and no lane waits (a sweep of binit 0-2 alone would
# train its third run with the other lane idle for a whole run). Resumable: run it again after any
# stop; finished runs are skipped and unfinished ones resume from their last checkpoint
# (restored from results/table1_r20/carry/ where this machine lost the run folder: carry.sh).
#   bash results/table1_r20/sweep.sh            (from the checkout; runs in $RUNS)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${RUNS:-$HOME/memgate-runs}"
export MEMGATE_DATA="${MEMGATE_DATA:-$(cd .. && pwd)/shared/data}"
MEMGATE="${MEMGATE:-.venv/bin/memgate}"
GRID=experiments/table1_r20.toml
RUNS="$RUNS" bash results/table1_r20/carry.sh unpack  # runs packed at an earlier session's end
"$MEMGATE" sweep "$GRID" --runs "$RUNS" --jobs 2 --seeds 0,1,2 --variants baseline,scratch_lr0.01_const
"$MEMGATE" sweep "$GRID" --runs "$RUNS" --jobs 2
