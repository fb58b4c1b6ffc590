#!/usr/bin/env bash
# Carry the study's unfinished runs from one session to the next. The run folder lives outside the
# checkout ($RUNS, default ~/memgate-runs) and is usually kept between sessions, but not always: at
# 3.6-7 h per run and 3 h per session, a run lost at every session's end would never finish.
#   bash results/table1_r20/carry.sh pack      at a session's end, after stopping the sweep (kill
#                                              -INT its process group and wait): each unfinished run
#                                              with a checkpoint -> carry/<variant>_seed<s>.tar.xz
#   bash results/table1_r20/carry.sh unpack    (sweep.sh runs it first) restores a packed run whose
#                                              folder is missing or has fewer finished epochs
# A packed run is the whole run folder (checkpoint, per-epoch histories, snapshots, logs) but its
# lock; resuming from it is the same as resuming in place (resume is bit-identical: tests/train).
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${RUNS:-$HOME/memgate-runs}"
STUDY=table1_r20
CARRY=carry

epochs() {  # finished epochs of a run folder, or of the run inside a packed one
  if [ -f "$1" ]; then tar -xJOf "$1" "$2/metrics.jsonl" 2>/dev/null | grep -c . || true
  else grep -c . "$1/metrics.jsonl" 2>/dev/null || echo 0; fi
}

case "${1:-}" in
pack)
  if pgrep -f "memgate sweep .*$STUDY.toml --runs $RUNS( |$)" > /dev/null || pgrep -f "memgate train .*out=$RUNS/$STUDY/" > /dev/null; then
    echo "carry: the study is still running; stop it first (kill -INT the sweep's process group)" >&2; exit 2
  fi
  mkdir -p "$CARRY"
  for run in "$RUNS/$STUDY"/*/seed*; do
    [ -f "$run/checkpoint.pt" ] && [ ! -f "$run/summary.json" ] || continue
    rel="$STUDY/$(basename "$(dirname "$run")")/$(basename "$run")"
    out="$CARRY/$(basename "$(dirname "$run")")_$(basename "$run").tar.xz"
    tar -C "$RUNS" --exclude=.lock -cJf "$out.tmp" "$rel" && mv "$out.tmp" "$out"
    echo "packed $rel at epoch $(epochs "$run") -> results/$STUDY/$out ($(du -h "$out" | cut -f1))"
  done ;;
unpack)
  for packed in "$CARRY"/*.tar.xz; do
    [ -e "$packed" ] || continue
    name=$(basename "$packed" .tar.xz)
    rel="$STUDY/${name%_seed*}/seed${name##*_seed}"
    have=$(epochs "$RUNS/$rel"); carried=$(epochs "$packed" "$rel")
    if [ -f "$RUNS/$rel/summary.json" ] || [ "$have" -ge "$carried" ]; then
      echo "carry: $rel has $have epochs here (packed: $carried): kept"; continue
    fi
    rm -rf "${RUNS:?}/$rel" && mkdir -p "$RUNS" && tar -C "$RUNS" -xJf "$packed"
    echo "carry: $rel restored at epoch $carried from results/$STUDY/$packed"
  done ;;
*) echo "usage: bash results/table1_r20/carry.sh pack|unpack" >&2; exit 2 ;;
esac
