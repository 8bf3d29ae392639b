#!/usr/bin/env bash
# starcompactor on this machine, from a fresh checkout.
#
#   ./run_local.sh              the demo: a trace (DirectRunner) of the Nova
#                               history bundled in demo/, and its summary
#   ./run_local.sh test [ARGS]  the test suite (pytest ARGS); installs
#                               MariaDB from Debian's packages if missing
#   ./run_local.sh -- ARGS      starcompactor ARGS, in the project's venv
#
# Sets up a virtualenv in .venv (STARCOMPACTOR_VENV to move it) on first use.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${STARCOMPACTOR_VENV:-.venv}

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "run_local: creating virtualenv $VENV" >&2
    python3 -m venv "$VENV"
  fi
  # Reinstall only when what the install depends on changed.
  local stamp="$VENV/.starcompactor-installed"
  local want
  want=$(cat setup.py requirements.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "run_local: installing starcompactor and its dependencies" >&2
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -e '.[test]'
    echo "$want" > "$stamp"
  fi
}

have_mariadb() {
  PATH="$PATH:/usr/sbin" command -v mariadbd >/dev/null &&
    PATH="$PATH:/usr/sbin" command -v mariadb-install-db >/dev/null
}

install_mariadb() {
  have_mariadb && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "run_local: installing MariaDB (Debian package mariadb-server)" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server
  else
    echo "run_local: MariaDB is needed for the tests; install it with" >&2
    echo "  sudo apt-get update && sudo apt-get install -y mariadb-server" >&2
    exit 1
  fi
}

case "${1:-demo}" in
  test)
    shift
    install_mariadb
    setup_venv
    exec "$VENV/bin/python" -m pytest tests "$@"
    ;;
  demo)
    setup_venv
    exec "$VENV/bin/python" -m starcompactor demo
    ;;
  --)
    shift
    setup_venv
    exec "$VENV/bin/starcompactor" "$@"
    ;;
  *)
    echo "usage: ./run_local.sh [test [PYTEST ARGS] | -- STARCOMPACTOR ARGS]" >&2
    exit 2
    ;;
esac
