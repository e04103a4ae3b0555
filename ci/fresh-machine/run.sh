#!/usr/bin/env bash
# The fresh-machine stage of `make test`: given only this checkout, does a freshly made
# Debian 12 machine install everything `make demo` and the tests need?
#
# A Debian 12 root (debootstrap bookworm, variant minbase, plus git, make, python3 and
# ca-certificates: what a fresh machine has for `git clone` + `make`) is built once and
# cached below /var/cache/georelay-lab/; the cache holds Debian only, never a step of ours.
# Each run mounts a fresh overlay of it, gives it this machine's apt configuration, CA
# bundle and /etc/pip.conf, and runs ci/fresh-machine/inside.sh in it with systemd-nspawn
# on this machine's network (apt and pip reach the registries; everything else stays on
# loopback): git clone, make demo, make demo-down, every program of
# lab/debian-packages.txt, a few tests that use them. The overlay is removed afterwards,
# also when a step fails. Root only; stages on one machine run one at a time.
#
#   ci/fresh-machine/run.sh                 # what `make test-fresh` runs
#   FRESH_TESTS="tests/proxy/test_relay.py" ci/fresh-machine/run.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${GEORELAY_LAB_CACHE:-/var/cache/georelay-lab}
RUNS=${GEORELAY_FRESH_RUNS:-/var/tmp/georelay-fresh-machine}
SUITE=bookworm
MIRROR=${GEORELAY_FRESH_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=git,make,python3,ca-certificates
# The demo's addresses (inventories/demo): the root shares this machine's network.
DEMO_ADDRESSES='127\.0\.(1|2|9|10)\.[0-9]+:'

say() { printf '== fresh-machine: %s\n' "$*"; }
die() { printf 'fresh-machine: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, overlay mounts, systemd-nspawn)"
for tool in debootstrap systemd-nspawn flock ss git; do
  command -v "$tool" >/dev/null || die "$tool is missing: \`make system\` installs it"
done
started=$SECONDS

mkdir -p "$CACHE" "$RUNS"
exec 9>"$CACHE/fresh-machine.lock"
if ! flock -n 9; then
  say "another fresh-machine stage runs on this machine; waiting for it"
  flock -w 1800 9 || die "gave up waiting for $CACHE/fresh-machine.lock"
fi

# Runs left by a stage that was killed: we hold the lock, so nothing uses them.
for stale in "$RUNS"/run.*; do
  [ -d "$stale" ] || continue
  umount -R -l "$stale/root" 2>/dev/null || true
  rm -rf --one-file-system "$stale"
done

# -- the cached Debian 12 root -------------------------------------------------------------
key=$(printf '%s\n' "$SUITE" minbase "$BASE_PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
BASE=$CACHE/fresh-debian12-$key
if [ ! -d "$BASE" ]; then  # complete once it has its name: renamed when debootstrap is done
  say "building the Debian 12 base root $BASE (once, about a minute)"
  for old in "$CACHE"/fresh-debian12-*; do
    [ -d "$old" ] && rm -rf --one-file-system "$old"
  done
  building=$BASE.building
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$building" "$MIRROR" \
    > "$CACHE/fresh-debian12-debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/fresh-debian12-debootstrap.log" >&2; rm -rf "$building"
         die "debootstrap failed (log: $CACHE/fresh-debian12-debootstrap.log)"; }
  mv "$building" "$BASE"
  say "base root built in $((SECONDS - started)) s"
fi

# The demo in the root listens on the demo's addresses; a demo running here would share them.
if ss -Hltn | awk '{print $4}' | grep -Eq "^$DEMO_ADDRESSES"; then
  die "the demo's addresses (127.0.1.x, 127.0.2.x, 127.0.9.1, 127.0.10.x) are in use on this \
machine; stop that demo first (make demo-down)"
fi

# -- this run's root: an overlay of the base -----------------------------------------------
RUN=$(mktemp -d "$RUNS/run.XXXXXX")
ROOT=$RUN/root
cleanup() {
  local code=$?
  umount -R "$ROOT" 2>/dev/null || umount -R -l "$ROOT" 2>/dev/null || true
  rm -rf --one-file-system "$RUN"
  rm -rf --one-file-system "/run/systemd/nspawn/propagate/georelay-fresh-$$"
  if [ "$code" = 0 ]; then
    say "passed in $((SECONDS - started)) s"
  else
    say "FAILED (exit $code) after $((SECONDS - started)) s"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir "$RUN/upper" "$RUN/work" "$ROOT"
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT"

# This machine's apt sources and settings (the mirror may be a dated snapshot), its CA
# bundle (also as a local CA, so a later update-ca-certificates keeps it) and pip.conf.
rm -rf "$ROOT/etc/apt/sources.list" "$ROOT/etc/apt/sources.list.d"
for item in sources.list sources.list.d apt.conf.d preferences.d trusted.gpg trusted.gpg.d \
            keyrings; do
  if [ -e "/etc/apt/$item" ]; then
    rm -rf "${ROOT:?}/etc/apt/$item"
    cp -a "/etc/apt/$item" "$ROOT/etc/apt/$item"
  fi
done
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt \
  "$ROOT/usr/local/share/ca-certificates/georelay-build-host.crt"
[ -e /etc/pip.conf ] && install -m 0644 /etc/pip.conf "$ROOT/etc/pip.conf"

# What is tested is what a clone gets: the checkout's HEAD commit.
commit=$(git -C "$REPO" rev-parse HEAD)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
  say "note: uncommitted changes in $REPO are not tested, only its HEAD is"
fi
binds=(--bind-ro="$REPO:/src/georelay")
common=$(cd "$REPO" && cd "$(git rev-parse --git-common-dir)" && pwd)
case "$common" in  # a worktree: its .git names the main repository's directory
  "$REPO"/*) ;;
  *) binds+=(--bind-ro="$common:$common") ;;
esac
envs=()
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL \
            PIP_EXTRA_INDEX_URL PIP_CERT; do
  [ -n "${!name:-}" ] && envs+=(--setenv="$name=${!name}")
done

say "testing $commit in a fresh Debian 12 root ($ROOT)"
systemd-nspawn --quiet --register=no --keep-unit --pipe --resolv-conf=copy-host \
  --directory="$ROOT" --machine="georelay-fresh-$$" "${binds[@]}" "${envs[@]}" \
  --setenv=CI=true --setenv=LANG=C.UTF-8 --setenv=HOME=/root \
  --setenv=FRESH_COMMIT="$commit" --setenv=FRESH_TESTS="${FRESH_TESTS:-}" \
  --setenv=GEORELAY_TEST_NETS=230-254 \
  /bin/bash /src/georelay/ci/fresh-machine/inside.sh < /dev/null \
  2> >(grep -v --line-buffered '^Attempted to remove disk file system' >&2)
# (nspawn's own notice when /run is not a tmpfs: it leaves its propagation directory, which
# cleanup removes.)
