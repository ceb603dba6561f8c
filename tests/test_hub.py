"""Pretrained downloads (`vampnet_onnx.hub`, ``export --pretrained``) against a local fake Hub:
the real huggingface_hub code path, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from fake_hub import FakeHub, FakeRepo
from vampnet_onnx import cli, configs, contracts, hub, testing
from vampnet_onnx.configs import TINY_WAVEBEAT_HPARAMS


def _checkpoint_bytes(write, kwargs, seed: int, tmp_path: Path) -> bytes:
    path = write(tmp_path / f"ckpt-{seed}.pth", kwargs, seed=seed)
    return path.read_bytes()


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> dict[str, bytes]:
    """Upstream's layout with tiny checkpoints: base models, a complete fine-tune ("jazz")
    and an incomplete one ("half", no c2f.pth)."""
    tmp = tmp_path_factory.mktemp("hub-files")
    vampnet = testing.write_vampnet_checkpoint
    wavebeat = testing.write_wavebeat_checkpoint(tmp / "wavebeat.pth", TINY_WAVEBEAT_HPARAMS)
    return {
        "codec.pth": _checkpoint_bytes(
            testing.write_codec_checkpoint, configs.SMALL_CODEC_KWARGS, 3, tmp
        ),
        "coarse.pth": _checkpoint_bytes(vampnet, configs.TINY_COARSE_KWARGS, 1, tmp),
        "c2f.pth": _checkpoint_bytes(vampnet, configs.TINY_C2F_KWARGS, 2, tmp),
        "wavebeat.pth": wavebeat.read_bytes(),
        "loras/jazz/coarse.pth": _checkpoint_bytes(vampnet, configs.TINY_COARSE_KWARGS, 11, tmp),
        "loras/jazz/c2f.pth": _checkpoint_bytes(vampnet, configs.TINY_C2F_KWARGS, 12, tmp),
        "loras/half/coarse.pth": b"not a checkpoint",
        "README.md": b"fake",
    }


@pytest.fixture
def fake_hub(repo_files):
    repo = FakeRepo(dict(repo_files))
    with FakeHub({hub.DEFAULT_REPO: repo}) as server:
        yield server, repo


def test_download_fetches_upstreams_files_into_the_cache(fake_hub, repo_files, tmp_path):
    server, repo = fake_hub
    got = hub.download(cache_dir=tmp_path / "cache", endpoint=server.endpoint)
    for name in ("codec", "coarse", "c2f", "wavebeat"):
        path = getattr(got, name)
        assert path.read_bytes() == repo_files[f"{name}.pth"]
        assert (tmp_path / "cache") in path.parents
    assert got.revision == repo.commit and got.lora == hub.BASE_NAME


def test_a_second_download_reads_the_cache_offline(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub

    server, repo = fake_hub
    first = hub.download(cache_dir=tmp_path, endpoint=server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    downloads = len(repo.downloads)
    again = hub.download(cache_dir=tmp_path, endpoint=server.endpoint)
    assert again == first
    assert len(repo.downloads) == downloads


def test_a_fine_tune_replaces_coarse_and_c2f_only(fake_hub, repo_files, tmp_path):
    server, _ = fake_hub
    got = hub.download(lora="jazz", cache_dir=tmp_path, endpoint=server.endpoint)
    assert got.coarse.read_bytes() == repo_files["loras/jazz/coarse.pth"]
    assert got.c2f.read_bytes() == repo_files["loras/jazz/c2f.pth"]
    assert got.codec.read_bytes() == repo_files["codec.pth"]


def test_list_loras_keeps_complete_fine_tunes(fake_hub):
    server, _ = fake_hub
    assert hub.list_loras(endpoint=server.endpoint) == ["default", "jazz"]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"lora": "half"}, "file 'loras/half/c2f.pth' not found in hugggof/vampnet@main"),
        ({"revision": "v9"}, "revision 'v9' not found in 'hugggof/vampnet'"),
        ({"repo": "someone/else"}, "repository 'someone/else' not found (or private)"),
    ],
)
def test_download_errors_name_what_is_missing(fake_hub, tmp_path, kwargs, expected):
    server, _ = fake_hub
    with pytest.raises(hub.HubError) as err:
        hub.download(cache_dir=tmp_path, endpoint=server.endpoint, **kwargs)
    assert str(err.value) == f"hub.download: {expected}"


def test_offline_without_a_cache_names_the_file(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.HubError) as err:
        hub.download(cache_dir=tmp_path, endpoint="http://127.0.0.1:9")
    message = str(err.value)
    assert message.startswith("hub.download: cannot download 'coarse.pth' from hugggof/vampnet")
    assert "not in the hub cache" in message


def test_an_unreachable_hub_is_one_line_naming_the_file(tmp_path):
    # Port 9 (discard) is closed on localhost: a connection error, not a hang.
    with pytest.raises(hub.HubError) as err:
        hub.download(cache_dir=tmp_path, endpoint="http://127.0.0.1:9")
    assert "'coarse.pth'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"lora": "../x"}, "lora"), ({"repo": ""}, "repo"), ({"revision": 3}, "revision")],
)
def test_malformed_arguments_are_rejected_before_any_request(kwargs, name):
    with pytest.raises(ValueError, match=f"^hub.download: {name} must be"):
        hub.download(**kwargs)


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vampnet_onnx.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_export_pretrained_exports_and_stamps_the_license(fake_hub, tmp_path):
    server, repo = fake_hub
    env = {"HF_ENDPOINT": server.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "models"
    done = _run_cli(["export", "--pretrained", "--lora", "jazz", "--out", str(out)], env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(hub.LICENSE) == 1
    graphs = sorted(out.glob("*.onnx"))
    assert {g.name for g in graphs} >= {*contracts.MODEL_FILES, contracts.WAVEBEAT_FILE}
    for graph in graphs:
        props = {p.key: p.value for p in onnx.load(graph, load_external_data=False).metadata_props}
        assert props[contracts.LICENSE_KEY] == hub.LICENSE_NOTICE
        assert (
            props[contracts.SOURCE_KEY] == f"hf://{hub.DEFAULT_REPO}@{repo.commit}, fine-tune jazz"
        )


def test_list_loras_from_the_cli(fake_hub):
    server, _ = fake_hub
    done = _run_cli(["export", "--list-loras"], {"HF_ENDPOINT": server.endpoint})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["default", "jazz"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pretrained", "--codec", "c.pth"], "--pretrained must not come with --codec"),
        (["--revision", "v1", "--codec", "c.pth"], "--revision must come with --pretrained"),
        (["--coarse", "c.pth"], "--codec must be given (or --pretrained), got neither"),
    ],
)
def test_export_hub_flag_errors(tmp_path, capsys, argv, message):
    assert cli.main(["export", *argv, "--out", str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err.startswith(f"vampnet-onnx export: error: {message}")


def test_export_without_out_says_so(capsys):
    assert cli.main(["export", "--pretrained"]) == 1
    assert "--out must be given" in capsys.readouterr().err
