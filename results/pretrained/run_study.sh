#!/usr/bin/env bash
# Issue 20's study in the background, resumable (rerun it: finished runs are skipped, an unfinished
# one resumes): imports, ResNet-20 seeds 0-1, seed 2, then ResNet-56. From the repository root:
#   nohup bash results/pretrained/run_study.sh > runs/pretrained_study.log 2>&1 &
set -u
export MEMGATE_DATA=${MEMGATE_DATA:-../shared/data}
for d in 20 56; do
  [ -f runs/pretrained_import/resnet$d/checkpoint.pt ] || memgate import ../shared/pretrained/resnet$d-*.th -o runs/pretrained_import/resnet$d
done
memgate sweep experiments/pretrained_r20.toml --jobs 2 --seeds 0,1
memgate sweep experiments/pretrained_r20.toml --jobs 2
memgate sweep experiments/pretrained_r56.toml --jobs 2
