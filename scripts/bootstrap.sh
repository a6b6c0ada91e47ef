#!/usr/bin/env bash
# Prepares this machine for EnvelopePay. Idempotent: when everything is in place it changes
# nothing, prints nothing and takes a second or two.
#
#   bash scripts/bootstrap.sh [run]   for `make run`: Python env, WeasyPrint's libraries, RabbitMQ
#                                     (and PostgreSQL when DATABASE_URL_TEMPLATE points here)
#   bash scripts/bootstrap.sh test    for `make test`: the same, plus poppler-utils, Chromium and
#                                     PostgreSQL on 127.0.0.1:5432 (user postgres, no password)
#   bash scripts/bootstrap.sh setup   install only: Python env and system libraries, start nothing
#
# Written for Debian 12 as root, with only package registries reachable: Python packages come
# from PyPI through uv, everything else from Debian. uv never downloads a Python.
set -euo pipefail

mode="${1:-run}"
case "$mode" in
  run | test | setup) ;;
  *)
    echo "usage: bash scripts/bootstrap.sh [run|test|setup]" >&2
    exit 2
    ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PYTHON_DOWNLOADS=never
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# The uv release the Dockerfile pins; used only when uv is not installed yet.
UV_VERSION="${UV_VERSION:-0.13.8}"
# Where the output of installs and starts goes; shown when one fails.
LOG="var/bootstrap.log"
mkdir -p var

say() { printf 'bootstrap: %s\n' "$*"; }
die() {
  printf 'bootstrap: error: %s\n' "$*" >&2
  exit 1
}

# Runs a command with its output in $LOG; on failure shows the end of the log and stops.
quietly() {
  if ! "$@" >>"$LOG" 2>&1 </dev/null; then
    printf 'bootstrap: failed: %s (last lines of %s follow)\n' "$*" "$LOG" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "root is needed for: $*"
  fi
}

# --- Debian packages -------------------------------------------------------------------------

apt_updated=0

installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

