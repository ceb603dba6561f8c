"""The page: Gradio Blocks around a `studio.Studio`, and the server that serves it."""

from __future__ import annotations

import collections
import inspect
import math
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from .. import Cancelled, presets
from ..longform import DEFAULT_CONTEXT_S
from .studio import (
    CONTROLS,
    EXTEND_SECONDS,
    LABELS,
    MASK_CONTROLS,
    MAX_VARIATIONS,
    SAMPLING_CONTROLS,
    Control,
    Result,
    Studio,
    in_app_words,
)

#: Requests waiting behind the one generation that runs; more are turned away with a message.
QUEUE_SIZE = 8
#: The largest upload Gradio takes, per second of --max-seconds: 8-byte stereo samples at
#: 192 kHz, the largest common uncompressed audio, plus a megabyte for headers. The duration
#: itself is checked from the file's header (`Studio.load`); this only stops a huge upload early.
_BYTES_PER_SECOND = 192_000 * 2 * 8

#: Variations the page starts with: two to compare, as upstream's app has.
_VARIATIONS = 2
#: Errors that are the user's (a bad setting or file), shown in the page as messages.
_USER_ERRORS = (ValueError, OSError)


def _number(control: Control, visible: bool = True) -> gr.Number:
    return gr.Number(
        value=control.default,
        label=control.name,
        info=control.help,
        precision=0 if control.integral else None,
        visible=visible,
        elem_id=control.name,
    )


