"""Which ONNX IR for ptq's graph layer: load / edit / save time and peak RSS on a >2 GB model.

One generated model (x -> 9 x (MatMul W[8192,8192] -> Relu), 2.42 GB of float32 weights in
one external data file) goes through the same edit in each IR, each in a fresh subprocess so
peak RSS (ru_maxrss) is its own:

    load   read the model (with whatever the IR does with external weights)
    edit   insert a Q -> DQ pair (scalar scale, INT8 zero point) in front of every weight
    save   write model + external data to a new folder (and, for ptq, the checker on it)

IRs:
    protobuf-inmem  anchor: onnx.load with weights in memory + onnx.save_model(external data),
                    i.e. what ptq did before issue 9 (its in-memory serialization failed > 2 GB)
    ptq-lazy        ptq.graph: protobuf without weights (kept on disk), streamed save
    onnx-ir         onnx_ir 1.1.0: lazy mmap'd tensors, onnx_ir.save(external_data=...)
    graphsurgeon    onnx-graphsurgeon 0.6.1: gs.import_onnx(onnx.load(...)) / gs.export_onnx

    python bench/ir.py [--dir /tmp/ptq-ir-bench]    (needs ~8 GB free disk; deleted at the end)
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

LAYERS, WIDTH = 9, 8192


def generate(folder: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = (rng.random((WIDTH // 8, WIDTH), dtype=np.float32) - 0.5) * 0.04
    nodes, inits, src = [], [], "x"
    with open(folder / "big.onnx.data", "wb") as data:
        for i in range(LAYERS):
            offset = data.tell()
            for k in range(8):
                data.write(np.roll(block, i + k, axis=1).tobytes())
            t = onnx.TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[WIDTH, WIDTH],
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "big.onnx.data"), ("offset", str(offset)),
                               ("length", str(WIDTH * WIDTH * 4))):
                t.external_data.add(key=key, value=value)
            inits.append(t)
            nodes += [helper.make_node("MatMul", [src, f"w{i}"], [f"mm{i}"], name=f"mm{i}"),
                      helper.make_node("Relu", [f"mm{i}"], [f"r{i}"], name=f"relu{i}")]
            src = f"r{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", 1, ["N", WIDTH])],
                              [helper.make_tensor_value_info(src, 1, ["N", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (folder / "big.onnx").write_bytes(model.SerializeToString())
    return folder / "big.onnx"


def _qdq_nodes(helper, w: str):
    return [helper.make_node("QuantizeLinear", [w, f"{w}_s", f"{w}_zp"], [f"{w}_q"], name=f"{w}_Q"),
            helper.make_node("DequantizeLinear", [f"{w}_q", f"{w}_s", f"{w}_zp"], [f"{w}_dq"], name=f"{w}_DQ")]


def run_protobuf(src: Path, out: Path, lazy: bool) -> dict[str, float]:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    t = {}
    start = time.perf_counter()
    if lazy:
        from ptq.graph.model import load_model
        model = load_model(src)
    else:
        model = onnx.load(str(src))
    t["load"] = time.perf_counter() - start
    start = time.perf_counter()
    if lazy:
        from ptq.graph.edit import copy_model
        model = copy_model(model)                     # ptq's passes never mutate their input
    new_nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul":
            w = node.input[1]
            new_nodes += _qdq_nodes(helper, w)
            model.graph.initializer.extend([numpy_helper.from_array(np.float32(0.01), f"{w}_s"),
                                            numpy_helper.from_array(np.int8(0), f"{w}_zp")])
            node.input[1] = f"{w}_dq"
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    t["edit"] = time.perf_counter() - start
    start = time.perf_counter()
    if lazy:
        from ptq.graph.edit import finalize, save_model
        save_model(finalize(model), out)
    else:
        onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{out.name}.data")
    t["save"] = time.perf_counter() - start
    return t


def run_onnx_ir(src: Path, out: Path) -> dict[str, float]:
    import numpy as np
    import onnx_ir as ir

    t = {}
    start = time.perf_counter()
    model = ir.load(str(src))
    t["load"] = time.perf_counter() - start
    start = time.perf_counter()
    for node in list(model.graph):
        if node.op_type != "MatMul":
            continue
        w = node.inputs[1]
        scale = ir.Value(name=f"{w.name}_s", const_value=ir.tensor(np.float32(0.01), name=f"{w.name}_s"))
        zp = ir.Value(name=f"{w.name}_zp", const_value=ir.tensor(np.int8(0), name=f"{w.name}_zp"))
        model.graph.register_initializer(scale)
        model.graph.register_initializer(zp)
        q = ir.node("QuantizeLinear", [w, scale, zp], name=f"{w.name}_Q")
        dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zp], name=f"{w.name}_DQ")
        model.graph.insert_before(node, [q, dq])
        node.replace_input_with(1, dq.outputs[0])
    t["edit"] = time.perf_counter() - start
    start = time.perf_counter()
    ir.save(model, str(out), external_data=f"{out.name}.data")
    t["save"] = time.perf_counter() - start
    return t


def run_graphsurgeon(src: Path, out: Path) -> dict[str, float]:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    t = {}
    start = time.perf_counter()
    graph = gs.import_onnx(onnx.load(str(src)))
    t["load"] = time.perf_counter() - start
    start = time.perf_counter()
    for node in [n for n in graph.nodes if n.op == "MatMul"]:
        w = node.inputs[1]
        scale, zp = gs.Constant(f"{w.name}_s", np.array(0.01, np.float32)), gs.Constant(f"{w.name}_zp", np.array(0, np.int8))
        q_out, dq_out = gs.Variable(f"{w.name}_q"), gs.Variable(f"{w.name}_dq", dtype=np.float32)
        graph.nodes += [gs.Node("QuantizeLinear", f"{w.name}_Q", inputs=[w, scale, zp], outputs=[q_out]),
                        gs.Node("DequantizeLinear", f"{w.name}_DQ", inputs=[q_out, scale, zp], outputs=[dq_out])]
        node.inputs[1] = dq_out
    graph.toposort()
    t["edit"] = time.perf_counter() - start
    start = time.perf_counter()
    model = gs.export_onnx(graph)
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{out.name}.data")
    t["save"] = time.perf_counter() - start
    return t


def child(kind: str, src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "onnx-ir":
            t = run_onnx_ir(src, out)
        elif kind == "graphsurgeon":
            t = run_graphsurgeon(src, out)
        else:
            t = run_protobuf(src, out, lazy=kind == "ptq-lazy")
        import onnx
        onnx.checker.check_model(str(out))           # the saved model is valid, data included
        t["ok"] = 1
    except Exception as exc:  # report the failure as the figure (the old path fails here)
        t = {"ok": 0, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}
    t["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(t))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/ptq-ir-bench"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    if shutil.disk_usage(args.dir.parent).free < 8 << 30:
        sys.exit("needs 8 GB of free disk")
    try:
        src = generate(args.dir / "src")
        size = (args.dir / "src" / "big.onnx.data").stat().st_size / 1e9
        print(f"model: {LAYERS} x MatMul [{WIDTH},{WIDTH}] float32, {size:.2f} GB external data")
        rows = {}
        for kind in ("protobuf-inmem", "ptq-lazy", "onnx-ir", "graphsurgeon"):
            out = args.dir / kind / "out.onnx"
            res = subprocess.run([sys.executable, __file__, "--child", kind, str(src), str(out)],
                                 capture_output=True, text=True)
            line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else \
                json.dumps({"ok": 0, "error": res.stderr.strip().splitlines()[-1][:100] if res.stderr else "crashed"})
            rows[kind] = json.loads(line)
            shutil.rmtree(args.dir / kind, ignore_errors=True)
        anchor = rows["protobuf-inmem"]
        print(f"{'IR':16} {'load s':>7} {'edit s':>7} {'save s':>7} {'total s':>8} {'peak RSS GB':>12}  vs anchor")
        for kind, r in rows.items():
            if not r.get("ok"):
                print(f"{kind:16} FAILED ({r.get('error')}); peak RSS {r.get('peak_rss_gb', 0):.2f} GB")
                continue
            total = r["load"] + r["edit"] + r["save"]
            ratio = ""
            if anchor.get("ok"):
                a_total = anchor["load"] + anchor["edit"] + anchor["save"]
                ratio = f"time x{total / a_total:.2f}, RSS x{r['peak_rss_gb'] / anchor['peak_rss_gb']:.2f}"
            print(f"{kind:16} {r['load']:7.2f} {r['edit']:7.3f} {r['save']:7.2f} {total:8.2f} "
                  f"{r['peak_rss_gb']:12.2f}  {ratio}")
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
