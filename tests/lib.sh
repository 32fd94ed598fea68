# Shared by tests/run, sandbox/run, bench/run and .ci/run (source it from the repository root).

# A virtualenv at $1 holding exactly the pinned requirements file $2: created on first
# use, reinstalled whenever that file changes.
ferry_venv() {
  local venv="$1" requirements="$2"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! cmp -s "$requirements" "$venv/.ferry-requirements" 2>/dev/null; then
    echo "installing $requirements into $venv ..." >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.ferry-requirements"
  fi
}

# The repository's Python environment (.venv): the AWS emulator and the test tools.
ferry_python_env() {
  ferry_venv "$PWD/.venv" tests/requirements.txt
  export PATH="$PWD/.venv/bin:$PATH" FERRY_PYTHON="$PWD/.venv/bin/python"
}

# The release builds of the four functions and the CLI, as Lambda and operators run them;
# exports FERRY_BIN_DIR, where they are.
ferry_release_binaries() {
  echo "building Ferry's release binaries (the first build takes a few minutes) ..." >&2
  cargo build --release --locked -p ferry-deploy -p ferry-verify -p ferry-rollback -p ferry-approve -p ferry-cli
  export FERRY_BIN_DIR="$CARGO_TARGET_DIR/release"
}

# Debian's Chromium, for the browser test of `ferry report`'s page: installed when missing
# (as root, or through sudo); elsewhere, say how to get it.
ferry_chromium() {
  command -v "${FERRY_CHROMIUM:-chromium}" >/dev/null 2>&1 && return
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=$(command -v sudo || true)
  if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" != 0 ] && [ -z "$sudo" ]; }; then
    echo "the browser test needs Chromium: install it, or set FERRY_CHROMIUM to its path" >&2
    return 1
  fi
  echo "installing Debian's chromium for the browser test ..." >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
