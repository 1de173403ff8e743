"""A pure-Python install (GTL_KERNELS_BUILD=none) works on the torch backend and explains what is missing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent(
    """
    import sys
    # an editable install of the source tree in this environment must not serve the extension to this copy
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
    import torch, gtl_kernels
    assert gtl_kernels.__file__.startswith(TARGET), gtl_kernels.__file__
    infos = gtl_kernels.available_backends()
    assert infos["torch"].available
    assert not infos["cpu"].available and "_C" in infos["cpu"].reason, infos["cpu"].reason
    x = torch.randn(4, 100)
    assert gtl_kernels.sample(x, seeds=1).shape == (4,)
    try:
        gtl_kernels.sample(x, seeds=1, backend="cpu")
    except RuntimeError as e:
        assert "backend 'cpu' is not available" in str(e), e
    else:
        raise AssertionError("an unbuilt backend ran")
    print("ok", infos["cpu"].reason)
    """
)


@pytest.mark.slow
def test_pure_python_install(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, GTL_KERNELS_BUILD="none", PIP_NO_INPUT="1")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--target", str(target), str(ROOT)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert not list(target.glob("gtl_kernels/_C*.so")), "GTL_KERNELS_BUILD=none built an extension"
    env = dict(os.environ, PYTHONPATH=str(target), GTL_KERNELS_BACKEND="")
    result = subprocess.run(
        [sys.executable, "-c", f"TARGET = {str(target)!r}\n" + CHECK], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
