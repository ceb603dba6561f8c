"""`vampnet-onnx app` (vampnet_onnx.app): the page served on a free local port with the tiny
models, called through `gradio_client` and driven in headless chromium (Playwright).

Skips without the app extra (gradio) and, for the browser tests, without Playwright or a
chromium on PATH (.ci/run installs Debian's). Screenshots go to $VAMPNET_ARTIFACTS (default: the
test's temporary folder), never into the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile

from vampnet_onnx import cli, demo
from vampnet_onnx.pipeline import Vamp

SR = 44100
#: The input clip's length, and the longest the app takes: the refusal test uploads longer.
SECONDS = 2.0
MAX_SECONDS = 3.0
#: Few steps: the tests check the plumbing, not the music.
STEPS = 2
#: Steps of a run long enough to stop: about a minute here, where STEPS take a second.
LONG_STEPS = 5000
#: Where the float WAVs are in the vamp endpoint's outputs: seed used, status, spectrograms,
#: mask, a player per variation slot (4), then a file per slot.
FIRST_FILE = 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_models_dir):
    """(url, studio) of the app serving the tiny models on 127.0.0.1."""
    pytest.importorskip("gradio")
    from vampnet_onnx.app import serve

    port = _free_port()
    blocks, studio = serve(tiny_models_dir, port=port, max_seconds=MAX_SECONDS, block=False)
    yield f"http://127.0.0.1:{port}/", studio
    blocks.close()
    studio.close()


@pytest.fixture(scope="module")
def client(app):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app[0], verbose=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The demo's music, SECONDS long, as a float WAV (read back bit for bit by the server)."""
    path = tmp_path_factory.mktemp("clip") / "in.wav"
    soundfile.write(path, demo.synth_music(SECONDS, SR), SR, subtype="FLOAT")
    return path


