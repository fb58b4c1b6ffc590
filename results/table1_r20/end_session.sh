#!/usr/bin/env bash
# At a session's end, in one step: stop the sweep (SIGINT to its process group: every run saves a
# mid-epoch checkpoint and exits), pack the runs into carry/ (carry.sh pack), and start the sweep
# again so that it trains until the machine stops. Then commit carry/.
#   bash results/table1_r20/end_session.sh      (RUNS=... as for sweep.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${RUNS:-$HOME/memgate-runs}"
pgid=$(ps -eo pgid=,args= | awk '/bash results\/table1_r20\/sweep\.sh/ && !/awk/ {print $1; exit}')
[ -n "$pgid" ] && kill -INT -- "-$pgid"
for _ in $(seq 120); do  # at most 10 minutes for the runs to save and exit
  pgrep -f "memgate (sweep|train) .*$RUNS/?( |/|$)" > /dev/null || break
  sleep 5
done
RUNS="$RUNS" bash results/table1_r20/carry.sh pack
mkdir -p "$RUNS"
# job control on: a background command of a script without it starts with SIGINT ignored (the sweep
# installs its own handler since session 10, so this only matters for a checkout older than that)
set -m
setsid nohup bash results/table1_r20/sweep.sh >> "$RUNS/table1_r20.sweep.log" 2>&1 < /dev/null &
echo "end_session: sweep restarted; log $RUNS/table1_r20.sweep.log; now commit results/table1_r20/carry"
