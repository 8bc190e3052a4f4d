"""Statistics on the GPU: activations stay where ONNX Runtime's CUDA EP wrote them.

    host batch --IOBinding--> CUDA EP run --outputs left in device memory--> torch views
    (zero copy, __cuda_array_interface__) --aminmax--> host (one transfer a batch)
    --|x|*(1/w) -> int32, index_add_ into LANES copies; float64 channel sums--> device
    --> host, one transfer a batch: the histogram counts and channel sums, nothing else

The arithmetic is the host kernel's (ptq/kernels.py): the bin index is floor(float32(|x|) *
float32(1/w)) truncated like a C cast, so counts equal the host's bin for bin on the same
activations; min/max are exact reductions. torch is imported only here, only when the CUDA
path runs: it is never needed on CPU machines.
"""
from __future__ import annotations

import contextlib
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

    `bin_counts` launches the counting kernels and returns zeros, and `add_channel_sums`
    the sums: both stay on the device until `DeviceOutputs.add_pending` brings every
    tensor's back in one transfer and adds them where they belong (a sync per tensor cost
    2 s of 12 s for 2048 images on an H200). The caller checks that the totals add up.
    """

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        self.size = int(tensor.numel())
        self.shape = tuple(tensor.shape)
        self.ndim = tensor.ndim
        self.pending: Any = None                     # lane counts on the device, not yet added
        self.pending_bins = 0                        # ... for this many bins
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
        return fold_lanes([self.lane_counts(bin_width, num_bins)], num_bins)[0]

    def lane_counts(self, bin_width: float, num_bins: int) -> Any:
        """The counts of `counts` before the fold: LANES rows of num_bins, value i counted
        in row i % LANES (see LANES)."""
        import torch

        x = self.tensor.reshape(-1)
        inv = 1.0 / bin_width
        if inv >= _F32_MAX:  # as the host: the float32 product would overflow
            product = x.double().abs().mul_(inv)
        else:
            # A Python float scalar is cast to float32 for a float32 tensor: the product is
            # float32 x float32 as on the host (the value is already a float32, so exactly).
            # (A 0-d device tensor instead would cost a host-to-device copy per tensor.)
            product = x.float().abs().mul_(float(np.float32(inv)))
        # the top edge (and anything past it) in the last bin; clamped before the int32 cast,
        # which products past 2^31 would overflow (truncation then gives the same bin)
        idx = product.clamp_(max=num_bins - 1).to(torch.int32)
        whole = idx.numel() // LANES * LANES
        if whole:
            idx[:whole].view(-1, LANES).add_(_lane_offsets(idx.device, num_bins))
        lanes = torch.zeros(LANES * num_bins, dtype=torch.int64, device=idx.device)
        return lanes.index_add_(0, idx, _ones(idx.device).expand(idx.numel()))

    def bin_counts(self, bin_width: float, num_bins: int) -> np.ndarray:
        self.pending = self.lane_counts(bin_width, num_bins)
        self.pending_bins = num_bins
        return np.zeros(num_bins, np.int64)


# Value i is counted into copy i % LANES of the histogram, and the copies are summed once a
# batch: with one copy the atomic adds of equal values (the zeros after a ReLU, the first
# bins) queue on one counter. H200, EfficientNet-Lite0, a batch of 262M values (19% zeros):
# index_add_ into one copy 68 ms; torch.bincount 29 ms, the CPU blocked throughout (it reads
# the index's min and max back to the host: two syncs a tensor); counting and channel sums
# into 32 copies 15.5 ms, from 35.5 ms with bincount (bench/gpu_calibrate.py --breakdown).
LANES = 32
_cache: dict[tuple, Any] = {}


def _lane_offsets(device: Any, stride: int) -> Any:
    """Row offsets 0, stride, 2 * stride, ... (int32), made once per device and stride."""
    import torch

    key = ("lanes", device, stride, LANES)
    if key not in _cache:
        _cache[key] = torch.arange(LANES, dtype=torch.int32, device=device) * stride
    return _cache[key]


def _ones(device: Any) -> Any:
    """A 0-d int64 one, expanded (no copy) to the length of each index."""
    import torch

    key = ("one", device)
    if key not in _cache:
        _cache[key] = torch.ones((), dtype=torch.int64, device=device)
    return _cache[key]


def fold_lanes(lanes: list[Any], num_bins: int) -> list[Any]:
    """Each `lane_counts` (all for num_bins) summed over its rows, as ptq.kernels.bin_counts
    counts: one stack and one sum for all of them."""
    import torch

    return list(torch.stack(lanes).view(len(lanes), LANES, num_bins).sum(dim=1).unbind(0))


def _fold_by_bins(tensors: list[DeviceTensor]) -> list[Any]:
    """`fold_lanes` of each tensor's pending lane counts, in order (one stack per bin count)."""
    out: list[Any] = [None] * len(tensors)
    for bins in {t.pending_bins for t in tensors}:
        which = [i for i, t in enumerate(tensors) if t.pending_bins == bins]
        for i, row in zip(which, fold_lanes([tensors[i].pending for i in which], bins)):
            out[i] = row
    return out


class DeviceOutputs:
    """Runs an ORT session with IOBinding: host inputs in, every output left on the GPU."""

    def __init__(self, session: Any, names: list[str], device_id: int | None = 0) -> None:
        """device_id None: outputs on the host, viewed by torch on the CPU (for checks on
        machines without a GPU; same arithmetic, nothing gained)."""
        import torch

        self.session, self.names, self.device_id = session, names, device_id
        self.device = torch.device("cpu") if device_id is None else torch.device("cuda", device_id)
        self.stream = None if device_id is None else torch.cuda.Stream(device=self.device)
        self._alive: list[Any] = []

    def statistics_stream(self) -> Any:
        """The context the statistics kernels run in: a stream of their own, so that the
        GPU reduces batch k while ONNX Runtime computes batch k + 1 on its stream."""
        import torch

        return contextlib.nullcontext() if self.stream is None else torch.cuda.stream(self.stream)

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
        # ORT owns the memory the torch views read: this batch's and the previous one's, whose
        # statistics may still be running on the statistics stream, stay alive
        self._alive = [*self._alive[-1:], values]
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

        counted = [n for n, v in values.items() if v.pending is not None]
        folded = dict(zip(counted, _fold_by_bins([values[n] for n in counted])))
        parts, sinks = [], []
        for name, value in values.items():
            if name in folded:
                counts = histograms[name].counts
                if len(counts) != value.pending_bins:
                    raise InternalError(f"the histogram of '{name}' changed size after counting")
                parts.append(folded[name])
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
        # one reduction a tensor and one stack for all (not three launches a tensor)
        ends = [e for n in names for e in torch.aminmax(values[n].tensor.reshape(-1))]
        if len({e.dtype for e in ends}) > 1:
            ends = [e.double() for e in ends]
        rows = torch.stack(ends).double().view(-1, 2).cpu().numpy()
        out: dict[str, tuple[float, float] | None] = {n: None for n in values}
        out.update((n, (float(lo), float(hi))) for n, (lo, hi) in zip(names, rows))
        return out
