"""VampNet's released checkpoints from the Hugging Face Hub (``export --pretrained``).

The files and their layout are upstream's (docs/model.md §1.9): ``codec.pth``, ``coarse.pth``,
``c2f.pth`` and ``wavebeat.pth`` at the top of `DEFAULT_REPO`, and fine-tunes as whole
``coarse.pth`` / ``c2f.pth`` pairs under ``loras/NAME/``. Downloads go to the hub cache
(``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` reads only from it), so a second export
downloads nothing. The weights are licensed CC BY-NC-SA 4.0, and graphs exported from them are
derived works: `LICENSE_NOTICE` is printed by the CLI and written into each graph's metadata.

``huggingface_hub`` is imported only when a function here runs (it is part of the ``export``
extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_REPO",
    "LICENSE",
    "LICENSE_NOTICE",
    "Pretrained",
    "download",
    "list_loras",
    "provenance",
]

#: The repository upstream downloads from (the ``DEFAULT_HF_MODEL_REPO`` file of
#: hugofloresgarcia/vampnet at 72e2675).
DEFAULT_REPO = "hugggof/vampnet"
#: The base models' name among the fine-tunes: ``--lora default`` is no fine-tune.
BASE_NAME = "default"
MODEL_FILES = ("coarse.pth", "c2f.pth")
CODEC_FILE = "codec.pth"
WAVEBEAT_FILE = "wavebeat.pth"
LORA_FOLDER = "loras"
LICENSE = "CC BY-NC-SA 4.0"
LICENSE_NOTICE = (
    f"VampNet's pretrained weights are licensed {LICENSE} (attribution, non-commercial, "
    "share-alike): graphs exported from them are derived from the weights and carry the same "
    "license; see https://creativecommons.org/licenses/by-nc-sa/4.0/"
)


@dataclass(frozen=True)
class Pretrained:
    """Local paths of downloaded checkpoints (in the hub cache) and where they came from:
    `revision` is the commit the files were resolved to."""

    codec: Path
    coarse: Path
    c2f: Path
    wavebeat: Path
    repo: str
    revision: str
    lora: str


class HubError(OSError):
    """A download or listing failed; the message names the repository, revision and file."""


def _hub():
    try:
        import huggingface_hub
    except ImportError as err:
        raise ImportError(
            "vampnet_onnx.hub needs huggingface_hub: pip install 'vampnet-onnx[export]'"
        ) from err
    return huggingface_hub


def _check_name(value: object, where: str, name: str) -> str:
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ValueError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value


def _check_lora(lora: object, where: str, name: str) -> str:
    lora = _check_name(lora, where, name)
    if "/" in lora or "\\" in lora or lora in (".", ".."):
        raise ValueError(f"{where}: {name} must be a fine-tune's name (no path), got {lora!r}")
    return lora


def _described(err: Exception, repo: str, revision: str | None, filename: str) -> str:
    """One line saying what failed, for any huggingface_hub or network error."""
    errors = _hub().errors
    at = f"{repo}@{revision or 'main'}"
    if isinstance(err, errors.LocalEntryNotFoundError):
        return (
            f"cannot download '{filename}' from {at}: offline or the Hub is unreachable, and "
            "it is not in the hub cache"
        )
    if isinstance(err, errors.OfflineModeIsEnabled):
        return f"cannot reach {at}: offline mode (HF_HUB_OFFLINE) is on"
    if isinstance(err, errors.RepositoryNotFoundError):
        return f"repository '{repo}' not found (or private)"
    if isinstance(err, errors.RevisionNotFoundError):
        return f"revision '{revision}' not found in '{repo}'"
    if isinstance(err, errors.EntryNotFoundError):
        return f"file '{filename}' not found in {at}"
    first = str(err).strip().splitlines()
    return f"cannot download '{filename}' from {at}: {first[0] if first else type(err).__name__}"


def _fetch(
    repo: str,
    revision: str | None,
    filename: str,
    cache_dir: str | Path | None,
    endpoint: str | None,
) -> Path:
    hub = _hub()
    try:
        path = hub.hf_hub_download(
            repo, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint
        )
        return Path(path)
    except Exception as err:  # the hub's errors, and the network's (httpx): one clear line
        raise HubError(f"hub.download: {_described(err, repo, revision, filename)}") from err


def _snapshot(path: Path) -> str:
    """The commit of a file in the hub cache (``.../snapshots/<commit>/<file>``)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown"


