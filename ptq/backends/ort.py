"""ONNX Runtime runner (CPU by default; CUDA when the GPU build and a device are present)."""
from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from ptq.errors import ConfigError, InternalError, PtqError, exception_line
from ptq.graph.edit import compatible_ir_version, copy_model, finalize, session_input
from ptq.graph.model import PROTOBUF_LIMIT, TensorInfo, data_dir, load_model, weight_bytes
from ptq.graph.nchwc import Blocked, block_probe, expose_blocked, integer_ops, tensor_shapes

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
log = logging.getLogger(__name__)

# cuDNN picks convolution algorithms by heuristic instead of timing every candidate on the
# first run of each session (EXHAUSTIVE, ORT's default, costs seconds per new session, which
# sensitivity pays once per variant; heuristic choices are also the same from run to run).
# TF32 off: ORT's CUDA EP enables it by default, which rounds FP32 convolutions and GEMMs
# to a 10-bit mantissa (~1e-3 relative) - not the FP32 reference ptq measures against.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}

# Levels at which ONNX Runtime computes exactly the ONNX Q/DQ semantics on a QDQ model. From
# `basic` up, its WeightBiasQuantization transformer turns a float bias fed by a DQ'd conv into
# INT32 (TensorRT keeps it float: EfficientNet-Lite0 logits moved by up to 0.28); with it off,
# `basic` equals `disable` bit for bit. `extended`/`all` fuse QLinear* kernels that corrupt QDQ
# models on CPUs without VNNI (cosine 0.69 instead of 0.97): never used to judge accuracy.
# `nchwc` (ptq's, `OrtRunner._enter_nchwc`) keeps Q/DQ as ONNX ops and runs the convolutions
# in ORT's FP32 NCHWc kernels: EfficientNet-Lite0 QDQ on 20 photos, 2-core CPU, 16.9 ms an
# image against 40.2 at `disable`, cosine to FP32 0.99306 against 0.99298, the same top-1;
# logits differ by up to 2% where a value's float rounding crosses a Q rounding edge.
QDQ_FAITHFUL_LEVELS = ("nchwc", "disable", "basic")
_DISABLED_OPTIMIZERS = {"basic": ["WeightBiasQuantization"]}
_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}


