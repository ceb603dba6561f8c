"""`Generator`'s Python loop on CUDA: with IO binding and with the transformer as a CUDA graph it
gives the codes of the plain loop on the same card, call after call and shape after shape.

Only onnxruntime's CUDA provider is needed (the op library in use may have no CUDA ops: then
MaskGitStep runs on the CPU and onnxruntime copies the logits to it). The comparison is on the
same card because CUDA's logits are not the CPU's to the bit. Skips without CUDA."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from vampnet_onnx import Generator, configs, contracts

pytestmark = pytest.mark.gpu

CUDA = "CUDAExecutionProvider"
#: (batch, frames, steps, settings): shapes the same generator meets in turn, one twice.
CALLS = [
    (1, 40, 6, dict(seed=0)),
    (2, 17, 5, dict(seed=3, temperature=0.8, top_p=0.9)),
    (1, 40, 6, dict(seed=7, top_k=20)),
]


@pytest.fixture(scope="session")
def cuda() -> None:
    if CUDA not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no {CUDA} (install onnxruntime-gpu)")


def problem(batch: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (batch, configs.TINY_COARSE_KWARGS["n_codebooks"], frames)
    return rng.integers(0, 1024, shape), rng.random(shape) < 0.7


@pytest.mark.filterwarnings("ignore:Generator. the IO-binding loop on CUDA")
@pytest.mark.parametrize("options", [{"io_binding": True}, {"cuda_graph": True}])
def test_the_bound_loop_on_cuda_equals_the_plain_loop(cuda, tiny_models_dir, options):
    path = tiny_models_dir / contracts.TRANSFORMER_FILES["coarse"]
    plain = Generator(path, device="cuda")
    bound = Generator(path, device="cuda", **options)
    for batch, frames, steps, settings in CALLS:
        codes, mask = problem(batch, frames, frames)
        np.testing.assert_array_equal(
            bound.generate(codes, mask, steps=steps, **settings),
            plain.generate(codes, mask, steps=steps, **settings),
        )


def test_the_bound_loop_on_cuda_says_it_awaits_a_gpu_run(cuda, tiny_models_dir):
    path = tiny_models_dir / contracts.TRANSFORMER_FILES["coarse"]
    with pytest.warns(RuntimeWarning, match="has not yet run on a GPU"):
        Generator(path, device="cuda", io_binding=True)
