#!/usr/bin/env bash
# Every test, on a fresh machine with Rust stable and Python 3 (with pip): the Rust workspace, then
# the Python package. The package's wheel is built with maturin and installed into a virtual
# environment outside the repository (reused when present), and its tests (crates/imix-py/tests)
# run against the release build of the imix command. Stops, non-zero, at the first failing step.
#
# Environment: IMIX_CACHE (model cache, default ~/.cache/inversed-mixup; the environment goes in
# its pyenv/ folder unless IMIX_PYENV names another), PYTHON (the interpreter that creates the
# environment, default python3), PYTEST_ARGS (extra pytest arguments, e.g. "-k shard").
# The explorer's browser test needs Debian's chromium and chromium-driver: installed when missing
# (as root), else the script stops saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

# The explorer's browser test needs Debian's chromium and its driver: installed (as root) in the
# background while the Rust build runs, and waited for before that test.
browser_log="$(mktemp)"
browser_pid=""
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium and chromium-driver in the background"
        ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver ) \
            >"$browser_log" 2>&1 &
        browser_pid=$!
    fi
fi
wait_browser() {
    if [ -n "$browser_pid" ] && ! wait "$browser_pid"; then
        cat "$browser_log" >&2
        echo "error: installing chromium and chromium-driver failed (above)" >&2
        exit 1
    fi
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        echo "error: the browser test needs chromium and chromedriver: apt-get install chromium chromium-driver" >&2
        exit 1
    fi
}

echo "== Python environment"
venv="${IMIX_PYENV:-${IMIX_CACHE:-$HOME/.cache/inversed-mixup}/pyenv}"
python="${PYTHON:-python3}"
if ! "$venv/bin/python" -c "import sys; assert sys.version_info >= (3, 9)" 2>/dev/null; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    # Without ensurepip (Debian's python3 without python3-venv), create it bare and let the
    # system pip install pip into it.
    "$python" -m venv "$venv" || { rm -rf "$venv" && "$python" -m venv --without-pip "$venv" && "$python" -m pip --python "$venv/bin/python" install --quiet pip; }
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check -r crates/imix-py/requirements-test.txt

echo "== zig as the C compiler and linker (glibc 2.17: the wheel is manylinux2014)"
# One build for the tests, the imix command and the wheel: cargo fingerprints the linker and the C
# compiler, so all three are linked by zig (the ziglang wheel) through scripts/zig. Elsewhere than
# x86_64 Linux the host's tools build everything and the wheel carries the host's glibc tag.
compat=()
if [ "$(uname -sm)" = "Linux x86_64" ]; then
    export IMIX_MATURIN="$venv/bin/maturin"
    export CARGO_ZIGBUILD_ZIG_COMMAND="$py" CARGO_ZIGBUILD_ZIG_COMMAND_ARGS="-m ziglang"
    CARGO_ZIGBUILD_ZIG_VERSION="$("$py" -m ziglang version)"
    export CARGO_ZIGBUILD_ZIG_VERSION
    export CC_x86_64_unknown_linux_gnu="$PWD/scripts/zig/cc" CXX_x86_64_unknown_linux_gnu="$PWD/scripts/zig/c++"
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER="$PWD/scripts/zig/cc"
    compat=(--compatibility manylinux2014)
fi

# One build profile (release) for the tests, the imix command and the wheel. The tests' build
# makes target/release/imix as well.
echo "== cargo test --workspace --release"
cargo test --workspace --release

echo "== gradient tests on the narrower instruction-set paths (the run above used the widest)"
# IMIX_SIMD caps the kernels' path; on a CPU without a path the cap falls back to what it has.
# --workspace (not -p) reuses the build above instead of compiling another feature set.
for cap in avx2 scalar; do
    IMIX_SIMD=$cap cargo test --workspace --release -q --test grad --test lora
done

export IMIX_BIN="$PWD/target/release/imix"

echo "== the inversed_mixup wheel"
wheels="target/wheels/test"
rm -rf "$wheels"
# The same target folder, linker and features as the tests' build: only pyo3 and the bindings compile.
PATH="$(dirname "$py"):$PATH" "$py" -m maturin build --release "${compat[@]}" \
    -m crates/imix-py/Cargo.toml -o "$wheels" --interpreter "$py"
if [ ${#compat[@]} -gt 0 ]; then
    "$py" -m auditwheel show "$wheels"/inversed_mixup-*.whl | tr '\n' ' ' | grep -q 'manylinux_2_17_x86_64' \
        || { echo "error: the wheel is not manylinux2014 (auditwheel show)" >&2; exit 1; }
fi
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/inversed_mixup-*.whl

echo "== pytest crates/imix-py/tests"
# From the tests' folder, so that `import inversed_mixup` finds the installed wheel, not sources.
root="$PWD"
cd crates/imix-py/tests
# shellcheck disable=SC2086
"$py" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} .

echo "== the explorer page (imix serve) in headless Chromium"
wait_browser
cd "$root/crates/imix-serve/tests"
# Screenshots of each tab go to target/test-output/explorer.
"$py" -m pytest -q -p no:cacheprovider .