def resolve_providers(spec: str | list[str] | None = "auto") -> list[str]:
    """'auto' = CUDA when available, then CPU; also 'cpu', 'cuda' or full provider names."""
    available = ort.get_available_providers()
    if spec in (None, "auto", ["auto"]):
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for name in (n.strip() for n in names if n.strip()):
        full = _ALIASES.get(name.lower(), name)
        if full not in available:
            raise ConfigError(f"execution provider {name!r} is not available "
                              f"(this onnxruntime has: {', '.join(available)})",
                              hint="pip install 'ptq[gpu]' for CUDA, or use --providers cpu")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class OrtRunner:
    """A lazily created `onnxruntime.InferenceSession` over a path or ModelProto."""

    def __init__(self, model: str | Path | onnx.ModelProto, *, providers: str | list[str] = "auto",
                 optimization: str = "all", threads: int | None = None,
                 session_config: dict[str, str] | None = None,
                 expose_blocked: Iterable[str] = ()) -> None:
        """optimization "nchwc" (CPU EP): see `_enter_nchwc`; `expose_blocked` names graph
        outputs it may give in NCHWc blocks instead (then listed in `self.blocked`)."""
        if optimization not in OPT_LEVELS and optimization != "nchwc":
            raise InternalError(f"unknown optimization level {optimization!r}")
        self._model = model
        self._session_config = dict(session_config or {})
        self._explicit = providers not in (None, "auto", ["auto"])
        self._providers = resolve_providers(providers)
        self._level = optimization
        self._disabled = _DISABLED_OPTIMIZERS.get(optimization, [])
        self._threads = threads
        self._expose = set(expose_blocked)
        self.blocked: dict[str, Blocked] = {}
        self.on_blocks = False  # "nchwc": the session runs ptq.graph.nchwc's rewrite
        self._session: ort.InferenceSession | None = None

    def __enter__(self) -> OrtRunner:
        if self._level == "nchwc":
            self._session = self._enter_nchwc()
        else:
            self._session = self._open(self._model, OPT_LEVELS[self._level])
        self._check_fallback()
        return self

    def _enter_nchwc(self) -> ort.InferenceSession:
        """Level `all` with ORT's Q/DQ fusions off (`session.disable_quant_qdq`: Q and DQ stay
        the ONNX ops, never integer kernels), then ptq.graph.nchwc moves Q/DQ and the other
        elementwise ops onto the NCHWc blocks between convolutions (no reorders around them)
        and that graph runs as it is. Convolutions are ORT's fast FP32 NCHWc kernels; only
        float summation order differs from `disable`. Other EPs run `disable`; a graph that
        still holds an integer kernel runs `disable` too (a warning says so)."""
        model = self._model
        if self._providers[0] != "CPUExecutionProvider":
            return self._open(model, OPT_LEVELS["disable"])
        qdq = {"session.disable_quant_qdq": "1"}
        if isinstance(model, (str, Path)):
            model = load_model(model)
        if data_dir(model) is not None or weight_bytes(model) >= PROTOBUF_LIMIT // 2:
            # too large to save the optimized graph inline, so it can be neither checked for
            # integer kernels nor rewritten: a QDQ graph runs `disable`, a float one `all`
            has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
            return self._open(model, OPT_LEVELS["disable" if has_qdq else "all"], qdq)
        with tempfile.TemporaryDirectory(prefix="ptq-nchwc-") as folder:
            path = Path(folder) / "optimized.onnx"
            first = self._open(model, OPT_LEVELS["all"], qdq, save=path)
            optimized = load_model(path, check=False)
        fused = integer_ops(optimized)
        if fused:
            log.warning("ONNX Runtime fused Q/DQ into %s despite session.disable_quant_qdq: "
                        "running at level 'disable' (exact Q/DQ)", ", ".join(sorted(fused)))
            return self._open(model, OPT_LEVELS["disable"])
        block = nchwc_block()
        if block is None:  # no NCHWc kernels on this CPU: ORT's graph as it is
            return first
        rewritten, blocked = expose_blocked(optimized, self._expose, tensor_shapes(model), block)
        if rewritten is optimized:
            return first
        try:
            session = self._open(rewritten, OPT_LEVELS["disable"])
        except PtqError as exc:  # a graph the rewrite got wrong: ORT's own graph still runs
            log.warning("NCHWc rewrite not used (%s); please report this model", exc)
            return first
        self.blocked, self.on_blocks = blocked, True
        return session

    def _open(self, model: str | Path | onnx.ModelProto, level: ort.GraphOptimizationLevel,
              config: dict[str, str] | None = None, save: Path | None = None) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.log_severity_level = 3
        if self._threads:
            opts.intra_op_num_threads = self._threads
        if save is not None:  # the graph ORT runs, as ORT optimized it
            opts.optimized_model_filepath = str(save)
        for key, value in {**self._session_config, **(config or {})}.items():
            opts.add_session_config_entry(key, value)
        source, staged = model, None
        if isinstance(source, onnx.ModelProto):
            if source.ir_version != compatible_ir_version(source):
                source = finalize(copy_model(source), check=False)
            staged = session_input(source)     # bytes + external-weight folder, or a temp file
            source = staged.source
            for key, value in staged.config.items():
                opts.add_session_config_entry(key, value)
        elif isinstance(source, Path):
            source = str(source)
        cuda = "CUDAExecutionProvider" in self._providers
        if cuda:
            _preload_cuda_libraries()
        options = [CUDA_OPTIONS if p == "CUDAExecutionProvider" else {} for p in self._providers]
        try:
            extra = {"disabled_optimizers": self._disabled} if self._disabled else {}
            return ort.InferenceSession(source, opts, providers=self._providers,
                                        provider_options=options, **extra)
        except Exception as exc:
            raise PtqError(f"ONNX Runtime cannot load the model: {exception_line(exc, last=True)}",
                           path=source if isinstance(source, str) else None,
                           hint="check that every op is supported by this onnxruntime "
                                f"({ort.__version__}) or upgrade it") from None
        finally:
            if staged is not None:
                staged.close()                 # the session holds the weights now

    def _check_fallback(self) -> None:
        """ORT creates a CPU session when the CUDA libraries fail to load, with only a log
        line: compare what ran with what was asked, fail an explicit request, warn on auto."""
        wanted, active = self._providers[0], self.session.get_providers()[0]
        if wanted == active:
            return
        message = (f"{wanted} could not be used (its libraries did not load) and ONNX Runtime "
                   f"fell back to {active}")
        if self._explicit:
            self._session = None
            raise ConfigError(message, hint="install the CUDA/cuDNN libraries this onnxruntime-gpu "
                                            "was built for (pip install 'onnxruntime-gpu[cuda,cudnn]'), "
                                            "or pass --providers cpu")
        log.warning("%s; running on %s", message, active)

    def __exit__(self, *exc: object) -> None:
        self._session = None

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            raise InternalError("OrtRunner used outside its 'with' block")
        return self._session

    @property
    def providers(self) -> list[str]:
        """The providers the session actually has (after any silent fallback)."""
        return self.session.get_providers()

    @property
    def provider(self) -> str:
        """The execution provider that runs the model (the first one ORT kept)."""
        return self.session.get_providers()[0]

    @property
    def device_id(self) -> int:
        options = self.session.get_provider_options().get("CUDAExecutionProvider", {})
        return int(options.get("device_id", 0))

    def input_metadata(self) -> list[TensorInfo]:
        return [_meta(i) for i in self.session.get_inputs()]

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names()
        try:
            values = self.session.run(names, feeds)
        except Exception as exc:
            raise PtqError(f"inference failed: {exception_line(exc, last=True)}",
                           hint="check the input shapes and dtypes against the model") from None
        return dict(zip(names, values))


