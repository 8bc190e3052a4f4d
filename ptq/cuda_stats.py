"""Statistics on the GPU: activations stay where ONNX Runtime's CUDA EP wrote them.

    host batch --IOBinding--> CUDA EP run --outputs left in device memory--> torch views
    (zero copy, __cuda_array_interface__) --aminmax, |x|*(1/w) -> int, bincount--> counts
    --> host: two floats per tensor and the histogram counts, nothing else

The arithmetic is the host kernel's (ptq/kernels.py): the bin index is floor(float32(|x|) *
float32(1/w)) truncated like a C cast, so counts equal the host's bin for bin on the same
activations; min/max are exact reductions. torch is imported only here, only when the CUDA
path runs: it is never needed on CPU machines.
"""
from __future__ import annotations

from typing import Any

import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)
_TYPESTR = {"tensor(float)": "<f4", "tensor(float16)": "<f2", "tensor(double)": "<f8",
            "tensor(bfloat16)": None}


def unavailable() -> str | None:
    """Why the GPU statistics cannot run here (None: they can)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (a CPU-only torch build?)"
    return None


class _Interface:
    """Just enough of the CUDA array interface for torch.as_tensor to wrap ORT's memory."""

    def __init__(self, ptr: int, shape: tuple[int, ...], typestr: str) -> None:
        # stream None: ORT has synchronised its stream when Run returns.
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape,
                                         "typestr": typestr, "version": 3, "strides": None,
                                         "stream": None}


class DeviceTensor:
    """One activation on the GPU, with the numpy attributes the accumulators read."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        self.size = int(tensor.numel())
        self.shape = tuple(tensor.shape)
        self.ndim = tensor.ndim

    def bin_counts(self, bin_width: float, num_bins: int) -> np.ndarray:
        """ptq.kernels.bin_counts on the device: same index, same top-edge fold."""
        import torch

        x = self.tensor.reshape(-1)
        inv = 1.0 / bin_width
        if inv >= _F32_MAX:  # as the host: the float32 product would overflow
            idx = (x.double().abs() * inv).long()
        else:
            scale = torch.tensor(np.float32(inv), device=x.device)  # float32 x float32
            idx = (x.float().abs() * scale).long()
        idx.clamp_(max=num_bins - 1)
        return torch.bincount(idx, minlength=num_bins).cpu().numpy()


class DeviceOutputs:
    """Runs an ORT session with IOBinding: host inputs in, every output left on the GPU."""

    def __init__(self, session: Any, names: list[str], device_id: int = 0) -> None:
        import torch

        self.session, self.names, self.device_id = session, names, device_id
        self.device = torch.device("cuda", device_id)
        self._alive: list[Any] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, DeviceTensor]:
        import torch

        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        self._alive = values  # ORT owns the memory the torch views read: keep it until the next run
        out = {}
        for name, value in zip(self.names, values):
            shape = tuple(int(d) for d in value.shape())
            typestr = _TYPESTR.get(value.data_type())
            if typestr is None:
                raise TypeError(f"unsupported activation type {value.data_type()} for '{name}'")
            if int(np.prod(shape)) == 0:
                tensor = torch.empty(shape, device=self.device)
            else:
                tensor = torch.as_tensor(_Interface(value.data_ptr(), shape, typestr),
                                         device=self.device)
            out[name] = DeviceTensor(tensor)
        return out

    @staticmethod
    def minmax(values: dict[str, DeviceTensor]) -> dict[str, tuple[float, float] | None]:
        """Every tensor's (min, max) in one transfer (NaN/Inf come back as they are)."""
        import torch

        names = [n for n, v in values.items() if v.size]
        if not names:
            return {n: None for n in values}
        rows = torch.stack([torch.stack(torch.aminmax(values[n].tensor.reshape(-1))).double()
                            for n in names]).cpu().numpy()
        out: dict[str, tuple[float, float] | None] = {n: None for n in values}
        out.update((n, (float(lo), float(hi))) for n, (lo, hi) in zip(names, rows))
        return out
