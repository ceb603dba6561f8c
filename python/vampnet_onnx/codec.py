"""The exported LAC codec graphs at run time: `Codec` (numpy + onnxruntime, no torch).

``codec.encode.onnx`` maps audio ``[B, 1, N]`` (any N >= 1) to codes ``[B, n_codebooks,
ceil(N / hop)]``; ``codec.decode.onnx`` maps codes and a length back to audio (`export.codec`,
docs/model.md §5). Each graph carries the codec configuration under `CODEC_CONFIG_KEY`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .contracts import (
    CODEC_CONFIG_KEY,
    CODEC_DECODE,
    CODEC_ENCODE,
    CPU_CODEC_FILES,
    DECODE_FILE,
    ENCODE_FILE,
    read_metadata,
)
from .runtime import _provider_names, create_session, run


def read_codec_config(path: str | Path) -> dict[str, Any]:
    """The `CODEC_CONFIG_KEY` metadata dict of a codec graph (weights are not loaded)."""
    return read_metadata(path, CODEC_CONFIG_KEY, "read_codec_config")


def check_codes(codes: Any, n_codebooks: int, codebook_size: int, where: str) -> np.ndarray:
    """Codes ``[B, n_codebooks, T]`` (T >= 1) with every value in ``[0, codebook_size)``, as
    int64; the mask token (``codebook_size``) is refused: it has no codec vector."""
    array = np.asarray(codes)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: codes must be an integer array, got {array.dtype}")
    if array.ndim != 3 or array.shape[1] != n_codebooks or array.shape[2] < 1:
        raise ValueError(
            f"{where}: codes must have shape [B, {n_codebooks}, T] with T >= 1, got {array.shape}"
        )
    bad = (array < 0) | (array >= codebook_size)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{where}: codes must be in [0, {codebook_size}), got {array[index]} at [b, c, t] = "
            f"{list(index)} (the mask token {codebook_size} must be generated or replaced "
            "before decoding)"
        )
    return array.astype(np.int64, copy=False)


def session_graph(
    path: str | Path, providers: list | None = None, device: str | None = None
) -> Path:
    """The file a codec session runs for the graph `path`: on the CPU (no `providers` but
    onnxruntime's CPU one, `device` None or "cpu"), its CPU variant beside it where the folder
    has one (`contracts.CPU_CODEC_FILES`: the Snake activations as the op library's `Snake`,
    the same float32 computation in one pass); else `path` itself (CUDA sessions keep the
    standard nodes, which stay on the GPU)."""
    path = Path(path)
    if device is not None:
        on_cpu = device == "cpu"
    else:
        on_cpu = all(name == "CPUExecutionProvider" for name in _provider_names(providers or []))
    variant = path.with_name(CPU_CODEC_FILES.get(path.name, path.name))
    return variant if on_cpu and variant != path and variant.is_file() else path


def decoded_length(n_frames: int, decoder_rates: list[int]) -> int:
    """Samples the decoder makes from `n_frames` frames: T * hop for even rates (each odd
    rate r adds one sample: its transposed conv maps L to L * r + 1)."""
    length = n_frames
    for rate in decoder_rates:
        length = length * rate + rate % 2
    return length


class Codec:
    """The exported codec graphs on onnxruntime, with the inputs validated.

    Args:
        encode_path: ``codec.encode.onnx`` or None (decode only).
        decode_path: ``codec.decode.onnx`` or None (encode only).
        intra_op_threads: threads per session (None: onnxruntime's default).
        providers: onnxruntime execution providers (None: CPU).
        device: "cpu" or "cuda" instead of `providers` (`runtime.device_providers`).

    Attributes:
        config: the codec metadata (`CODEC_CONFIG_KEY`): sample_rate, hop_length,
            n_codebooks, codebook_size, ...
        graph_paths: the files the sessions run ("encode_path", "decode_path" -> path): the
            CPU variants beside the given graphs on the CPU where they exist (`session_graph`).
    """

    def __init__(
        self,
        encode_path: str | Path | None = None,
        decode_path: str | Path | None = None,
        intra_op_threads: int | None = None,
        providers: list | None = None,
        device: str | None = None,
    ) -> None:
        paths = {"encode_path": encode_path, "decode_path": decode_path}
        configs = {k: read_codec_config(p) for k, p in paths.items() if p is not None}
        if not configs:
            raise ValueError("Codec: encode_path or decode_path must be given, got neither")
        hashes = {c["checkpoint_sha256"] for c in configs.values()}
        if len(hashes) > 1:
            raise ValueError(
                "Codec: encode_path and decode_path must come from the same codec.pth, got "
                f"checkpoint hashes {sorted(hashes)}"
            )
        self.config = next(iter(configs.values()))
        #: The files the sessions run, by argument name (`session_graph`).
        self.graph_paths = {
            k: session_graph(p, providers, device) for k, p in paths.items() if p is not None
        }
        self._sessions = {
            k: create_session(p, providers, intra_op_threads, device=device)
            for k, p in self.graph_paths.items()
        }
        contract = {
            "encode_path": (CODEC_ENCODE, ENCODE_FILE),
            "decode_path": (CODEC_DECODE, DECODE_FILE),
        }
        for key, session in self._sessions.items():
            schema, file = contract[key]
            names = [i.name for i in session.get_inputs()]
            if names != schema.input_names:
                raise ValueError(
                    f"Codec: {key} must be a {file} (inputs {schema.input_names}), got "
                    f"'{paths[key]}' with inputs {names}"
                )

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Audio ``[N]``, ``[B, N]`` or ``[B, 1, N]`` (N >= 1, at ``config["sample_rate"]``,
        preprocessed) -> codes int64 ``[B, n_codebooks, ceil(N / hop)]``."""
        if "encode_path" not in self._sessions:
            raise ValueError("Codec.encode: encode_path must be given to encode, got None")
        audio = np.asarray(audio)
        if (
            not np.issubdtype(audio.dtype, np.floating)
            or audio.ndim not in (1, 2, 3)
            or (audio.ndim == 3 and audio.shape[1] != 1)
            or audio.size == 0
        ):
            raise ValueError(
                "Codec.encode: audio must be a float array [N], [B, N] or [B, 1, N] with N >= 1, "
                f"got {audio.dtype} {audio.shape}"
            )
        if not np.isfinite(audio).all():
            raise ValueError("Codec.encode: audio must be finite, got NaN or inf")
        feed = {"audio": audio.reshape(-1, 1, audio.shape[-1]).astype(np.float32)}
        return run(self._sessions["encode_path"], None, feed)[0]

    def decode(self, codes: np.ndarray, length: int | None = None) -> np.ndarray:
        """Codes ``[B, n_codebooks, T]`` in ``[0, codebook_size)`` -> audio float32
        ``[B, 1, length]`` at ``config["sample_rate"]``.

        Args:
            length: samples to keep, in ``[0, T * hop]``; None keeps all T * hop.
        """
        if "decode_path" not in self._sessions:
            raise ValueError("Codec.decode: decode_path must be given to decode, got None")
        codes = check_codes(
            codes, self.config["n_codebooks"], self.config["codebook_size"], "Codec.decode"
        )
        full = decoded_length(codes.shape[2], self.config["decoder_rates"])
        if length is None:
            length = full
        if isinstance(length, bool) or not isinstance(length, int | np.integer):
            raise ValueError(f"Codec.decode: length must be an int or None, got {length!r}")
        if not 0 <= length <= full:
            raise ValueError(f"Codec.decode: length must be in [0, {full}], got {length}")
        feed = {"codes": codes, "length": np.array(length, dtype=np.int64)}
        return run(self._sessions["decode_path"], None, feed)[0]
