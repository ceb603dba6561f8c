"""vampnet-onnx: VampNet masked-token music generation on ONNX Runtime.

Runtime API (numpy + onnxruntime): `Vamp` and `SingleGraphVamp` (audio in, audio out; the
`audio` extra), `Generator`, `get_library_path`, `create_session`
(`op_path`: which path runs the ops of a session); the ops'
numpy twins in `vampnet_onnx.reference`; the compiled kernels on numpy arrays in
`vampnet_onnx._kernels`. Exporting (`vampnet_onnx.export`, `vampnet_onnx.model`) needs torch.

ONNX Runtime comes with an extra, ``vampnet-onnx[cpu]`` (onnxruntime) or ``vampnet-onnx[gpu]``
(onnxruntime-gpu): the two packages provide the same module and break each other. The names
below that need it are imported on first use, so the package (and the CLI's --help) imports
without it and says how to install it when it is needed.
"""

from .ops import DOMAIN, MASK_TOKEN

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "DOMAIN",
    "MASK_TOKEN",
    "Generator",
    "SingleGraphVamp",
    "Vamp",
    "__version__",
    "create_session",
    "get_library_path",
    "op_path",
]

_LAZY = {
    "Cancelled": "runtime",
    "Generator": "generator",
    "SingleGraphVamp": "pipeline",
    "Vamp": "pipeline",
    "create_session": "runtime",
    "get_library_path": "runtime",
    "op_path": "runtime",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vampnet_onnx' has no attribute {name!r}")