def _upload(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_api_variations_equal_vamp_with_seed_plus_i(client, clip, tiny_models_dir):
    settings = dict(steps=STEPS, periodic_prompt=5, upper_codebook_mask=4)
    result = client.predict(
        audio=_upload(clip), variations=2, seed="11", **settings, api_name="/vamp"
    )
    seed_used, files = result[0], result[FIRST_FILE : FIRST_FILE + 2]
    assert seed_used == "11"
    x, rate = soundfile.read(clip, dtype="float32")
    vamp = Vamp(tiny_models_dir)
    for i, path in enumerate(files):
        y, out_rate = soundfile.read(path, dtype="float32")
        expected, expected_rate = vamp.vamp(x, rate, seed=11 + i, **settings)
        assert out_rate == expected_rate
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize(("context", "context_s"), [("1", 1.0), ("", None)])
def test_api_extend_equals_vamp_extend(client, clip, tiny_models_dir, context, context_s):
    settings = dict(steps=STEPS, temperature=0.8)
    result = client.predict(
        audio=_upload(clip),
        seconds=1.5,
        context_s=context,
        seed="7",
        **settings,
        api_name="/extend",
    )
    assert result[0] == "7"
    y, out_rate = soundfile.read(result[FIRST_FILE], dtype="float32")
    x, rate = soundfile.read(clip, dtype="float32")
    expected, expected_rate = Vamp(tiny_models_dir).extend(
        x, rate, seconds=1.5, context_s=context_s, seed=7, **settings
    )
    assert out_rate == expected_rate == SR
    assert y.shape == (x.shape[0] + round(1.5 * SR),)
    np.testing.assert_array_equal(y, expected)


def test_api_mask_after_a_run_is_each_variations_applied_mask(client, clip, tiny_models_dir):
    from PIL import Image

    from vampnet_onnx.app.studio import mask_picture

    settings = dict(steps=1, periodic_prompt=5, dropout=0.3)
    result = client.predict(
        audio=_upload(clip), variations=2, seed="11", **settings, api_name="/vamp"
    )
    picture = np.asarray(Image.open(result[3]).convert("RGB"))
    x, rate = soundfile.read(clip, dtype="float32")
    vamp = Vamp(tiny_models_dir)
    bands = [
        mask_picture(vamp.vamp_mask(x, rate, seed=11 + i, applied=True, **settings))
        for i in range(2)
    ]
    assert not np.array_equal(bands[0], bands[1])  # the seeds draw other rolls and dropouts
    height = bands[0].shape[0]
    np.testing.assert_array_equal(picture[:height], bands[0])
    np.testing.assert_array_equal(picture[-height:], bands[1])
    assert (picture[height:-height] == 255).all()  # the gap between the bands


def test_masks_picture_of_equal_masks_is_one_band():
    pytest.importorskip("gradio")
    from vampnet_onnx.app.studio import mask_picture, masks_picture

    mask = np.random.default_rng(0).random((1, 4, 50)) < 0.5
    np.testing.assert_array_equal(masks_picture([mask, mask.copy()]), mask_picture(mask))


def test_api_empty_seed_draws_one_and_names_it(client, clip):
    result = client.predict(audio=_upload(clip), variations=1, seed="", steps=1, api_name="/vamp")
    seed = int(result[0])
    assert Path(result[FIRST_FILE]).name == f"variation-1-seed-{seed}.wav"


def test_api_bad_setting_is_a_message(client, clip):
    from gradio_client.exceptions import AppError

    message = "^vampnet-onnx app: temperature must be a finite number >= 0, got -1$"
    with pytest.raises(AppError, match=message):
        client.predict(audio=_upload(clip), temperature=-1, api_name="/vamp")


@pytest.mark.parametrize(
    ("api_name", "given", "message"),
    [
        ("/vamp", {"inpaint": "5 6"}, "inpaint (s) must start at or before 1.985 s"),
        ("/extend", {"context_s": "5"}, "context (s) must be at most the input's length, 2.000 s"),
        ("/extend", {"seconds": 0}, "extend by (s) must be in (0, 3] (--max-seconds), got 0"),
        ("/extend", {"context_s": "a"}, "context (s) must be a number of seconds or empty"),
    ],
)
def test_api_error_names_the_controls_label(client, clip, api_name, given, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=f"^vampnet-onnx app: {re.escape(message)}"):
        client.predict(audio=_upload(clip), **given, api_name=api_name)


def test_api_inpaint_must_be_two_numbers(client, clip):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="inpaint must be two numbers of seconds, START END"):
        client.predict(audio=_upload(clip), inpaint="1.5", api_name="/vamp")


def test_api_undecodable_file_is_a_message(client, tmp_path):
    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AppError, match="vampnet-onnx app: input must be"):
        client.predict(audio=_upload(bad), api_name="/vamp")


def test_api_refuses_an_input_longer_than_max_seconds(client, tmp_path):
    from gradio_client.exceptions import AppError

    long = tmp_path / "long.wav"
    soundfile.write(long, demo.synth_music(MAX_SECONDS + 1, SR), SR, subtype="FLOAT")
    with pytest.raises(AppError, match=r"input must be at most 3 s long \(--max-seconds\)"):
        client.predict(audio=_upload(long), api_name="/vamp")


def test_api_refuses_a_server_path_the_client_names(app):
    import httpx

    from vampnet_onnx.app.studio import CONTROLS

    url, studio = app
    # An audio file on the server that no client uploaded: Gradio's upload handling refuses it.
    named = {"path": str(studio.example_clip()), "meta": {"_type": "gradio.FileData"}}
    data = [named, 1, *[control.default for control in CONTROLS], "5", ""]
    call = f"{url}gradio_api/call/vamp"
    event = httpx.post(call, json={"data": data}).json()["event_id"]
    stream = httpx.get(f"{call}/{event}", timeout=60).text
    assert stream.startswith("event: error"), stream


def _page_license(url: str) -> list[str]:
    """The text of the page's license notice as the server sends it: [] when it has none."""
    import httpx

    components = httpx.get(f"{url}config").json()["components"]
    return [c["props"]["value"] for c in components if c["props"].get("elem_id") == "license"]