def download(
    *,
    repo: str = DEFAULT_REPO,
    revision: str | None = None,
    lora: str = BASE_NAME,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Pretrained:
    """Download (or find in the hub cache) the checkpoints an export needs.

    Args:
        repo: the Hub repository (default upstream's `DEFAULT_REPO`).
        revision: a branch, tag or commit (None: the repository's default branch).
        lora: a fine-tune's name under ``loras/`` (`list_loras`), or "default" for the base
            models; a fine-tune replaces coarse.pth and c2f.pth, the codec and WaveBeat are
            the base ones.
        cache_dir: the hub cache folder (None: huggingface_hub's, ``HF_HUB_CACHE``).
        endpoint: the Hub's URL (None: huggingface_hub's, ``HF_ENDPOINT``), e.g. a mirror.

    Raises:
        ValueError: a malformed argument.
        HubError: a file could not be had (offline and not cached, missing file, unknown
            revision or repository); the message names the file.
    """
    where = "hub.download"
    repo = _check_name(repo, where, "repo")
    if revision is not None:
        _check_name(revision, where, "revision")
    lora = _check_lora(lora, where, "lora")
    folder = "" if lora == BASE_NAME else f"{LORA_FOLDER}/{lora}/"
    coarse, c2f, codec, wavebeat = (
        _fetch(repo, revision, name, cache_dir, endpoint)
        for name in (folder + MODEL_FILES[0], folder + MODEL_FILES[1], CODEC_FILE, WAVEBEAT_FILE)
    )
    return Pretrained(
        codec=codec,
        coarse=coarse,
        c2f=c2f,
        wavebeat=wavebeat,
        repo=repo,
        revision=_snapshot(coarse),
        lora=lora,
    )


def list_loras(
    *, repo: str = DEFAULT_REPO, revision: str | None = None, endpoint: str | None = None
) -> list[str]:
    """The fine-tunes of `repo`: "default" (the base models) and every ``loras/NAME/`` that
    holds both coarse.pth and c2f.pth, sorted. Needs the network (listing is not cached).
    endpoint: as in `download`.

    Raises:
        HubError: the listing failed (offline, unknown repository or revision).
    """
    where = "hub.list_loras"
    repo = _check_name(repo, where, "repo")
    if revision is not None:
        _check_name(revision, where, "revision")
    hub = _hub()
    try:
        entries = list(
            hub.HfApi(endpoint=endpoint).list_repo_tree(
                repo, path_in_repo=LORA_FOLDER, recursive=True, revision=revision
            )
        )
    except hub.errors.RemoteEntryNotFoundError:
        return [BASE_NAME]  # a repository without fine-tunes
    except Exception as err:
        raise HubError(f"{where}: {_described(err, repo, revision, LORA_FOLDER + '/')}") from err
    files: dict[str, set[str]] = {}
    for entry in entries:
        parts = entry.path.split("/")
        if len(parts) == 3 and parts[0] == LORA_FOLDER:
            files.setdefault(parts[1], set()).add(parts[2])
    complete = sorted(name for name, found in files.items() if set(MODEL_FILES) <= found)
    return [BASE_NAME, *complete]


def provenance(pretrained: Pretrained) -> dict[str, str]:
    """Metadata for graphs exported from `pretrained`: the license and where the weights came
    from (`contracts.LICENSE_KEY`, `contracts.SOURCE_KEY`)."""
    from .contracts import LICENSE_KEY, SOURCE_KEY

    lora = "" if pretrained.lora == BASE_NAME else f", fine-tune {pretrained.lora}"
    source = f"hf://{pretrained.repo}@{pretrained.revision}{lora}"
    return {LICENSE_KEY: LICENSE_NOTICE, SOURCE_KEY: source}
