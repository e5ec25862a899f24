"""What a CPU user deploys with instead, on the same model and input as schedb's: ONNX Runtime
and OpenVINO, each given the machine's cores, for timing beside TVM and PyTorch eager.
Both take the model as ONNX exported from its PyTorch module (TorchScript exporter: the
dynamo exporter needs onnxscript), so the graph is the one PyTorch runs."""

from __future__ import annotations

import time
from pathlib import Path

from schedb import host_cores


def export_onnx(model, folder: Path) -> Path:
    """``model``'s PyTorch module as ONNX (opset 17), written once to ``folder``."""
    import torch

    path = Path(folder) / f"{model.name}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        xs = tuple(torch.from_numpy(x) for x in model.inputs)
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(model.torch_module.eval(), xs, str(tmp), opset_version=17, dynamo=False)
        tmp.rename(path)
    return path


class OnnxRuntime:
    name = "onnx runtime"

    def __init__(self, onnx_path: Path, inputs, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or host_cores()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.feed = {i.name: x for i, x in zip(self.session.get_inputs(), inputs)}
        self.run()  # warm-up

    def run(self):
        return self.session.run(None, self.feed)[0]


class OpenVino:
    name = "openvino"

    def __init__(self, onnx_path: Path, inputs, threads: int | None = None):
        import openvino as ov

        core = ov.Core()
        # f32 as every other runtime here: on a CPU with AVX512-BF16 OpenVINO computes in
        # bfloat16 unless told otherwise.
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or host_cores(),
            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.inputs = list(inputs)
        self.run()  # warm-up

    def run(self):
        self.request.infer(self.inputs)
        return self.request.get_output_tensor(0).data


def peers(model, folder: Path) -> list:
    """ONNX Runtime and OpenVINO, ready to run ``model``'s input."""
    path = export_onnx(model, folder)
    return [OnnxRuntime(path, model.inputs), OpenVino(path, model.inputs)]


def time_once(peer) -> float:
    """One run after a warm-up run (as TVM's and PyTorch's timing do), in ms."""
    peer.run()
    t0 = time.perf_counter()
    peer.run()
    return (time.perf_counter() - t0) * 1e3
