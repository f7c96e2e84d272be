# Shared by scripts/demo and scripts/test: what the project needs from
# Debian's archive, and the build into build/.

# Build and run: compiler, meson, the client libraries every backend uses.
BUILD_PACKAGES="gcc libc6-dev meson ninja-build pkg-config libcjson-dev uuid-dev
  libsqlite3-dev libhiredis-dev librdkafka-dev libcurl4-openssl-dev
  libmicrohttpd-dev"
# The demo builds its services with make, drives them with curl and jq, and
# may start Redis.
DEMO_PACKAGES="make curl jq redis-server"
# Tests: Check, real servers the tests start themselves, what the demo
# scenario needs, and Chromium for the demo page's browser test.
TEST_PACKAGES="check libsubunit-dev redis-server make curl jq chromium"
# Fuzzing: clang with libFuzzer (tests/fuzz, built in build-fuzz/).
FUZZ_PACKAGES="clang libclang-rt-14-dev"

# Installs whichever of the named packages are missing (root only: otherwise
# says what to install and stops).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configures (once) and builds a meson tree: build_tree DIR [meson options]
build_tree() {
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir" -j "$(nproc)" >/dev/null
}

# Installs build/ into build/prefix, where the examples find it through
# pkg-config exactly as a downstream project would.
install_prefix() {
  local prefix=$PWD/build/prefix
  meson configure build -Dprefix="$prefix" -Dlibdir=lib >/dev/null
  meson install -C build --quiet >/dev/null
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$prefix/bin:$PATH"
  EVBUS_PREFIX=$prefix
}

# The interop suite's third-party peers (tests/interop): node and npm from
# Debian when missing, then the pinned packages (package-lock.json) with
# npm ci, which needs the npm registry. Without them the interop tests
# report a skip with the reason, never a pass; returns 1 then.
install_interop_peers() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ensure_packages nodejs npm
  fi
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error) && return
  echo "npm ci failed in tests/interop: the interop tests will be skipped"
  return 1
}
