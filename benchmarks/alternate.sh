#!/bin/bash
# Two versions of starcompactor, run alternately on the same data, for a
# before/after comparison on a shared, noisy machine (the ratio is what
# counts, not the absolute times).
#
#   OLD=/path/to/old/.venv/bin/starcompactor NEW=.venv/bin/starcompactor \
#   ROUNDS=3 KEY=mask.key benchmarks/alternate.sh SOURCE-ARGS...
#
# SOURCE-ARGS: e.g. --dump ~/.cache/starcompactor/bench-dump-500000-0.sql,
# or --mysql-host 127.0.0.1 --mysql-port P --mysql-user root (MYSQL_PWD
# from the environment) for a server started on a cached benchmark data
# directory (benchmarks/run.py keeps them in ~/.cache/starcompactor).
# Prints one line per run: version, round, wall seconds, exit status.
set -u
: "${OLD:?OLD=the older starcompactor executable}"
: "${NEW:?NEW=the newer starcompactor executable}"
: "${KEY:?KEY=a mask key file}"
ROUNDS=${ROUNDS:-3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for round in $(seq "$ROUNDS"); do
  for version in old new; do
    if [ "$version" = old ]; then exe=$OLD; else exe=$NEW; fi
    start=$(date +%s.%N)
    env -u STARCOMPACTOR_MASK_KEY "$exe" instances "$@" \
      --databases nova_cell0,nova_cell1 --output "$OUT/$version/trace" \
      --overwrite --mask-key-file "$KEY" --epoch 2015-09-01T00:00:00Z \
      --formats csv > "$OUT/$version.log" 2>&1
    status=$?
    end=$(date +%s.%N)
    echo "$version $round $(echo "$end - $start" | bc) rc=$status"
  done
done
