"""Triton python-backend model: runs the ONNX graph beside this file with ONNX Runtime.

Generic (nothing in it is specific to one model): the tensors come from the model configuration
(``configs/python.pbtxt``, made from ``config.pbtxt``), the file from its ``onnx_file`` parameter.
NVIDIA's Triton image ignores this file (it serves ``config.pbtxt`` with its onnxruntime backend);
the ``tritonserver`` bundled by PyPI ``nvidia-pytriton``, which has only the python backend, runs it
when started with ``--model-config-name=python`` (``lookalike.devservers.start_triton``).

Environment (set by ``start_triton``):

- ``LOOKALIKE_TRITON_PYTHONPATH``: folders prepended to ``sys.path``. The backend stub embeds the
  system's libpython and ignores ``PYTHONPATH``, so this is how it finds numpy and onnxruntime.
  The stub of tritonserver 2.51 is built against NumPy 1.x: under NumPy 2 it reads every tensor as
  zeros without an error, so :meth:`TritonPythonModel.initialize` refuses NumPy 2.
- ``LOOKALIKE_TRITON_ORT_THREADS``: ONNX Runtime intra-op threads (0 or unset: one per core).

Requests that the dynamic batcher hands over together run as one ONNX Runtime call.
"""

import json
import os
import sys


def _extend_sys_path() -> None:
    extra = [p for p in os.environ.get("LOOKALIKE_TRITON_PYTHONPATH", "").split(os.pathsep) if p]
    for path in reversed(extra):
        if path not in sys.path:
            sys.path.insert(0, path)


_extend_sys_path()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(
                f"numpy {np.__version__} ({np.__file__}) is loaded, but this Triton python backend stub "
                "is built against NumPy 1.x and would read tensors as zeros: put a NumPy 1.x first in "
                "LOOKALIKE_TRITON_PYTHONPATH (make setup-triton installs one)"
            )
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file") or "model.onnx")
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(os.environ.get("LOOKALIKE_TRITON_ORT_THREADS", "0") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if set(self.input_names) != graph_inputs or not set(self.output_names) <= graph_outputs:
            raise RuntimeError(
                f"{path}: graph inputs {sorted(graph_inputs)} / outputs {sorted(graph_outputs)} do not "
                f"match the configuration's {self.input_names} / {self.output_names}"
            )
        print(f"[lookalike] {args['model_name']} v{args['model_version']}: {path} on "
              f"{self.session.get_providers()}, numpy {np.__version__}, onnxruntime {ort.__version__}",
              flush=True)

    def execute(self, requests):
        # One ONNX Runtime call for everything the dynamic batcher handed over.
        feeds = {name: [] for name in self.input_names}
        sizes, wanted = [], []
        for request in requests:
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names]
            sizes.append(arrays[0].shape[0] if self.batching else 1)
            for name, array in zip(self.input_names, arrays):
                feeds[name].append(array if self.batching else array[None])
            wanted.append(list(request.requested_output_names()) or self.output_names)
        names = sorted({n for w in wanted for n in w}, key=self.output_names.index)
        try:
            merged = {k: np.concatenate(v, axis=0) for k, v in feeds.items()}
            results = dict(zip(names, self.session.run(names, merged)))
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            error = pb_utils.TritonError(f"onnxruntime: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for size, request_outputs in zip(sizes, wanted):
            tensors = []
            for name in request_outputs:
                part = results[name][start : start + size]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part if self.batching else part[0])))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self):
        self.session = None
