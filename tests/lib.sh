# Shared by tests/run and sandbox/run (source it from the repository root).

# The repository's Python environment (.venv): the AWS emulator and the test tools, from
# tests/requirements.txt, installed on first use and whenever that file changes.
ferry_python_env() {
  local venv="$PWD/.venv" stamp="$PWD/.venv/.ferry-requirements"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! cmp -s tests/requirements.txt "$stamp" 2>/dev/null; then
    echo "installing the Python dependencies (moto, pytest, ...) into .venv ..." >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    cp tests/requirements.txt "$stamp"
  fi
  export PATH="$venv/bin:$PATH" FERRY_PYTHON="$venv/bin/python"
}

# The release builds of the three functions and the CLI, as Lambda and operators run them;
# exports FERRY_BIN_DIR, where they are.
ferry_release_binaries() {
  echo "building Ferry's release binaries (the first build takes a few minutes) ..." >&2
  cargo build --release --locked -p ferry-deploy -p ferry-verify -p ferry-rollback -p ferry-cli
  export FERRY_BIN_DIR="$CARGO_TARGET_DIR/release"
}
