#!/usr/bin/env bash
# Carry the study's runs from one session to the next. The run folder lives outside the checkout
# ($RUNS, default ~/memgate-runs) and is usually kept between sessions, but not always: at 4-7 h
# per run and 3 h per session, a run lost at every session's end would never finish, and a lost
# finished baseline would be trained again (the sweep sees no summary.json) before the
# baseline-initialised gates of its seed could start.
#   bash results/table1_r20/carry.sh pack      at a session's end, after stopping the sweep (kill
#                                              -INT its process group and wait): each run with a
#                                              checkpoint -> carry/<variant>_seed<s>.tar.xz
#   bash results/table1_r20/carry.sh unpack    (sweep.sh runs it first) restores a packed run whose
#                                              folder is missing or has fewer finished epochs
# An unfinished run is packed whole (checkpoint, per-epoch histories, snapshots, logs) but its lock;
# resuming from it is the same as resuming in place (resume is bit-identical: tests/train). A
# finished run is packed whole too until analyse.sh has scored it (its <variant>_seed<s>/
# train_scores.npz is here): scores, proxies and Figure 2 need its histories, snapshots and
# gates.npz. Once scored it is packed slim, once: what the sweep, `memgate report` and `sweep
# --status` read (config.toml, summary.json, metrics.jsonl, inputs.json) and, for the baseline,
# the checkpoint the binit runs start from (byte for byte: their inputs.json holds its sha256).
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${RUNS:-$HOME/memgate-runs}"
STUDY=table1_r20
CARRY=carry

has() {  # does the packed file $out of run $rel (set by the pack loop) hold file $1?
  [ -f "$out" ] && tar -tJf "$out" "$rel/$1" > /dev/null 2>&1
}

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
    [ -f "$run/checkpoint.pt" ] || continue
    variant=$(basename "$(dirname "$run")")
    rel="$STUDY/$variant/$(basename "$run")"
    out="$CARRY/${variant}_$(basename "$run").tar.xz"
    what=("$rel")
    if [ -f "$run/summary.json" ]; then
      if [ -f "${variant}_$(basename "$run")/train_scores.npz" ]; then  # scored: slim, once
        if has summary.json && ! has signals.npz; then continue; fi
        what=("$rel/config.toml" "$rel/summary.json" "$rel/metrics.jsonl" "$rel/inputs.json")
        [ "$variant" = baseline ] && what+=("$rel/checkpoint.pt")
      elif has summary.json; then continue  # packed whole and finished: waits for analyse.sh
      fi
    fi
    tar -C "$RUNS" --exclude=.lock -cJf "$out.tmp" "${what[@]}" && mv "$out.tmp" "$out"
    state=$([ -f "$run/summary.json" ] && echo finished || echo "at epoch $(epochs "$run")")
    echo "packed $rel $state -> results/$STUDY/$out ($(du -h "$out" | cut -f1))"
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
