#!/usr/bin/env bash
# Commit-ready copies of the study's finished runs: each run folder with summary.json (written last,
# so present only when the run finished) gets its small files copied to
# results/table1_r20/<variant>_seed<s>/ (summary.json, metrics.jsonl, config.toml); its carry file
# becomes the slim finished one at the next `carry.sh pack`. Safe to run while the sweep runs.
#   bash results/table1_r20/collect.sh        then: git add results/table1_r20 && git commit
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${RUNS:-$HOME/memgate-runs}"
for summary in "$RUNS"/table1_r20/*/seed*/summary.json; do
  [ -f "$summary" ] || continue
  run=$(dirname "$summary")
  name="$(basename "$(dirname "$run")")_$(basename "$run")"
  mkdir -p "$name"
  cp "$run/summary.json" "$run/metrics.jsonl" "$run/config.toml" "$name/"
  echo "collect: $name ($(python3 -c "import json,sys; print('{:.2f}%'.format(100 * json.load(open(sys.argv[1]))['final_test_acc']))" "$summary") test)"
done
