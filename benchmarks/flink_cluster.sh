#!/usr/bin/env bash
# A standalone Flink session cluster on this machine: one JobManager and one
# TaskManager (2 slots), each its own daemon, REST on localhost:8081.
# Flink comes from PyPI (apache-flink + apache-flink-libraries, pip download
# into the runner cache, nothing installed); Maven Central serves no
# flink-dist. Needs Java 11+. The cluster itself is tests/flink_cluster.py.
#
#   benchmarks/flink_cluster.sh start [--slots N] [--rest_port P] [--flink_version 1.20]
#   benchmarks/flink_cluster.sh status
#   benchmarks/flink_cluster.sh stop
#
# Submit a Beam pipeline to it with
#   --runner FlinkRunner --flink_master=localhost:8081 --parallelism=2
#   --environment_type=LOOPBACK
# (that needs Beam's Flink job server jar: --flink_job_server_jar=PATH).
# Pid and log files: ${STARCOMPACTOR_RUNNER_CACHE:-~/.cache/starcompactor/runners}/flink-cluster/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${STARCOMPACTOR_VENV:-.venv}/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" tests/flink_cluster.py "$@"
