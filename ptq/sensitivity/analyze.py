"""The sensitivity pipeline: reference once, baseline, one variant per quantizable node.

    load model -> evaluation batches (preprocessed once) -> ranges (given or calibrated)
    -> FP32 reference outputs in ONNX Runtime (cached on disk)
    -> baseline: all INT8 -> variants (mode, pin) in parallel -> ranking by the first metric
    -> optional greedy auto fallback -> SensitivityResult (+ the auto model)

`Analysis.prepare` does everything up to the baseline, so a caller (the CLI) knows
how many variants follow before `rank` runs them; `analyze` is the one-call form.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import onnx

from ptq.calibration import CalibrateConfig, PreprocessOptions
from ptq.backends.ort import QDQ_FAITHFUL_LEVELS
from ptq.errors import ConfigError
from ptq.evaluate import run_model
from ptq.graph.model import load_model, model_sha256
from ptq.datasets.preprocess import detect_layout
from ptq.graph.model import graph_inputs
from ptq.metrics import NotApplicable, compare_outputs, default_metrics, get_metric
from ptq.output_kinds import OutputSpec, output_specs
from ptq.quantization import (Pin, Precision, QuantizeConfig, match_nodes, quantizable_nodes,
                              resolve_pins)
from ptq.sensitivity.cache import ReferenceCache, reference_key
from ptq.sensitivity.inputs import EvalData, Ranges, load_eval_data, load_ranges, require_labels
from ptq.sensitivity.record import AutoResult, LayerResult, SensitivityResult
from ptq.sensitivity.scoring import BuiltinScorer, Scorer, gain, parse_target, resolve_scorers
from ptq.sensitivity.search import VARIANTS, GreedyFallback, Mode, parse_precision
from ptq.sensitivity.variants import (Backend, EngineSpec, Evaluator, ExecutorKind, VariantRun,
                                      auto_jobs, evaluate_many, threads_per_job)
from ptq.version import __version__

log = logging.getLogger(__name__)
Progress = Callable[[int], None]


@dataclass(frozen=True)
class AutoConfig:
    target: str                       # "<metric><op><value>", e.g. "top1>=0.99"
    max_pins: int | None = None       # None: as many as there are layers
    time_budget: float | None = None  # seconds for the greedy phase


@dataclass(frozen=True)
class SensitivityConfig:
    mode: Mode = Mode.LEAVE_ONE_OUT
    pin: Precision = Precision.FP16
    metrics: tuple[Any, ...] = ()                   # names, hooks "pkg.mod:fn", Scorers; () = auto:
                                                    # cosine + top1 / map-iou box-f1 where they apply
    labels: bool = False                            # top1/top5 = accuracy against the labels
    decoder: str | None = None                      # detection decoder hook for map50 / map
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)  # .exclude: FP32 everywhere
    fp16: tuple[str, ...] = ()                      # patterns pinned FP16 in every variant
    outputs: tuple[tuple[str, OutputSpec], ...] = ()  # per-output kind overrides (--output)
    nodes: tuple[str, ...] = ()                     # patterns: analyse only these (default: all)
    eval_images: int | None = None
    calib_images: int | None = None                 # cap for on-the-fly calibration
    batch_size: int | None = None
    jobs: int | None = None                         # None: auto_jobs (parallel on the CPU EP)
    executor: ExecutorKind = ExecutorKind.THREAD
    backend: Backend = Backend.ORT
    providers: str = "auto"
    optimization: str = "nchwc"                     # ORT level for the quantized variants
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    seed: int = 0
    strict: bool = False
    auto: AutoConfig | None = None
    cache_dir: str | Path | None = None             # reference outputs cache (None: off)


@dataclass(frozen=True)
class SensitivityRun:
    result: SensitivityResult
    auto_model: onnx.ModelProto | None = None
    ranges: Ranges | None = None


class Analysis:
    """Prepared state shared by every variant (see the module docstring)."""

    def __init__(self, model_path: Path, data: Any, config: SensitivityConfig,
                 ranges: Any = None) -> None:
        self.t_start = time.perf_counter()
        self.model_path, self.data, self.config = Path(model_path), data, config
        self.mode, self.pin = Mode.parse(config.mode), parse_precision(config.pin)
        self.target = None if config.auto is None else parse_target(config.auto.target,
                                                                    labels=config.labels)
        self.engine = EngineSpec(Backend(config.backend), config.providers, config.optimization)
        self.engine.check()
        self.jobs = _jobs(config)
        self.model = load_model(self.model_path)
        inputs = graph_inputs(self.model)
        self.layout = detect_layout(inputs[0].shape) if inputs else "NCHW"
        self.overrides = dict(config.outputs)
        self.auto_metrics = not config.metrics
        names = list(config.metrics or ["cosine"]) + ([self.target.metric] if self.target else [])
        self.scorers = self._resolve(names)
        self.op_types = {n.name: n.op_type for n in self.model.graph.node}
        self.sha256 = model_sha256(self.model_path)
        self.nodes = quantizable_nodes(self.model, config.quantize)
        self.fixed = [Pin(n, Precision.FP16, f"--fp16 {p}") for p in config.fp16
                      for n in match_nodes(self.model, [p])]
        resolve_pins(self.model, self.fixed, config.quantize.exclude)  # --fp16/--fp32 overlap: error
        fixed = {p.node for p in self.fixed}
        self.nodes = [n for n in self.nodes if n not in fixed]
        if not self.nodes:
            raise ConfigError("the model has no quantizable node (nothing would get INT8)",
                              path=self.model_path,
                              hint="check --op-types / --exclude; supported op types are listed "
                                   "in `ptq quantize --help`")
        self.targets = self._targets(config.nodes)
        self.timing: dict[str, float] = {}
        self.runs: list[VariantRun] = []
        self._prepare_data(ranges)
        if self.jobs is None:
            self.jobs = auto_jobs(self.engine, self._job_bytes())
        self._prepare_reference()
        self.evaluator = Evaluator(self.model, self.ranges.value, config.quantize,
                                   self.eval.batches, self.reference, self.scorers,
                                   self.eval.meta, self.engine, self.sha256)
        t0 = time.perf_counter()
        capture = _Capture()  # the baseline's outputs, for the per-output comparison
        self.baseline = Evaluator(self.model, self.ranges.value, config.quantize, self.eval.batches,
                                  self.reference, [*self.scorers, capture], self.eval.meta,
                                  self.engine, self.sha256).evaluate(self.pins(()))
        self.baseline = replace(self.baseline, metrics={k: v for k, v in self.baseline.metrics.items()
                                                        if k != capture.name})
        self.baseline_outputs = self._compare(capture.outputs)
        self.timing["baseline_s"] = time.perf_counter() - t0
        if not self.reference_cached:  # only once the inputs proved usable: no stray files
            ReferenceCache(config.cache_dir).store(self._reference_key, self.reference)

    def _job_bytes(self) -> int | None:
        """One variant session's activations at the evaluation batch (static shapes only)."""
        from ptq.batch_size import activation_bytes_per_sample
        from ptq.graph.model import activations

        per_sample = activation_bytes_per_sample(activations(self.model))
        return per_sample * self.eval.batch_size if per_sample else None

    def _resolve(self, names: Sequence[Any]) -> list[Scorer]:
        scorers = resolve_scorers(names, labels=self.config.labels, decoder=self.config.decoder,
                                  layout=self.layout, overrides=self.overrides)
        self.by_name = {s.name: s for s in scorers}
        return scorers

    def pins(self, variant: Sequence[Pin]) -> tuple[Pin, ...]:
        """A variant's pins on top of the user's --fp16 pins (theirs win on a shared node)."""
        fixed = {p.node for p in self.fixed}
        return (*self.fixed, *(p for p in variant if p.node not in fixed))

    def _check_metrics(self) -> None:
        """Auto metrics: add what applies to the outputs (top1 on class axes, map-iou and
        box-f1 on maps); named metrics that apply to no output fail here, before the baseline."""
        specs = output_specs(self.reference, self.layout, self.overrides)
        self.specs = specs
        if self.auto_metrics:
            extra = [m for m in default_metrics(specs) if m not in self.by_name]
            self.scorers = self._resolve([*self.scorers, *extra])
        for s in self.scorers:
            if isinstance(s, BuiltinScorer) and not s.metric.needs_labels and \
                    not any(s.metric.applies(spec) for spec in specs.values()):
                raise NotApplicable(s.name, specs, self.reference)
        # the metrics added above may need labels of a shape the data lacks
        require_labels(self.eval.meta, [s.name for s in self.scorers if s.needs_labels], self.data)

    def _compare(self, outputs: dict) -> dict:
        names = [s.name for s in self.scorers if isinstance(s, BuiltinScorer)
                 and not s.metric.needs_labels]
        names = list(dict.fromkeys(["cosine", *names]))
        return compare_outputs(self.reference, outputs, names, specs=self.specs).to_dict()

    def _targets(self, patterns: Sequence[str]) -> list[str]:
        """The quantizable nodes to make variants of (all, or those matching `patterns`)."""
        if not patterns:
            return list(self.nodes)
        chosen = set(match_nodes(self.model, patterns))
        targets = [n for n in self.nodes if n in chosen]
        if not targets:
            raise ConfigError(f"--nodes {' '.join(patterns)} matches no quantizable node",
                              path=self.model_path, hint=f"quantizable: {', '.join(self.nodes[:8])}"
                              + (" ..." if len(self.nodes) > 8 else ""))
        return targets

    def _prepare_data(self, ranges: Any) -> None:
        c = self.config
        data_config = CalibrateConfig(max_images=c.eval_images, providers=c.providers, seed=c.seed,
                                      strict=c.strict, preprocess=c.preprocess)
        t0 = time.perf_counter()
        self.eval: EvalData = load_eval_data(self.model_path, self.model, self.data, data_config,
                                             c.batch_size)
        self.timing["data_s"] = time.perf_counter() - t0
        require_labels(self.eval.meta, [s.name for s in self.scorers if s.needs_labels], self.data)
        t0 = time.perf_counter()
        self.ranges = load_ranges(ranges, self.model_path, self.sha256, self.data,
                                  c.quantize.algo, replace(data_config, max_images=c.calib_images))
        key = "calibrate_s" if self.ranges.calibrated else "ranges_s"
        self.timing[key] = time.perf_counter() - t0

    def _prepare_reference(self) -> None:
        t0 = time.perf_counter()
        runtime = {"providers": self.config.providers, "optimization": "all"}
        cache = ReferenceCache(self.config.cache_dir)
        self._reference_key = reference_key(self.sha256, self.eval.batches, self.eval.description,
                                            runtime)
        self.reference = cache.load(self._reference_key)
        self.reference_cached = self.reference is not None
        if self.reference is None:
            self.reference = run_model(self.model, self.eval.batches,
                                       providers=self.config.providers, optimization="all")
        self.timing["reference_s"] = time.perf_counter() - t0
        self._check_metrics()
        self.reference_metrics = self._reference_metrics()

    def _reference_metrics(self) -> dict[str, float]:
        """The FP32 model scored like a variant (vs itself; true accuracy when labelled)."""
        scorers = list(self.scorers)
        labels = self.eval.meta.labels
        classes = labels is not None and getattr(labels, "ndim", 0) == 1
        if classes and "top1-acc" not in self.by_name:
            scorers.append(BuiltinScorer(get_metric("top1-acc"), self.layout,
                                         tuple(self.overrides.items())))
        out = {}
        for s in scorers:
            try:
                out[s.name] = s.score(self.reference, self.reference, self.eval.meta)
            except ConfigError:
                if s in self.scorers:
                    raise
        return out

    @property
    def rank_metric(self) -> str:
        return self.scorers[0].name

    @property
    def num_variants(self) -> int:
        return len(self.targets) * len(self.mode.single_modes)

    def rank(self, progress: Progress | None = None) -> list[LayerResult]:
        """Evaluate every variant of every mode; layers sorted by mode, then rank."""
        plan = [(mode, node) for mode in self.mode.single_modes for node in self.targets]
        variants = [self.pins(VARIANTS[mode](node, self.nodes, self.pin)) for mode, node in plan]
        evaluator = self.evaluator
        if self.jobs > 1:  # each of the parallel sessions gets its share of the cores
            threads = threads_per_job(self.jobs)
            evaluator = self.evaluator.with_engine(replace(self.engine, threads=threads))
        t0 = time.perf_counter()
        runs = evaluate_many(evaluator, variants, jobs=self.jobs,
                             executor=self.config.executor, progress=progress)
        self.timing["variants_s"] = time.perf_counter() - t0
        self.runs = runs
        layers = []
        for mode in self.mode.single_modes:
            rows = [self._layer(m, node, run) for (m, node), run in zip(plan, runs) if m is mode]
            layers.extend(rank_layers(rows, self.scorers, self.nodes))
        return layers

    def _layer(self, mode: Mode, node: str, run: VariantRun) -> LayerResult:
        if mode is Mode.LEAVE_ONE_OUT:  # the pin's gain over all-INT8
            delta = {s.name: gain(s, run.metrics[s.name], self.baseline.metrics[s.name])
                     for s in self.scorers}
        else:  # what INT8 on this node alone costs = what keeping it FP32 gains
            delta = {s.name: gain(s, self.reference_metrics[s.name], run.metrics[s.name])
                     for s in self.scorers}
        return LayerResult(node, self.op_types[node], mode.value, dict(run.metrics), delta,
                           seconds=run.seconds)

    def auto(self, layers: Sequence[LayerResult], progress: Progress | None = None
             ) -> tuple[AutoResult | None, onnx.ModelProto | None]:
        """Greedy fallback over the leave-one-out ranking (quantize-one when that is all)."""
        if self.target is None:
            return None, None
        modes = [m.value for m in self.mode.single_modes]
        ranking = sorted((r for r in layers if r.mode == modes[0]), key=lambda r: r.rank)
        a = self.config.auto
        per_variant = sum(r.seconds for r in self.runs) / max(1, len(self.runs))
        search = GreedyFallback(ranking, self.target, self.by_name, self.rank_metric, self.pin,
                                dict(self.baseline.metrics), max_pins=a.max_pins,
                                time_budget=a.time_budget, step_estimate=per_variant)
        t0 = time.perf_counter()
        while (pins := search.propose()) is not None:
            search.update(self.evaluator.evaluate(self.pins(pins)).metrics)
            if progress:
                progress(1)
        self.timing["auto_s"] = time.perf_counter() - t0
        result = AutoResult(target=str(self.target), met=search.met, pins=tuple(search.pins),
                            metrics=dict(search.current), steps=tuple(search.steps),
                            stopped_by=search.stopped_by or "exhausted")
        return result, self.evaluator.build(self.pins(search.pins))

    def result(self, layers: Sequence[LayerResult], auto: AutoResult | None) -> SensitivityResult:
        return SensitivityResult(
            model={"path": str(self.model_path), "sha256": self.sha256},
            ranges={"path": self.ranges.path, "model_sha256": self.ranges.model_sha256,
                    "algo": self.config.quantize.algo},
            settings=self._settings(), reference={"metrics": self.reference_metrics},
            baseline={"metrics": dict(self.baseline.metrics), "outputs": self.baseline_outputs},
            layers=tuple(layers), auto=auto,
            timing=self._timing(), ptq_version=__version__)

    def _settings(self) -> dict:
        c = self.config
        settings = {
            "mode": self.mode.value, "pin": self.pin.value,
            "metrics": [s.name for s in self.scorers], "rank_metric": self.rank_metric,
            "higher_is_better": {s.name: s.higher_is_better for s in self.scorers},
            "eval_images": self.eval.num_samples, "batch_size": self.eval.batch_size,
            "backend": self.engine.backend.value, "jobs": self.jobs, "data": _describe(self.data),
            "labels": c.labels, "decoder": c.decoder, "algo": c.quantize.algo,
            "providers": c.providers, "optimization": c.optimization,
            "executor": ExecutorKind(c.executor).value, "quantizable_nodes": len(self.nodes),
            "analysed_nodes": len(self.targets),
            "preprocessing": self.eval.description.get("preprocessing"),
            "reference_cached": self.reference_cached,
            "fp16": list(c.fp16), "fp32": list(c.quantize.exclude),
            "outputs": {n: s.describe() for n, s in self.specs.items()},
        }
        return json.loads(json.dumps(settings, default=str))  # JSON types (tuples -> lists)

    def _timing(self) -> dict[str, float]:
        timing = dict(self.timing)
        n = max(1, len(self.runs))
        timing["per_variant_s"] = sum(r.seconds for r in self.runs) / n
        for part in ("build_s", "session_s", "infer_s"):
            timing[f"per_variant_{part}"] = sum(getattr(r, part) for r in self.runs) / n
        timing["total_s"] = time.perf_counter() - self.t_start
        return timing


