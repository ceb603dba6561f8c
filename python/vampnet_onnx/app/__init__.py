"""`vampnet-onnx app`: VampNet's music app on ONNX Runtime, a local Gradio page (the ``app``
extra; docs/app.md). Nothing else in the package imports it.

`studio` does the work on the public API, `ui` is the page and its server.
"""

import os

# Set before Gradio is imported, which reads it then: the page must work with no internet and
# tell no one it ran.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from .studio import Studio  # noqa: E402
from .ui import build_app, serve  # noqa: E402

__all__ = ["Studio", "build_app", "serve"]
