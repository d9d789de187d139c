#!/usr/bin/env bash
# Installs everything qft needs on a fresh Debian 12 machine (the dev boxes and CI), and nothing that is
# already there. Idempotent: the second run takes a second.
#   - Debian packages: compilers (clang for the libFuzzer harnesses), CMake/Ninja, ccache, OpenMPI, HDF5,
#     yaml-cpp, spdlog, fmt, GoogleTest, nlohmann-json, PCRE2; Chromium (headless, renders the run report in a
#     test: ~350 MB, ~20 s to install).
#   - PyPI: torch==2.11.0 (its wheel carries libtorch's C++ headers, libraries and TorchConfig.cmake, the same
#     libtorch the GPU image has), and the reference implementation used by tests: transformers, peft,
#     tokenizers, safetensors, pytest; tensorboard (its event reader checks qft's event files), pillow, pyyaml.
set -euo pipefail

APT_PACKAGES=(build-essential cmake ninja-build ccache pkg-config xz-utils
              libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
              libgtest-dev nlohmann-json3-dev libpcre2-dev chromium clang)
PIP_PACKAGES=("torch==2.11.0" "transformers>=5.0,<6" "peft>=0.18" "tokenizers==0.23.*" "safetensors" "numpy"
              "h5py" "pytest" "tensorboard" "pillow" "pyyaml")

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
need = {"torch": "2.11.0"}
for pkg in ["transformers", "peft", "tokenizers", "safetensors", "numpy", "h5py", "pytest", "tensorboard", "pillow",
            "pyyaml"]:
    m.version(pkg)
if not m.version("torch").startswith(need["torch"]):
    sys.exit(1)
if int(m.version("transformers").split(".")[0]) < 5:
    sys.exit(1)
# The split regex's extra Unicode ranges match the Oniguruma tables of tokenizers 0.23 (src/text/gen_unicode_tables.py).
if not m.version("tokenizers").startswith("0.23."):
    sys.exit(1)
PY
then
  echo "setup: installing Python packages: ${PIP_PACKAGES[*]}"
  "$PYTHON" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi
echo "setup: all dependencies present"
