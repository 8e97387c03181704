"""The environment that scripts/setup.sh builds: GNU Radio, torch, transformers and friends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_gnu_radio_3_10_is_importable() -> None:
    from gnuradio import blocks, channels, digital, gr, zeromq  # noqa: F401

    assert gr.version().startswith("3.10")


def test_torch_is_the_cpu_build_and_numpy_is_1x() -> None:
    import numpy
    import torch

    assert torch.__version__.startswith("2.13.0")
    assert torch.version.cuda is None, "a CUDA build of torch was installed (GBs); pin the CPU wheel"
    assert numpy.__version__.startswith("1."), "numpy 2 breaks GNU Radio 3.10.5's bindings"


def test_ml_and_network_stack_importable() -> None:
    import dp_accounting  # noqa: F401
    import matplotlib  # noqa: F401
    import tokenizers  # noqa: F401
    import transformers
    import yaml  # noqa: F401
    import zmq

    assert transformers.__version__.startswith("5.")
    assert zmq.has("curve"), "libzmq without CurveZMQ: node authentication cannot work"


def test_python_is_debians_with_system_site_packages() -> None:
    # GNU Radio's bindings are built for /usr/bin/python3; the venv must come from it.
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if not cfg.is_file():
        pytest.skip("not running inside a virtual environment")
    text = cfg.read_text()
    assert "include-system-site-packages = true" in text
    assert "/usr/bin" in text


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("PAIRZERO_VENV") is None, reason="run through `make test`")
def test_setup_second_run_is_fast_and_installs_nothing() -> None:
    res = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "installing" not in res.stdout, res.stdout
    assert "ready in" in res.stdout


@pytest.mark.e2e
def test_docker_compose_file_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh installs it)")
    for profile in ("loopback", "radio"):
        res = subprocess.run(
            [exe, "--profile", profile, "config"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
        assert "network_mode: host" in res.stdout
    radio = subprocess.run(
        [exe, "--profile", "radio", "config", "--services"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    # one edge service per node of the config the radio profile runs
    from pairzero.config import load_config

    nodes = load_config(REPO / "configs" / "radio.yaml").nodes.count
    assert "ap-radio" in radio and sum(s.startswith("edge-radio-") for s in radio) == nodes


@pytest.mark.e2e  # runs a process
def test_compose_radio_profile_follows_uhd_usb_guidance_and_the_worked_example() -> None:
    # A B210 re-enumerates after its firmware loads: the bus is mounted as a volume (not a
    # device node given at start), USB character devices (major 189) are allowed by a cgroup
    # rule, and the services run the worked example's last steps with its files mounted.
    import yaml

    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh installs it)")
    res = subprocess.run([exe, "--profile", "radio", "config"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    services = yaml.safe_load(res.stdout)["services"]
    radio = {k: v for k, v in services.items() if k == "ap-radio" or k.startswith("edge-radio-")}
    assert radio
    for name, svc in radio.items():
        mounts = {v.split(":")[1]: v for v in svc["volumes"]}
        assert "devices" not in svc, name
        assert mounts["/dev/bus/usb"].startswith("/dev/bus/usb:"), name
        assert "c 189:* rmw" in svc.get("device_cgroup_rules", []) or svc.get("privileged"), name
        for f in ("lab.yaml", "calibration.yaml", "keys"):
            assert mounts[f"/opt/pairzero/{f}"].endswith(":ro"), (name, f)
        assert svc["command"][svc["command"].index("--config") + 1] == "lab.yaml", name
        assert svc["network_mode"] == "host"
    # the files the worked example makes under those names
    page = (REPO / "docs" / "running_on_usrps.md").read_text()
    assert "> lab.yaml" in page and "--output calibration.yaml" in page
