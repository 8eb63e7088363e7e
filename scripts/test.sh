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

# One build profile (release) for the tests, the imix command and the wheel. The tests' build
# makes target/release/imix as well; the wheel's zig-linked build has its own target folder.
echo "== cargo test --workspace --release"
cargo test --workspace --release

echo "== gradient tests on the narrower instruction-set paths (the run above used the widest)"
# IMIX_SIMD caps the kernels' path; on a CPU without a path the cap falls back to what it has.
# --workspace (not -p) reuses the build above instead of compiling another feature set.
for cap in avx2 scalar; do
    IMIX_SIMD=$cap cargo test --workspace --release -q --test grad --test lora
done

export IMIX_BIN="$PWD/target/release/imix"

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

echo "== the inversed_mixup wheel (manylinux2014: glibc 2.17 and newer)"
wheels="target/wheels/test"
rm -rf "$wheels"
# Linked by zig (the ziglang wheel) against glibc 2.17's symbols, so the wheel installs on any
# Linux from 2014 on, not only on this machine's glibc. Zig's C compiler changes the C parts'
# fingerprints, so this build keeps its own target folder: neither build undoes the other's.
PATH="$(dirname "$py"):$PATH" CARGO_TARGET_DIR=target/wheel-zig "$py" -m maturin build --release \
    --zig --compatibility manylinux2014 -m crates/imix-py/Cargo.toml -o "$wheels" --interpreter "$py"
"$py" -m auditwheel show "$wheels"/inversed_mixup-*.whl | tr '\n' ' ' | grep -q 'manylinux_2_17_x86_64' \
    || { echo "error: the wheel is not manylinux2014 (auditwheel show)" >&2; exit 1; }
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/inversed_mixup-*.whl

echo "== pytest crates/imix-py/tests"
# From the tests' folder, so that `import inversed_mixup` finds the installed wheel, not sources.
root="$PWD"
cd crates/imix-py/tests
# shellcheck disable=SC2086
"$py" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} .

echo "== the explorer page (imix serve) in headless Chromium"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium and chromium-driver"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "error: the browser test needs chromium and chromedriver: apt-get install chromium chromium-driver" >&2
        exit 1
    fi
fi
cd "$root/crates/imix-serve/tests"
# Screenshots of each tab go to target/test-output/explorer.
"$py" -m pytest -q -p no:cacheprovider .
