"""Would one ONNX call per user burst make the worker faster? A measured answer, three ways.

    ./run python benchmarks/multistep.py --bundle DIR          # a bundle from `streamrec export`
    ./run python benchmarks/multistep.py --bundle DIR --seconds 2 --repeats 5

On ml-100k in time order a 256-event micro-batch holds about 7 users (they rate dozens of films
in a sitting), so ``process`` makes about 118 ONNX calls of ~2 rows each. The idea measured
here: wrap the bundle's one-event graph (``step.onnx``) as the body of an ONNX ``Scan`` over T
steps, so that B users' next T events take one call. Each (B, T) is timed both ways in the same
run: T calls of the step graph in a loop (what the worker does), and one call of the Scan graph.
The outputs are compared bit for bit (h, c and the top list of every step). Bundles with the
runs graph (``runs.onnx``: the LSTM as one ONNX ``LSTM`` node that loops over the steps natively, the
head on every step's row: what the worker now steps) are timed a third way, one call of it.

Prints a table and writes benchmarks/results/multistep.json (us per event for both, the ratio,
and whether every output was equal). Needs the ``onnx`` package (the train extra), not torch.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((1, 1), (7, 1), (1, 40), (7, 40), (7, 120), (64, 4))  # (users B, steps T)


def scan_model(step: onnx.ModelProto) -> onnx.ModelProto:
    """The step graph as the body of a Scan over axis 0 of item/event_type/gap [T, B]; carries h and c,
    and emits every step's h, c, top_items and top_scores."""
    g = step.graph
    ins = {i.name: i for i in g.input}
    outs = {o.name: o for o in g.output}
    h_out, c_out, top_i, top_s = (o.name for o in g.output)
    body = onnx.GraphProto()
    body.CopyFrom(g)
    body.name = "one_step"
    del body.input[:]
    del body.output[:]
    body.input.extend([ins["h"], ins["c"], ins["item"], ins["event_type"], ins["gap"]])
    body.node.extend([helper.make_node("Identity", [h_out], ["h_step"]),
                      helper.make_node("Identity", [c_out], ["c_step"])])
    like = lambda name, src: helper.make_tensor_value_info(  # noqa: E731
        name, src.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in src.type.tensor_type.shape.dim])
    body.output.extend([outs[h_out], outs[c_out], like("h_step", outs[h_out]), like("c_step", outs[c_out]),
                        outs[top_i], outs[top_s]])
    scan = helper.make_node("Scan", ["h", "c", "items", "types", "gaps"],
                            ["h_last", "c_last", "h_all", "c_all", "top_all", "score_all"],
                            num_scan_inputs=3, body=body)
    dims = lambda src: [d.dim_param or d.dim_value for d in src.type.tensor_type.shape.dim]  # noqa: E731
    seq = lambda name, elem: helper.make_tensor_value_info(name, elem, ["T", "B"])  # noqa: E731
    per_step = lambda name, src: helper.make_tensor_value_info(  # noqa: E731
        name, src.type.tensor_type.elem_type, ["T"] + dims(src))
    graph = helper.make_graph([scan], "burst", [ins["h"], ins["c"], seq("items", TensorProto.INT64),
                                                 seq("types", TensorProto.INT64), seq("gaps", TensorProto.INT64)],
                              [like("h_last", outs[h_out]), like("c_last", outs[c_out]),
                               per_step("h_all", outs[h_out]), per_step("c_all", outs[c_out]),
                               per_step("top_all", outs[top_i]), per_step("score_all", outs[top_s])])
    model = helper.make_model(graph, opset_imports=step.opset_import)
    model.ir_version = step.ir_version
    onnx.checker.check_model(model)
    return model


