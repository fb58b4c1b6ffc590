#!/usr/bin/env bash
# The study's report and per-sample scores, from the finished runs in $RUNS (after collect.sh):
#   memgate report: report.md, results.csv, curves.png, Figure 2 of each gated run, here;
#   memgate scores of each finished run into <variant>_seed<s>/ (train_scores.npz, test_scores.npz,
#   scores.md): the baseline first, so that each gated run of the same seed sets its g beside the
#   baseline's own loss, -AUM, forgetting events, CSL and EL2N, and beside this project's held-out
#   1 - C-score and memorisation estimates (results/holdout, 10k of the images). Runs already scored
#   are skipped.
#   Then, for each variant with two or more scored seeds, memgate agreement of their score files
#   (agreement/<variant>_<split>.md/.json/.png): does each score rank the same images in every seed?
#   With PROXIES=1 the scores add prediction depth (final network) and curvature and loss
#   sensitivity averaged over the snapshots of epochs 30 and 60 and the final network (three points
#   of the schedule: before the first LR drop, after the second, the end; about half an hour of one
#   core per run, estimated from results/proxies) and the gated run's study of g against them.
#   bash results/table1_r20/analyse.sh        [PROXIES=1] [RUNS=...]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${RUNS:-$HOME/memgate-runs}/table1_r20"
MEMGATE="${MEMGATE:-.venv/bin/memgate}"
HERE=results/table1_r20
PROXY_ARGS=()
[ "${PROXIES:-0}" = 1 ] && PROXY_ARGS=(--proxies --snapshots 30,60)
"$MEMGATE" report "$RUNS" -o "$HERE" --grid experiments/table1_r20.toml
for s in 0 1 2 3 4; do
  [ -f "$RUNS/baseline/seed$s/summary.json" ] || continue
  base="$HERE/baseline_seed$s"
  [ -f "$base/train_scores.npz" ] || "$MEMGATE" scores "$RUNS/baseline/seed$s" -o "$base" "${PROXY_ARGS[@]}"
  beside=()
  for key in loss neg_aum forgetting csl el2n; do beside+=(--scores "$base/train_scores.npz:$key"); done
  [ "${PROXIES:-0}" = 1 ] && beside+=(--scores "$base/train_scores.npz:prediction_depth" --scores "$base/train_scores.npz:curvature")
  # this project's held-out estimates (results/holdout: 16 models on a 10k subset), where they overlap
  beside+=(--scores results/holdout/holdout.npz --scores results/holdout/memorisation.npz --partial)
  for v in scratch_lr0.01_const binit_lr0.01_const; do
    run="$RUNS/$v/seed$s"
    [ -f "$run/summary.json" ] && [ ! -f "$HERE/${v}_seed$s/train_scores.npz" ] || continue
    "$MEMGATE" scores "$run" -o "$HERE/${v}_seed$s" "${beside[@]}" "${PROXY_ARGS[@]}"
  done
done
for v in baseline scratch_lr0.01_const binit_lr0.01_const; do
  for split in train test; do
    files=("$HERE/${v}"_seed?/"${split}_scores.npz")
    [ -f "${files[0]}" ] && [ "${#files[@]}" -ge 2 ] || continue
    "$MEMGATE" agreement "${files[@]}" -o "$HERE/agreement/${v}_${split}.md" --force >/dev/null
  done
done
