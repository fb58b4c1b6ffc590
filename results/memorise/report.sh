#!/usr/bin/env bash
# report.md, results.csv and the figures of results/memorise from the committed per-run files
# (summary.json, metrics.jsonl, detection.json of results/memorise/<variant>_seed<s>/), so that the
# report covers every session's runs; a run still in runs/memorise also lends its gates.npz and
# config.toml (Figure 2, the top-g grid). From the repository root: bash results/memorise/report.sh
set -eu
stage=runs/memorise_report
rm -rf "$stage"
for d in results/memorise/*_seed*/; do
  name=$(basename "$d"); variant=${name%_seed*}; seed=${name##*_seed}
  mkdir -p "$stage/$variant/seed$seed"
  cp "$d/summary.json" "$d/metrics.jsonl" "$d/detection.json" "$stage/$variant/seed$seed/"
  run=runs/memorise/$variant/seed$seed
  if [ -f "$run/gates.npz" ]; then cp "$run/gates.npz" "$run/config.toml" "$stage/$variant/seed$seed/"; fi
done
memgate report "$stage" --grid experiments/memorise.toml -o results/memorise
