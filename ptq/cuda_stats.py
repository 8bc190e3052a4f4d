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

import importlib.util
import threading
from typing import Any

import numpy as np

from ptq.errors import InternalError

_F32_MAX = float(np.finfo(np.float32).max)
_TYPESTR = {"tensor(float)": "<f4", "tensor(float16)": "<f2", "tensor(double)": "<f8",
            "tensor(bfloat16)": None}


_preload: threading.Thread | None = None
_preload_lock = threading.Lock()


def installed() -> bool:
    """torch is importable (without importing it: that takes ~2.6 s on the H200 machine)."""
    return importlib.util.find_spec("torch") is not None


def preload() -> None:
    """Import torch and initialise CUDA in the background, while the caller loads data and
    ONNX Runtime creates its CUDA session; `unavailable` waits for it."""
    global _preload
    with _preload_lock:
        if _preload is None and installed():
            _preload = threading.Thread(target=_import_torch, name="ptq-torch-import", daemon=True)
            _preload.start()


def _import_torch() -> None:
    try:
        import torch
        torch.cuda.is_available()
    except Exception:  # unavailable() imports again and says why
        pass


def unavailable() -> str | None:
    """Why the GPU statistics cannot run here (None: they can)."""
    if _preload is not None:
        _preload.join()
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
    """One activation on the GPU, with the numpy attributes the accumulators read.

    `bin_counts` launches the counting kernels and returns zeros: the counts stay on the
    device until `DeviceOutputs.add_pending` brings every tensor's back in one transfer and
    adds them to the histogram they were counted for (a sync per tensor cost 2 s of 12 s
    for 2048 images on an H200). The caller checks that the totals add up.
    """

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        self.size = int(tensor.numel())
        self.shape = tuple(tensor.shape)
        self.ndim = tensor.ndim
        self.pending: Any = None                     # counts on the device, not yet added
        self.pending_sums: tuple[Any, np.ndarray] | None = None  # (device sums, host target)

    def minmax(self) -> tuple[float, float]:
        """(min, max) of this tensor alone: one host sync (`DeviceOutputs.minmax` takes a
        whole batch's with one)."""
        import torch

        lo, hi = torch.aminmax(self.tensor.reshape(-1))
        return float(lo), float(hi)

    def channel_sums(self) -> Any:
        """float64 sums over every axis but 1, on the device (the sum casts each value to
        float64 as it reads it: no float64 copy of the tensor)."""
        import torch

        axes = [0, *range(2, self.ndim)]
        return torch.sum(self.tensor, dim=axes, dtype=torch.float64)

    def add_channel_sums(self, target: np.ndarray) -> None:
        """Deferred like the counts: `DeviceOutputs.add_pending` adds them to `target`."""
        if self.ndim < 2 or len(target) != self.shape[1]:
            raise InternalError(f"{len(target)} channel sums for a tensor of shape {self.shape}")
        self.pending_sums = (self.channel_sums(), target)

    def counts(self, bin_width: float, num_bins: int) -> Any:
        """ptq.kernels.bin_counts on the device (a device tensor): same index, same fold."""
        import torch

        x = self.tensor.reshape(-1)
        inv = 1.0 / bin_width
        if inv >= _F32_MAX:  # as the host: the float32 product would overflow
            idx = (x.double().abs() * inv).long()
        else:
            # A Python float scalar is cast to float32 for a float32 tensor: the product is
            # float32 x float32 as on the host (the value is already a float32, so exactly).
            # (A 0-d device tensor instead would cost a host-to-device copy per tensor.)
            idx = (x.float().abs() * float(np.float32(inv))).long()
        idx.clamp_(max=num_bins - 1)
        return torch.bincount(idx, minlength=num_bins)

    def bin_counts(self, bin_width: float, num_bins: int) -> np.ndarray:
        self.pending = self.counts(bin_width, num_bins)
        return np.zeros(num_bins, np.int64)


class DeviceOutputs:
    """Runs an ORT session with IOBinding: host inputs in, every output left on the GPU."""

    def __init__(self, session: Any, names: list[str], device_id: int | None = 0) -> None:
        """device_id None: outputs on the host, viewed by torch on the CPU (for checks on
        machines without a GPU; same arithmetic, nothing gained)."""
        import torch

        self.session, self.names, self.device_id = session, names, device_id
        self.device = torch.device("cpu") if device_id is None else torch.device("cuda", device_id)
        self._alive: list[Any] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, DeviceTensor]:
        import torch

        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.names:
            if self.device_id is None:
                binding.bind_output(name, "cpu")
            else:
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
            if self.device_id is None:
                tensor = torch.from_numpy(value.numpy())
            elif int(np.prod(shape)) == 0:
                tensor = torch.empty(shape, device=self.device)
            else:
                tensor = torch.as_tensor(_Interface(value.data_ptr(), shape, typestr),
                                         device=self.device)
            out[name] = DeviceTensor(tensor)
        return out

    def upload(self, array: np.ndarray) -> DeviceTensor:
        """A host array (a graph input) copied to the device, to be reduced there too."""
        import torch

        return DeviceTensor(torch.from_numpy(np.ascontiguousarray(array)).to(self.device))

    @staticmethod
    def add_pending(values: dict[str, DeviceTensor], histograms: dict[str, Any]) -> None:
        """Every tensor's deferred counts and channel sums in one transfer, added where they
        belong (the sums travel as the int64 bit patterns of their float64 values)."""
        import torch

        parts, sinks = [], []
        for name, value in values.items():
            if value.pending is not None:
                counts = histograms[name].counts
                if len(counts) != value.pending.numel():
                    raise InternalError(f"the histogram of '{name}' changed size after counting")
                parts.append(value.pending)
                sinks.append((counts, None))
            if value.pending_sums is not None:
                sums, target = value.pending_sums
                parts.append(sums.view(torch.int64))
                sinks.append((target, np.float64))
            value.pending = value.pending_sums = None
        if not parts:
            return
        flat = torch.cat(parts).cpu().numpy()
        start = 0
        for sink, dtype in sinks:
            chunk = flat[start:start + len(sink)]
            sink += chunk if dtype is None else chunk.view(dtype)
            start += len(sink)

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
