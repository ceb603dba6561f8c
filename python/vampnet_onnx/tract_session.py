"""`TractSession`: a graph file run by tract (PyPI ``tract``, Sonos' ONNX runtime in Rust) behind
the one method of an onnxruntime session that `Generator` calls on a step graph,
``run(output_names, feed)``.

tract has no ONNX `Loop`: it runs a step graph (``export --step-graphs``) with the ops'
standard-op bodies inlined (``--inline-op-bodies``), which `Generator(path, session=
TractSession(path))` drives one run per step; not a generation graph (docs/generation.md,
"Step graphs"). Optional: needs the ``portable`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx


class TractSession:
    """The graph file `path` loaded, analysed and optimised by tract, ready to run.

    Raises ImportError without the ``tract`` package, FileNotFoundError for a missing file,
    and tract's own error (tract.TractError: the node and the reason) for a graph that tract
    cannot load or analyse.
    """

    def __init__(self, path: str | Path):
        try:
            import tract
        except ImportError as err:
            raise ImportError(
                "TractSession: the tract package must be installed (pip install "
                "'vampnet-onnx[portable]'), got none"
            ) from err
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"TractSession: path must be an existing .onnx file, got '{path}'"
            )
        model = tract.onnx().load(str(path))
        #: The graph's input and output names, in its order (tract runs inputs by position).
        self.input_names = [model.input_name(i) for i in range(model.input_count())]
        # tract names an output after the node that makes it; the graph's names are the file's.
        graph = onnx.load(str(path), load_external_data=False).graph
        self.output_names = [value.name for value in graph.output]
        self._runnable = model.into_model().into_runnable()

    def run(
        self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The outputs `output_names` (None: all, in the graph's order) of one run on `feed`
        (input name -> array, every input of the graph), as onnxruntime's session.run."""
        missing = [name for name in self.input_names if name not in feed]
        if missing:
            raise ValueError(
                f"TractSession.run: feed must hold every input of the graph, got none for "
                f"{', '.join(missing)}"
            )
        unknown = [name for name in output_names or () if name not in self.output_names]
        if unknown:
            raise ValueError(
                f"TractSession.run: output_names must be among {self.output_names}, got "
                f"{', '.join(unknown)}"
            )
        results = self._runnable.run([np.asarray(feed[name]) for name in self.input_names])
        by_name = dict(zip(self.output_names, (result.to_numpy() for result in results)))
        return [by_name[name] for name in output_names or self.output_names]
