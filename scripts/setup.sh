#!/usr/bin/env bash
# Set up everything the pAirZero testbed needs on Debian bookworm, idempotently:
#   1. Debian packages: GNU Radio 3.10.5, UHD 4.3 (python3-uhd, uhd-host), docker-compose,
#      python3-venv and python3-pip (Debian's python3 has no ensurepip without them);
#   2. a virtual environment (.venv) made from /usr/bin/python3 with --system-site-packages,
#      so that GNU Radio's Python bindings are visible;
#   3. the project and its Python dependencies (extras dev and hf), pinned by constraints.txt.
# The real model and task (SmolLM2-135M, movie reviews) are a separate step: make real-data.
# A second run checks and returns in about a second: apt is skipped when the packages are
# installed, pip when pyproject.toml and constraints.txt are unchanged since the last install.
# Environment: PAIRZERO_VENV (default .venv).
#
# --radios (on a host with a USRP, once): also fetch the UHD images the radios load: the B2xx
# firmware and FPGA images (loaded at every power-up) and the X3xx FPGA images (to update its
# flash with uhd_image_loader), with UHD's uhd_images_downloader into UHD_IMAGES_DIR or
# /usr/share/uhd/images (root needed there). It downloads from files.ettus.com: it needs the
# internet, so CI and `make test` never run it. `pairzero doctor` says whether they are there.
set -euo pipefail
cd "$(dirname "$0")/.."

RADIOS=0
for arg in "$@"; do
    case "$arg" in
        --radios) RADIOS=1 ;;
        *) echo "usage: scripts/setup.sh [--radios]" >&2; exit 2 ;;
    esac
done

APT_PACKAGES=(gnuradio python3-uhd uhd-host docker-compose python3-venv python3-pip)
VENV=${PAIRZERO_VENV:-.venv}
t0=$(date +%s)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    echo "[setup] installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV (from /usr/bin/python3, --system-site-packages)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.pairzero-stamp"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "[setup] installing pairzero and its dependencies into $VENV (pinned by constraints.txt)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,hf]' \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    "$VENV/bin/python" -c "from gnuradio import gr; import torch, transformers, zmq, dp_accounting, datasets, gguf" || {
        echo "[setup] the environment is incomplete: GNU Radio, torch, transformers, pyzmq, dp-accounting, datasets or gguf does not import" >&2
        exit 1
    }
    echo "$want" >"$stamp"
fi
if ((RADIOS)); then
    # Both regexes must match a target: the default B2xx firmware/FPGA and X3xx FPGA images.
    SUDO=
    if [ -z "${UHD_IMAGES_DIR:-}" ] && [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    echo "[setup] fetching the UHD images for B2xx and X3xx radios (needs the internet)"
    $SUDO env ${UHD_IMAGES_DIR:+UHD_IMAGES_DIR="$UHD_IMAGES_DIR"} \
        uhd_images_downloader -t '(b2xx|x3xx)' -t '(fpga|fw)_default' || {
        echo "[setup] uhd_images_downloader failed: is files.ettus.com reachable from this host?" >&2
        exit 1
    }
fi
echo "[setup] ready in $(($(date +%s) - t0)) s ($VENV)"