@pytest.fixture
def licensed_models(tiny_models_dir, tmp_path) -> Path:
    """The tiny models with the license metadata ``export --pretrained`` writes."""
    import onnx

    from vampnet_onnx import contracts, hub

    folder = tmp_path / "licensed"
    folder.mkdir()
    for name in contracts.MODEL_FILES:
        model = onnx.load(tiny_models_dir / name)
        entry = model.metadata_props.add()
        entry.key, entry.value = contracts.LICENSE_KEY, hub.LICENSE_NOTICE
        onnx.save(model, folder / name)
    return folder


def test_page_shows_the_license_of_a_pretrained_export(licensed_models):
    pytest.importorskip("gradio")
    from vampnet_onnx import hub
    from vampnet_onnx.app import serve

    port = _free_port()
    blocks, studio = serve(licensed_models, port=port, block=False)
    try:
        [notice] = _page_license(f"http://127.0.0.1:{port}/")
    finally:
        blocks.close()
        studio.close()
    assert hub.LICENSE_NOTICE in notice


def test_page_of_models_without_a_license_shows_none(app):
    assert _page_license(app[0]) == []


def test_cli_app_without_gradio_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    for name in [n for n in sys.modules if n.startswith("vampnet_onnx.app")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["app", "--models", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vampnet-onnx app: error: gradio must be installed for the app: ")
    assert "pip install 'vampnet-onnx[app]'" in err


# --- in a browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    """A fresh page on the app, with every URL it requested in `page.requested`."""
    page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(app[0])
    page.wait_for_selector("#generate")
    yield page
    page.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("VAMPNET_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _only_loopback(urls: list[str]) -> None:
    hosts = {urlsplit(url).hostname for url in urls if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, f"requests to other hosts: {sorted(hosts)}"


def _input_file(page) -> str:
    """The file name the input audio component holds (from its download link)."""
    link = page.locator("#input a[data-testid=download-link]")
    link.wait_for()
    return link.get_attribute("href").rsplit("/", 1)[-1]


def _set_number(page, name: str, value: str) -> None:
    field = page.locator(f"#{name} input")
    field.fill(value)
    field.press("Enter")


def test_page_generates_two_variations_downloads_and_reuses_one(page, clip, artifacts):
    page.locator("#input input[type=file]").set_input_files(str(clip))
    assert _input_file(page) == "in.wav"
    page.locator("#preset input").click()
    page.get_by_role("option", name="small variation", exact=True).click()
    page.locator("#sampling").get_by_text("sampling (coarse stage)").click()
    page.locator("#recipe").get_by_text("mask recipe").click()
    assert page.locator("#periodic_prompt input").input_value() == "5"
    _set_number(page, "steps", str(STEPS))
    page.locator("#seed input, #seed textarea").fill("3")
    page.locator("#generate").click()
    for i in (1, 2):
        page.locator(f"#variation-{i} a[data-testid=download-link]").wait_for(timeout=120_000)
    assert page.locator("#seed-used input, #seed-used textarea").input_value() == "3"
    with page.expect_download() as download:
        page.locator("#file-1 a[download]").first.click()
    saved = artifacts / "variation-1.wav"
    download.value.save_as(saved)
    info = soundfile.info(saved)
    assert (info.subtype, info.samplerate, info.frames) == ("FLOAT", SR, round(SECONDS * SR))
    page.locator("#mask img").wait_for()
    # The finished page whole, and its first screen (the README's picture, docs/app.png).
    page.screenshot(path=artifacts / "app-full.png", full_page=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=artifacts / "app.png")
    page.locator("#reuse-2").click()
    page.wait_for_function(
        "() => document.querySelector('#input a[data-testid=download-link]')"
        "?.href.endsWith('variation-2-seed-4.wav')"
    )
    _only_loopback(page.requested)


def test_page_extends_the_input(page, clip, artifacts):
    page.locator("#input input[type=file]").set_input_files(str(clip))
    _input_file(page)
    page.locator("#sampling").get_by_text("sampling (coarse stage)").click()
    _set_number(page, "steps", str(STEPS))
    _set_number(page, "extend-seconds", "1")
    page.locator("#extend").click()
    with page.expect_download() as download:
        page.locator("#file-1 a[download]").first.click()
    saved = artifacts / "continuation.wav"
    download.value.save_as(saved)
    assert soundfile.info(saved).frames == round(SECONDS * SR) + SR
    assert page.locator("#variation-2").is_hidden()
    _only_loopback(page.requested)


def test_page_shows_a_bad_setting_as_an_error(page, clip):
    page.locator("#input input[type=file]").set_input_files(str(clip))
    _input_file(page)
    page.locator("#sampling").get_by_text("sampling (coarse stage)").click()
    _set_number(page, "top_p", "1.5")
    page.locator("#generate").click()
    page.get_by_text("vampnet-onnx app: top_p must be").first.wait_for()
    assert page.locator("#variation-1").is_hidden()
    _only_loopback(page.requested)


def _start_long_run(page, clip) -> None:
    """Start a LONG_STEPS run and wait until the page's progress bar counts its steps."""
    page.locator("#input input[type=file]").set_input_files(str(clip))
    _input_file(page)
    page.locator("#sampling").get_by_text("sampling (coarse stage)").click()
    _set_number(page, "steps", str(LONG_STEPS))
    page.locator("#generate").click()
    page.get_by_text(re.compile(r"^\d+/\S+ step")).first.wait_for(timeout=60_000)  # "12/10k step"


def test_page_stop_ends_a_long_run_and_the_page_recovers(page, clip):
    _start_long_run(page, clip)
    page.locator("#stop").click()
    # Within seconds, where the whole run would take about a minute.
    page.get_by_text("the generation was stopped").first.wait_for(timeout=15_000)
    _set_number(page, "steps", str(STEPS))
    page.locator("#generate").click()
    page.locator("#variation-2 a[data-testid=download-link]").wait_for(timeout=60_000)
    _only_loopback(page.requested)


def _generate_outcomes(monkeypatch, studio) -> list[str]:
    """Each later call of `studio.generate` as it ends: "done", or its exception's name."""
    outcomes: list[str] = []
    generate = studio.generate

    def recorded(*args, **kwargs):
        try:
            result = generate(*args, **kwargs)
        except BaseException as err:
            outcomes.append(type(err).__name__)
            raise
        outcomes.append("done")
        return result

    monkeypatch.setattr(studio, "generate", recorded)
    return outcomes


def _wait_for_queue(page, size: int) -> None:
    """Wait until `size` runs wait in the server's queue (behind the one that runs)."""
    page.wait_for_function(
        f"async () => (await (await fetch('gradio_api/queue/status')).json()).queue_size == {size}"
    )


def test_closing_the_tab_stops_its_run(page, clip, client, app, monkeypatch):
    outcomes = _generate_outcomes(monkeypatch, app[1])
    _start_long_run(page, clip)
    page.close(run_before_unload=True)
    # One generation at a time: this call runs once the closed tab's run has ended.
    client.predict(audio=_upload(clip), variations=1, steps=1, api_name="/vamp")
    assert outcomes == ["Cancelled", "done"]


def test_a_closed_tabs_waiting_run_never_starts(page, browser, app, clip, client, monkeypatch):
    outcomes = _generate_outcomes(monkeypatch, app[1])
    _start_long_run(page, clip)  # holds the one generation slot
    waiting = browser.new_page()
    waiting.goto(app[0])
    waiting.locator("#input input[type=file]").set_input_files(str(clip))
    _input_file(waiting)
    waiting.locator("#generate").click()
    _wait_for_queue(page, 1)
    waiting.close(run_before_unload=True)
    _wait_for_queue(page, 0)
    page.locator("#stop").click()
    # Queued after the closed tab's run: it ends once that run was started or dropped.
    client.predict(audio=_upload(clip), variations=1, steps=1, api_name="/vamp")
    assert outcomes == ["Cancelled", "done"]  # the long run stopped, the client's; no other
