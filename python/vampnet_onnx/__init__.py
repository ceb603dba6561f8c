"""vampnet-onnx: VampNet masked-token music generation on ONNX Runtime.

Runtime API (numpy + onnxruntime): `Generator`, `get_library_path`, `create_session`; the ops'
numpy twins in `vampnet_onnx.reference`; the compiled kernels on numpy arrays in
`vampnet_onnx._kernels`. Exporting (`vampnet_onnx.export`, `vampnet_onnx.model`) needs torch.
"""

from .generator import Generator
from .ops import DOMAIN, MASK_TOKEN
from .runtime import create_session, get_library_path

__version__ = "0.1.0"

__all__ = [
    "DOMAIN",
    "MASK_TOKEN",
    "Generator",
    "__version__",
    "create_session",
    "get_library_path",
]