class _Capture:
    """A scorer that keeps the candidate outputs it is shown (the baseline's) and scores 0."""

    name, higher_is_better, needs_labels = "__outputs__", True, False

    def __init__(self) -> None:
        self.outputs: dict = {}

    def score(self, ref, cand, meta) -> float:
        self.outputs = cand
        return 0.0


def rank_layers(rows: Sequence[LayerResult], scorers: Sequence[Scorer],
                nodes: Sequence[str]) -> list[LayerResult]:
    """Largest gain of the first metric first; ties by the next metrics, then graph order."""
    order = {n: i for i, n in enumerate(nodes)}
    key = lambda r: (*(-r.delta[s.name] for s in scorers), order[r.node])  # noqa: E731
    return [replace(r, rank=i + 1) for i, r in enumerate(sorted(rows, key=key))]


def _jobs(config: SensitivityConfig) -> int | None:
    """--jobs checked; None: automatic (auto_jobs, once the data and batch are known)."""
    if config.optimization not in QDQ_FAITHFUL_LEVELS:
        raise ConfigError(f"optimization level {config.optimization!r} does not compute Q/DQ "
                          "exactly (ONNX Runtime fuses integer kernels that corrupt QDQ models on "
                          "CPUs without VNNI)", hint=f"use one of {', '.join(QDQ_FAITHFUL_LEVELS)}")
    if config.jobs is None:
        return None
    if config.jobs <= 0:
        raise ConfigError(f"--jobs must be positive, got {config.jobs}")
    if Backend(config.backend) is Backend.TRT and config.jobs > 1:
        log.warning("--backend trt builds one engine at a time; ignoring --jobs %d", config.jobs)
        return 1
    return config.jobs


def _describe(data: Any) -> str:
    return str(data) if isinstance(data, (str, Path)) else type(data).__name__


def analyze(model: str | Path, data: Any, config: SensitivityConfig = SensitivityConfig(), *,
            ranges: Any = None, progress: Progress | None = None) -> SensitivityRun:
    """Rank every quantizable node of `model` by how much keeping it out of INT8 helps."""
    analysis = Analysis(Path(model), data, config, ranges)
    layers = analysis.rank(progress)
    auto, auto_model = analysis.auto(layers)
    return SensitivityRun(analysis.result(layers, auto), auto_model, analysis.ranges)
