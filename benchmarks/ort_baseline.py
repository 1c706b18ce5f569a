"""ONNX Runtime baseline for the conv-BN-ReLU inference net (optional: needs ``onnx`` and ``onnxruntime``).

The net of :func:`common.conv_bn_relu_net` is written directly as an ONNX graph with BatchNorm already folded
into the convolutions (Conv + bias, Relu, MaxPool), the form ONNX Runtime's own optimiser would reach; weights
are random (the cost does not depend on them). ORT runs with ``SYMDL_BENCH_THREADS`` intra-op threads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from common import THREADS


def conv_bn_relu_net_ort(batch: int, seed: int = 0) -> Callable[[], object] | None:
    """``run()`` for one ORT inference of the net at ``batch``, or None when onnx/onnxruntime are missing."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur, cin = "x", 3
    for i, cout in enumerate((16, 32, 32)):
        w = rng.normal(0, (2.0 / (cin * 9)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        cur = f"r{i}"
        if i > 0:
            nodes.append(helper.make_node("MaxPool", [cur], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            cur = f"p{i}"
        cin = cout
    graph = helper.make_graph(
        nodes,
        "conv_bn_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", 32, 8, 8])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)

    def run() -> object:
        return sess.run(None, {"x": x})

    return run
