"""The TensorRT backend's unavailable paths, for real: no tensorrt here, and no CUDA device.

Building and running engines cannot be tested on these machines (see ptq/backends/trt.py)."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest

from ptq.errors import BackendUnavailable
from ptq.sensitivity import EngineSpec
from ptq.sensitivity.variants import Backend


def _tensorrt_installed() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_tensorrt_installed(), reason="tensorrt is installed; this covers machines without")
def test_missing_tensorrt_raises_with_the_install_hint():
    from ptq.backends.trt import TrtRunner, require_tensorrt

    with pytest.raises(BackendUnavailable) as info:
        require_tensorrt()
    assert 'pip install "ptq[tensorrt]"' in str(info.value)
    with pytest.raises(BackendUnavailable):
        EngineSpec(Backend.TRT).check()
    with pytest.raises(BackendUnavailable):
        TrtRunner(b"not built before __enter__").__enter__()


def test_no_gpu_is_reported_even_when_tensorrt_imports(monkeypatch):
    """torch's CUDA check is real (this machine has no GPU); only the tensorrt package is a
    stand-in module, because the real one cannot be installed here."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from ptq.backends.trt import require_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible"):
        require_tensorrt()


def test_the_ort_path_never_imports_the_trt_backend():
    code = ("import sys, ptq.sensitivity, ptq.cli.sensitivity; "
            "ptq.sensitivity.EngineSpec().factory(); "
            "print(sorted(m for m in sys.modules if 'tensorrt' in m or m == 'ptq.backends.trt'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