def _signature(names: list[str], tracked: bool = False) -> inspect.Signature:
    """A signature with `names`, which Gradio reads to name the API's parameters; a default
    of None makes a parameter optional for clients (the component's value is then its
    default). tracked: a first parameter that Gradio fills with the `gr.Request` and a last
    one with a progress bar that follows tqdm's."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(names[0], kind)]
    parameters += [inspect.Parameter(name, kind, default=None) for name in names[1:]]
    if tracked:
        request = inspect.Parameter("request", kind, annotation=gr.Request)
        progress = inspect.Parameter("progress", kind, default=gr.Progress(track_tqdm=True))
        parameters = [request, *parameters, progress]
    return inspect.Signature(parameters)


def build_app(studio: Studio) -> gr.Blocks:
    """The Blocks of the app on `studio`'s models: inputs and controls, a generate action
    (``api_name="vamp"``), a continuation (``api_name="extend"``), a mask preview
    (``api_name="mask"``), and per variation a player, a float-WAV download and a "use as
    input" button."""
    top_codebook = studio.vamp.n_codebooks - 1
    with gr.Blocks(title="vampnet-onnx", delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            f"## VampNet on ONNX Runtime\nModels: `{studio.vamp.models}` ({studio.precision}, "
            f"{'with' if studio.has_beats else 'no'} beat tracker). Inputs up to "
            f"{studio.max_seconds:g} s."
        )
        if studio.license is not None:
            gr.Markdown(f"**License of these models:** {studio.license}", elem_id="license")
        with gr.Row():
            with gr.Column():
                source = gr.Audio(
                    sources=["upload", "microphone"],
                    buttons=["download"],
                    type="filepath",
                    label="input",
                    elem_id="input",
                )
                example = gr.Button("example clip (synthesised music)", elem_id="example")
                preset = gr.Dropdown(
                    choices=studio.presets(),
                    value=None,
                    label="preset",
                    info="sets the mask recipe below; edit it after to taste",
                    elem_id="preset",
                )
                with gr.Row():
                    seed = gr.Textbox(
                        label="seed", placeholder="empty: draw a random seed", elem_id="seed"
                    )
                    variations = gr.Number(
                        value=_VARIATIONS,
                        precision=0,
                        label="variations",
                        info=f"1 to {MAX_VARIATIONS}; variation i has the seed + i - 1",
                        elem_id="variations",
                    )
                inpaint = gr.Textbox(
                    label="inpaint (s)",
                    placeholder="START END, e.g. 1.5 3; empty: the whole clip",
                    info="generate only this range, keep the rest as it is; the recipe applies "
                    "inside (periodic_prompt 0 regenerates it all)",
                    elem_id="inpaint",
                )
                with gr.Row():
                    generate = gr.Button("generate", variant="primary", elem_id="generate")
                    stop = gr.Button("stop", variant="stop", elem_id="stop")
                    preview = gr.Button("show the mask", elem_id="preview")
            with gr.Column():
                with gr.Row():
                    seed_used = gr.Textbox(
                        label="seed used (variation 1)", interactive=False, elem_id="seed-used"
                    )
                    status = gr.Markdown(elem_id="status")
                players, files, reuse = [], [], []
                for i in range(1, MAX_VARIATIONS + 1):
                    with gr.Row(equal_height=True):
                        players.append(
                            gr.Audio(
                                label=f"variation {i}",
                                visible=False,
                                interactive=False,
                                buttons=["download"],
                                elem_id=f"variation-{i}",
                                scale=3,
                            )
                        )
                        with gr.Column(scale=2, min_width=160):
                            files.append(
                                gr.File(
                                    label=f"variation {i} (float WAV)",
                                    visible=False,
                                    interactive=False,
                                    elem_id=f"file-{i}",
                                )
                            )
                            reuse.append(
                                gr.Button(
                                    f"use variation {i} as input",
                                    visible=False,
                                    size="sm",
                                    elem_id=f"reuse-{i}",
                                )
                            )
                with gr.Row(equal_height=True):
                    extend_seconds = gr.Number(
                        value=min(EXTEND_SECONDS, studio.max_seconds),
                        label=LABELS["seconds"],
                        info=f"new music after the input, up to {studio.max_seconds:g} s; the "
                        "seed and the sampling settings apply, the mask recipe does not",
                        elem_id="extend-seconds",
                    )
                    context = gr.Textbox(
                        label=LABELS["context_s"],
                        placeholder=f"empty: {DEFAULT_CONTEXT_S:g} s, or the input's length "
                        "where shorter",
                        info="seconds of the codes each 10-s window starts with, in [0, 10)",
                        elem_id="context",
                    )
                    extend = gr.Button("extend", elem_id="extend", scale=0, min_width=100)
        with gr.Row():
            spectrograms = gr.Image(
                label="spectrograms (log frequency)",
                interactive=False,
                format="png",
                buttons=["download", "fullscreen"],
                elem_id="spectrograms",
            )
            mask = gr.Image(
                label=f"mask (a band per variation, 1 on top): codebooks 0 (bottom) to "
                f"{top_codebook}; light = generated, dark = kept",
                interactive=False,
                format="png",
                buttons=["download", "fullscreen"],
                elem_id="mask",
            )
        with gr.Row():
            with gr.Accordion("sampling (coarse stage)", open=False, elem_id="sampling"):
                sampling = [_number(control) for control in SAMPLING_CONTROLS]
            with gr.Accordion(
                "mask recipe: what is kept from the input", open=False, elem_id="recipe"
            ):
                mask_controls = [
                    _number(control, studio.has_beats or control.name != "beat_mask_ms")
                    for control in MASK_CONTROLS
                ]

        settings_inputs = [*sampling, *mask_controls, seed, inpaint]

        def settings_of(values: tuple) -> dict[str, Any]:
            named = dict(zip([c.name for c in CONTROLS], values[: len(CONTROLS)]))
            seed_text, inpaint_text = values[len(CONTROLS) :]
            return studio.settings(named, seed_text, inpaint_text)

        # The cancel event of each page's running generation, by Gradio session: Stop and a
        # closed tab stop their own page's run, not another's.
        running: dict[str, threading.Event] = {}
        # Pages closed lately: a run of theirs still in the queue is not started. A run waits
        # behind at most QUEUE_SIZE others, so the last 8 x QUEUE_SIZE closings hold the page of
        # every run still waiting, short of that many tabs closing while it waits.
        closed: collections.deque[str] = collections.deque(maxlen=8 * QUEUE_SIZE)

        def stopped() -> gr.Error:
            return gr.Error(
                "the generation was stopped; nothing was generated",
                title="Stopped",
                print_exception=False,
            )

        def outputs(request: gr.Request, work, describe) -> tuple:
            """`work(cancel)`'s `Result` as the outputs of a run: Stop and a closed tab set
            `cancel`, a run of a tab closed while it waited does not start, and an error is a
            message in the app's words."""
            started = time.monotonic()
            # Registered first: a tab that closes from here on sets it (`close`).
            cancel = running[request.session_hash] = threading.Event()
            try:
                if request.session_hash in closed:
                    raise Cancelled("the page was closed while its run waited")
                result: Result = work(cancel)
            except _USER_ERRORS as err:
                raise gr.Error(in_app_words(str(err)), print_exception=False) from None
            except Cancelled:
                raise stopped() from None
            finally:
                running.pop(request.session_hash, None)
            paths = [str(p) for p in result.paths] + [None] * (MAX_VARIATIONS - len(result.paths))
            return (
                str(result.seed),
                f"{describe(result)}, in {time.monotonic() - started:.1f} s",
                result.spectrograms,
                result.mask,
                *paths,
                *paths,
            )

        def run(request: gr.Request, path, n, *values):
            # The last value is Gradio's progress tracker: it follows the stages' tqdm bars.
            *values, _ = values

            def describe(result: Result) -> str:
                count = len(result.paths)
                seeds = ", ".join(str(result.seed + i) for i in range(count))
                return f"{count} variation(s), seeds {seeds}"

            return outputs(
                request,
                lambda cancel: studio.generate(path, settings_of(values), n, cancel),
                describe,
            )

        def run_extend(request: gr.Request, path, seconds, context_s, *values):
            *values, seed_text, _ = values

            def work(cancel: threading.Event) -> Result:
                named = dict(zip([c.name for c in SAMPLING_CONTROLS], values))
                settings = studio.settings(named, seed_text, controls=SAMPLING_CONTROLS)
                return studio.extend(path, settings, seconds, context_s, cancel)

            return outputs(
                request, work, lambda result: f"continued by {seconds:g} s, seed {result.seed}"
            )

        def show_slots(*paths):
            return [
                component(visible=p is not None)
                for component in (gr.Audio, gr.File, gr.Button)
                for p in paths
            ]

        # The API's parameters named for the settings they set (gradio_client takes keywords).
        settings_names = [*[c.name for c in CONTROLS], "seed", "inpaint"]
        run.__signature__ = _signature(["audio", "variations", *settings_names], tracked=True)
        extend_names = ["audio", "seconds", "context_s", *[c.name for c in SAMPLING_CONTROLS]]
        run_extend.__signature__ = _signature([*extend_names, "seed"], tracked=True)

        def show_mask(path, *values):
            try:
                return studio.mask(path, settings_of(values))
            except _USER_ERRORS as err:
                raise gr.Error(in_app_words(str(err)), print_exception=False) from None

        show_mask.__signature__ = _signature(["audio", *settings_names])

        def choose_preset(name):
            chosen = presets.preset(name) if name else {}
            return [
                gr.Number(value=chosen[c.name]) if c.name in chosen else gr.Number()
                for c in MASK_CONTROLS
            ]

        # One generation at a time on the one set of models; a mask preview waits its turn too.
        # The API returns plain values (None for variations not asked for); showing and
        # hiding the slots is a second, page-only step.
        generate.click(
            run,
            [source, variations, *settings_inputs],
            [seed_used, status, spectrograms, mask, *players, *files],
            api_name="vamp",
            concurrency_limit=1,
            concurrency_id="models",
        ).then(show_slots, files, [*players, *files, *reuse], api_visibility="private")
        extend.click(
            run_extend,
            [source, extend_seconds, context, *sampling, seed],
            [seed_used, status, spectrograms, mask, *players, *files],
            api_name="extend",
            concurrency_limit=1,
            concurrency_id="models",
        ).then(show_slots, files, [*players, *files, *reuse], api_visibility="private")
        preview.click(
            show_mask,
            [source, *settings_inputs],
            mask,
            api_name="mask",
            concurrency_limit=1,
            concurrency_id="models",
        )

        def stop_run(request: gr.Request):
            if request.session_hash in running:
                running[request.session_hash].set()

        def close(request: gr.Request):
            closed.append(request.session_hash)
            stop_run(request)

        # Outside the queue: it must not wait behind the generation it stops.
        stop.click(stop_run, None, None, queue=False, api_visibility="private")
        blocks.unload(close)
        preset.change(choose_preset, preset, mask_controls, api_visibility="private")
        example.click(lambda: str(studio.example_clip()), None, source, api_visibility="private")
        for button, file in zip(reuse, files):
            # The float WAV, not the player's copy, which Gradio may have converted to play.
            button.click(lambda path: path, file, source, api_visibility="private")
    blocks.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return blocks


def serve(
    models: str | Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "cpu",
    max_seconds: float = 60.0,
    block: bool = True,
) -> tuple[gr.Blocks, Studio]:
    """Load the models, build the app and serve it on `host`:`port` (127.0.0.1: this machine
    only). block: serve until interrupted, then stop; else return at once with the server
    running (`gr.Blocks.close` and `Studio.close` stop it)."""
    studio = Studio(models, device=device, max_seconds=max_seconds)
    blocks = build_app(studio)
    try:
        blocks.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=not block,
            max_file_size=math.ceil(max_seconds * _BYTES_PER_SECOND) + 2**20,
            ssr_mode=False,
            footer_links=[],
            quiet=not block,
        )
    except BaseException:  # a port in use, Ctrl-C while starting: no folder left behind
        studio.close()
        raise
    if block:
        studio.close()
    return blocks, studio