_ORT_TYPES = {"tensor(float)": onnx.TensorProto.FLOAT, "tensor(float16)": onnx.TensorProto.FLOAT16,
              "tensor(double)": onnx.TensorProto.DOUBLE, "tensor(int64)": onnx.TensorProto.INT64,
              "tensor(int32)": onnx.TensorProto.INT32, "tensor(uint8)": onnx.TensorProto.UINT8,
              "tensor(int8)": onnx.TensorProto.INT8, "tensor(bool)": onnx.TensorProto.BOOL}


def _meta(node_arg: ort.NodeArg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else (d or None) for d in node_arg.shape)
    return TensorInfo(node_arg.name, _ORT_TYPES.get(node_arg.type, onnx.TensorProto.UNDEFINED), shape)


_PRELOADED = False


def _preload_cuda_libraries() -> None:
    """onnxruntime-gpu >= 1.21 finds CUDA/cuDNN from the nvidia-* pip packages (or torch's)
    only when asked; without it a pip-only install silently falls back to CPU."""
    global _PRELOADED
    if _PRELOADED or not hasattr(ort, "preload_dlls"):
        return
    _PRELOADED = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # the fallback check reports what happens next
        log.debug("onnxruntime.preload_dlls failed: %s", exc)


@functools.cache
def nchwc_block() -> int | None:
    """Channels per NCHWc block of this CPU's ONNX Runtime kernels (8 with AVX2, 16 with
    AVX-512), or None where ORT has no NCHWc kernels."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(block_probe().SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"x": np.zeros((1, 4, 1, 1), np.float32)})
    except Exception as exc:  # not an x86 build, or the op is gone: plain NCHW outputs
        log.debug("no NCHWc kernels: %s", exception_line(exc))
        return None
    return int(y.shape[1]) if y.ndim == 4 and y.shape[1] > 1 else None


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes the kernel could give this process now (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