def session(model: bytes | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="a bundle directory (its step.onnx is used)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1 s)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per (B, T) and way; the median is kept")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multistep.json")
    args = ap.parse_args()

    step_model = onnx.load(str(args.bundle / "step.onnx"))
    if {i.name for i in step_model.graph.input} != {"item", "event_type", "gap", "h", "c"} or \
            len(step_model.graph.output) != 4:
        raise SystemExit(f"{args.bundle}: not a one-stage bundle (its step emits a query for an index)")
    one, burst = session(str(args.bundle / "step.onnx")), session(scan_model(step_model).SerializeToString())
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    runs = session(str(args.bundle / "runs.onnx")) if "runs.onnx" in manifest.get("files", {}) else None
    layers, hidden, n_items = manifest["layers"], manifest["hidden"], manifest["n_items"]
    rng = np.random.default_rng(0)
    rows = []
    for b, t in SHAPES:
        items = rng.integers(2, n_items, (t, b))
        types = np.zeros((t, b), np.int64)
        gaps = rng.integers(0, manifest.get("n_gap_buckets", 1), (t, b))
        h0 = rng.standard_normal((layers, b, hidden)).astype(np.float32)
        c0 = rng.standard_normal((layers, b, hidden)).astype(np.float32)

        def loop() -> list[np.ndarray]:
            h, c, tops = h0, c0, []
            for s in range(t):
                h, c, ti, ts = one.run(None, {"item": items[s], "event_type": types[s], "gap": gaps[s], "h": h, "c": c})
                tops.append((ti, ts))
            return [h, c, np.stack([x for x, _ in tops]), np.stack([y for _, y in tops])]

        def scan() -> list[np.ndarray]:
            out = burst.run(None, {"h": h0, "c": c0, "items": items, "types": types, "gaps": gaps})
            return [out[0], out[1], out[4], out[5]]

        def run() -> list[np.ndarray]:  # [B, T] matrices, every step scored, rows in the loop's (t, b) order
            flat = np.array([u * t + s for s in range(t) for u in range(b)], np.int64)
            h, c, ti, ts = runs.run(None, {"item": items.T.copy(), "event_type": types.T.copy(), "gap": gaps.T.copy(),
                                           "h": h0, "c": c0, "rows": flat, "length": np.full(b, t, np.int32)})
            return [h, c, ti.reshape(t, b, -1), ts.reshape(t, b, -1)]

        ref = loop()
        equal = all(np.array_equal(x, y) for x, y in zip(ref, scan()))
        ways = (("loop", loop), ("scan", scan)) + ((("runs", run),) if runs is not None else ())
        runs_equal = all(np.array_equal(x, y) for x, y in zip(ref, run())) if runs is not None else None
        timed = {}
        for name, fn in ways:
            per_event = []
            for _ in range(args.repeats):
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    fn()
                    n += 1
                per_event.append((time.perf_counter() - t0) / n / (b * t) * 1e6)
            timed[name] = statistics.median(per_event)
        rows.append({"users": b, "steps": t, "loop_us_per_event": round(timed["loop"], 2),
                     "scan_us_per_event": round(timed["scan"], 2),
                     "scan_to_loop": round(timed["scan"] / timed["loop"], 3), "bitwise_equal": equal})
        if runs is not None:
            rows[-1].update(runs_us_per_event=round(timed["runs"], 2),
                            runs_to_loop=round(timed["runs"] / timed["loop"], 3), runs_bitwise_equal=runs_equal)
        print(f"B={b:3d} T={t:4d}: loop {timed['loop']:7.1f} us/event, one Scan call {timed['scan']:7.1f} "
              f"({timed['scan'] / timed['loop']:.2f}x), outputs equal: {equal}"
              + (f"; one runs.onnx call {timed['runs']:7.1f} ({timed['runs'] / timed['loop']:.2f}x), "
                 f"equal: {runs_equal}" if runs is not None else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "multistep", "command": "./run python benchmarks/multistep.py --bundle " + str(args.bundle),
        "bundle": {"model_version": manifest.get("model_version"), "n_items": n_items, "layers": layers,
                   "hidden": hidden},
        "onnxruntime": ort.__version__, "threads": 1, "seconds": args.seconds, "repeats": args.repeats,
        "machine": {"nproc": len(__import__("os").sched_getaffinity(0)), "python": platform.python_version(),
                    "loadavg": list(__import__("os").getloadavg())},
        "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
