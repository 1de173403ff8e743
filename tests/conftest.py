"""One suite for every backend (KERNEL_SPEC §7).

Each test that takes the ``backend`` fixture runs once per available backend, on the device that backend runs on:
``torch`` and ``cpu`` on the CPU (and ``torch`` on CUDA when present), ``triton`` on CUDA or, without a GPU, under the
Triton interpreter on the CPU, ``cuda`` on CUDA. ``GTL_TEST_BACKENDS=torch,cpu`` restricts the run.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before any Triton kernel is decorated
    os.environ.setdefault("TRITON_INTERPRET", "1")

import gtl_kernels  # noqa: E402


class Backend:
    """A backend under test and the device its inputs live on."""

    def __init__(self, name: str, device: str):
        self.name, self.device = name, torch.device(device)
        # The Triton interpreter runs programs one after another on the CPU: tests shrink their shapes for it.
        self.interpreted = name == "triton" and self.device.type == "cpu"

    def __repr__(self):
        return f"{self.name}-{self.device.type}"


def _backends_under_test():
    wanted = os.environ.get("GTL_TEST_BACKENDS")
    wanted = set(wanted.split(",")) if wanted else None
    cases = []
    for name, info in gtl_kernels.available_backends().items():
        if not info.available or (wanted and name not in wanted):
            continue
        types = info.device_types or ("cpu", "cuda")
        for device in types:
            if device == "cuda" and not torch.cuda.is_available():
                continue
            if name == "triton" and device == "cpu" and torch.cuda.is_available():
                continue  # the interpreter is only for machines without a GPU
            cases.append(Backend(name, device))
    return cases


BACKENDS = _backends_under_test()


@pytest.fixture(params=BACKENDS, ids=repr)
def backend(request) -> Backend:
    return request.param


@pytest.fixture(autouse=True)
def _poison_uninitialized_memory():
    """Every ``torch.empty`` (Python or C++) is filled with NaN / the largest integer, so an output element a kernel
    forgets to write cannot pass as a plausible value."""
    prev = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


def pytest_report_header(config):
    infos = gtl_kernels.available_backends().values()
    summary = ", ".join(f"{i.name}={'yes' if i.available else 'no'}" for i in infos)
    lines = [f"gtl_kernels backends: {summary}"]
    lines += [f"  {i.name}: {i.reason}" for i in infos if not i.available]
    return lines