# apt_install WHAT PACKAGE...: installs the packages that are missing, with one line of output.
apt_install() {
  local what=$1 pkg
  shift
  local missing=()
  for pkg in "$@"; do
    installed "$pkg" || missing+=("$pkg")
  done
  ((${#missing[@]} > 0)) || return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing system packages for $what: ${missing[*]} (no apt-get here: install them by hand)"
  if ((apt_updated == 0)); then
    quietly as_root apt-get update
    apt_updated=1
  fi
  quietly as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
  say "installed ${missing[*]} ($what)"
}

# --- ports -----------------------------------------------------------------------------------

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
}

# wait_port HOST PORT SECONDS
wait_port() {
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    port_open "$1" "$2" && return 0
    sleep 0.5
  done
  port_open "$1" "$2"
}

# Whether a URL points at this machine on PORT (or on its scheme's default port).
is_local_url() {
  [[ $1 =~ ^[a-z0-9+]+://([^@/]*@)?(127\.0\.0\.1|localhost)(:$2)?(/|$) ]]
}

# --- Python and uv ---------------------------------------------------------------------------

python_ok() {
  "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' >/dev/null 2>&1
}

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3 python3.11 python3.12 python3.13; do
    [[ -n $candidate ]] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if python_ok "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_python() {
  if ! PY=$(find_python); then
    apt_install "Python" python3 python3-pip python3-venv
    PY=$(find_python) || die "no Python 3.11, 3.12 or 3.13 found; install one (or set PYTHON)"
  fi
}

ensure_uv() {
  if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
    UV=(uv)
    return
  fi
  UV=("$PY" -m uv)
  "${UV[@]}" --version >/dev/null 2>&1 && return
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    apt_install "pip, to install uv" python3-pip python3-venv
  fi
  local user=()
  if [[ $(id -u) -ne 0 ]] && "$PY" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
    user=(--user)
  fi
  # Debian marks its Python as externally managed; uv is a self-contained tool, so that's fine.
  quietly env PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install "${user[@]}" "uv==$UV_VERSION"
  "${UV[@]}" --version >/dev/null 2>&1 || die "uv was installed but '$PY -m uv' does not run"
  say "installed uv $UV_VERSION"
}

sync_venv() {
  local args=(sync --frozen) out
  # A working .venv is kept as it is; otherwise uv builds one on the Python found above.
  if ! .venv/bin/python -c '' >/dev/null 2>&1; then
    args+=(--python "$PY")
  fi
  unset UV_PROJECT_ENVIRONMENT
  if ! out=$("${UV[@]}" "${args[@]}" 2>&1 </dev/null); then
    printf '%s\n' "$out" >&2
    die "uv sync --frozen failed"
  fi
  if grep -qE '^(Creating virtual environment|Installed|Uninstalled)' <<<"$out"; then
    printf '%s\n' "$out" >>"$LOG"
    say "Python environment .venv: $(grep -E '^(Installed|Uninstalled)' <<<"$out" | paste -sd ';' -)"
  fi
}

# --- RabbitMQ --------------------------------------------------------------------------------

ensure_rabbitmq() {
  port_open 127.0.0.1 5672 && return 0
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install "message bus" rabbitmq-server
  # Installing may have started it; starting twice only fails the second start, so go on.
  if ! port_open 127.0.0.1 5672; then
    as_root rabbitmq-server -detached >>"$LOG" 2>&1 </dev/null || true
  fi
  if ! wait_port 127.0.0.1 5672 120; then
    timeout 60 rabbitmqctl await_startup >>"$LOG" 2>&1 </dev/null || true
    port_open 127.0.0.1 5672 ||
      die "RabbitMQ did not answer on 127.0.0.1:5672 within 2 minutes; see /var/log/rabbitmq/ and $LOG"
  fi
  say "started RabbitMQ on 127.0.0.1:5672"
}

# --- PostgreSQL ------------------------------------------------------------------------------

newest_dir() { # newest_dir GLOB...: the last existing match in version order
  local d
  for d in "$@"; do
    if [[ -e $d ]]; then printf '%s\n' "$d"; fi
  done | sort -V | tail -n 1
}

# Lets local TCP connections in without a password; only on a server this script installed.
trust_localhost() {
  local hba=$1 tmp
  grep -q '^# envelopepay bootstrap' "$hba" && return 0
  tmp=$(mktemp)
  {
    echo "# envelopepay bootstrap: local development and tests connect without a password"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    cat "$hba"
  } >"$tmp"
  as_root cp "$tmp" "$hba"
  rm -f "$tmp"
  say "PostgreSQL: local TCP connections (127.0.0.1, ::1) need no password"
}

ensure_postgresql() {
  local we_installed=0 conf ver
  if ! port_open 127.0.0.1 5432; then
    if [[ -z $(newest_dir /usr/lib/postgresql/*/bin/postgres) ]]; then
      apt_install "database for tests" postgresql
      we_installed=1
    fi
    command -v pg_ctlcluster >/dev/null 2>&1 || die "PostgreSQL is installed but pg_ctlcluster is not"
    conf=$(newest_dir /etc/postgresql/*/main)
    if [[ -z $conf ]]; then
      ver=$(basename "$(dirname "$(dirname "$(newest_dir /usr/lib/postgresql/*/bin/postgres)")")")
      quietly as_root pg_createcluster "$ver" main
      say "created the PostgreSQL $ver cluster main"
      conf=/etc/postgresql/$ver/main
    fi
    ver=$(basename "$(dirname "$conf")")
    if ((we_installed)); then
      trust_localhost "$conf/pg_hba.conf"
    fi
    if port_open 127.0.0.1 5432; then
      quietly as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    else
      quietly as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
    fi
    wait_port 127.0.0.1 5432 60 ||
      die "PostgreSQL $ver did not answer on 127.0.0.1:5432 within a minute; see /var/log/postgresql/"
    say "started PostgreSQL $ver on 127.0.0.1:5432"
  fi
}

# The suite connects as postgres without a password; say so plainly if that is refused.
check_test_postgresql() {
  command -v psql >/dev/null 2>&1 || return 0
  local err
  if ! err=$(PGCONNECT_TIMEOUT=5 psql -w -X -Atq -d "$1" -c 'select 1' 2>&1 </dev/null); then
    printf '%s\n' "$err" | head -n 3 >&2
    die "PostgreSQL on 127.0.0.1:5432 refused the test connection (user postgres, no password). \
Allow it in pg_hba.conf ('host all all 127.0.0.1/32 trust'), or point TEST_POSTGRES_URL elsewhere, \
or run SQLite only with TEST_BACKENDS=sqlite."
  fi
}

# --- the steps -------------------------------------------------------------------------------

ensure_python
ensure_uv

# WeasyPrint's libraries and fonts; the tests also need pdftoppm and Debian's Chromium.
if [[ $mode == run ]]; then
  apt_install "PDF rendering" libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 \
    fonts-dejavu-core fonts-liberation
else
  apt_install "PDF rendering and tests" libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 \
    fonts-dejavu-core fonts-liberation poppler-utils chromium
fi

sync_venv

if [[ $mode == setup ]]; then
  exit 0
fi

if [[ $mode == test ]]; then
  amqp_url=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
else
  amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
fi
if is_local_url "$amqp_url" 5672; then
  ensure_rabbitmq
fi

if [[ $mode == test ]]; then
  pg_url=${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
  if [[ ,${TEST_BACKENDS:-sqlite,postgresql}, == *,postgresql,* ]] && is_local_url "$pg_url" 5432; then
    ensure_postgresql
    check_test_postgresql "$pg_url"
  fi
elif [[ ${DATABASE_URL_TEMPLATE:-} == postgresql* ]] && is_local_url "$DATABASE_URL_TEMPLATE" 5432; then
  ensure_postgresql
fi
