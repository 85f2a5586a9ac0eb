#!/usr/bin/env python3
"""Export trained tracking models to ONNX and write manifest.json (TRACKING.md).

    python onnx/tracking/export.py --block RUN --dense RUN --softmax RUN --out onnx/models/tracking

Each RUN is a train.py output folder (config.json + model.pt). The models take
``tokens int64 [B, n]`` with B and n dynamic and give ``logits float32 [B, n, K]``;
ChaCAL layers become one ``blockres::ResolventAttention`` node per head (γ is a node
attribute, learned per head). After export each model is run in onnxruntime with the
library on fixed sequences and compared with its PyTorch eager output: max |Δ| over
max |logit| must stay ≤ 1e-4 at the training length. (Absolute differences are about
ten times that: the float32 eager model itself is that far from its float64 run, as
export_check.txt records, so two float32 evaluations cannot agree more closely.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import blockres_onnx as br  # noqa: E402
from blockres_onnx.tracking import Task, generate  # noqa: E402
from blockres_onnx.tracking_model import ModelConfig, TrackingModel  # noqa: E402

OPSET = 18


def load(run: Path) -> tuple[TrackingModel, dict]:
    meta = json.loads((run / "config.json").read_text())
    model = TrackingModel(ModelConfig(**meta["model"]))
    model.load_state_dict(torch.load(run / "model.pt", map_location="cpu"))
    return model.eval().freeze(), meta


def export(model: TrackingModel, path: Path):
    tokens = torch.randint(0, 128, (2, 96))
    dims = {"tokens": {0: torch.export.Dim("batch"), 1: torch.export.Dim("n", min=2, max=1 << 20)}}
    with torch.no_grad():
        program = torch.onnx.export(
            model, (tokens,), dynamo=True, input_names=["tokens"], output_names=["logits"],
            dynamic_shapes=dims, opset_version=OPSET, external_data=False, verbose=False,
        )
    program.save(str(path))


def check(model, path: Path, samples: dict) -> tuple[dict, dict]:
    """max |ORT − eager| and max |eager f32 − eager f64| per sample length; eager logits."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), br.register(ort.SessionOptions()), providers=["CPUExecutionProvider"])
    diffs, eager_out = {}, {}
    for n, tokens in samples.items():
        with torch.no_grad():
            eager = model(torch.from_numpy(tokens)).numpy()
            exact = model.double()(torch.from_numpy(tokens)).numpy()
            model.float()
        (got,) = sess.run(None, {"tokens": tokens})
        top = float(np.abs(eager).max())
        diffs[n] = (float(np.abs(got - eager).max()) / top, float(np.abs(eager - exact).max()) / top, top)
        eager_out[n] = eager
    return diffs, eager_out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for kind in ("block", "dense", "softmax"):
        p.add_argument(f"--{kind}", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    manifest, task = {}, None
    files, samples, reference, report = {}, None, {}, []
    for kind in ("block", "dense", "softmax"):
        model, meta = load(getattr(a, kind))
        t = Task(**meta["task"])
        if task is not None and t != task:
            raise SystemExit(f"{kind}: trained on another task ({t}) than the others ({task})")
        task, n = t, meta["train"]["n"]
        path = a.out / f"tracking_{kind}.onnx"
        export(model, path)
        if samples is None:
            # Fixed sequences: the CI test replays them against the recorded eager logits.
            samples = {L: generate(task, 4 if L < 4 * n else 2, L, seed=123 + L).tokens
                       for L in (n, 4 * n + 3, 16 * n)}
            reference.update({f"tokens_{L}": t for L, t in samples.items() if L < 16 * n})
        diffs, eager = check(model, path, samples)
        reference.update({f"{kind}_{L}": e for L, e in eager.items() if L < 16 * n})
        size = path.stat().st_size
        line = f"{kind:8s} {path.name:24s} {size / 2**20:5.2f} MiB  " + "  ".join(
            f"n={L}: ORT−eager {d:.1e}, eager−f64 {e:.1e} (max |logit| {t:.1f})" for L, (d, e, t) in diffs.items())
        print(line)
        report.append(line)
        if diffs[n][0] > 1e-4:
            raise SystemExit(f"{kind}: ORT output differs from PyTorch eager by {diffs[n][0]:.2e} (relative) > 1e-4")
        files[kind] = path.name
        manifest[kind] = {"run": getattr(a, kind).name, **meta["model"], "gammas_learned": model.gammas(),
                          "params": meta["params"]}
    out = {**task.as_dict(), "train_length": n, "models": files, "custom_op_domain": br.DOMAIN,
           "model_configs": manifest}
    (a.out / "manifest.json").write_text(json.dumps(out, indent=1) + "\n")
    np.savez_compressed(a.out / "eager_reference.npz", **reference)
    (a.out / "export_check.txt").write_text(
        f"# python onnx/tracking/export.py (torch {torch.__version__}, onnxruntime CPU); on fixed sequences,\n"
        "# max |ORT − eager f32| and max |eager f32 − eager f64|, each over max |logit|\n"
        + "\n".join(report) + "\n")
    print(f"wrote {a.out / 'manifest.json'}")


if __name__ == "__main__":
    main()
