"""Where a pretrained model lives: a local folder, a folder of the local Hugging Face cache, or a Hub repo id.

:func:`resolve_pretrained` turns any of these into a local folder and checks that the files asked for are there:

* a local folder is used as it is (a cache folder ``models--OWNER--NAME`` is followed to its snapshot);
* a repo id ``OWNER/NAME`` goes through ``huggingface_hub.snapshot_download``: downloaded (only the subfolders
  asked for) when online; read from the local cache when offline (``HF_HUB_OFFLINE=1`` or
  ``local_files_only=True``) or when the Hub cannot be reached.

Errors name the repo, the place looked in and every missing file. ``huggingface_hub`` is imported only when a
repo id has to be resolved.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

RELEASE_REPO = "LanguageBind/Open-Sora-Plan-v1.2.0"  # holds 29x480p/, 29x720p/, 93x480p/, 93x720p/, vae/
TEXT_ENCODER_REPO = "google/mt5-xxl"
RELEASE_VARIANTS = ("29x480p", "29x720p", "93x480p", "93x720p")
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.ckpt", "*.pt", "*.bin", "*.pth")
ORBAX_MARKER = "jax_vdit_model.json"  # our orbax model checkpoints (jax_vdit.io.checkpoints.MODEL_CONFIG_NAME)


class PretrainedNotFoundError(FileNotFoundError):
    """A model could not be found locally, in the Hugging Face cache or on the Hub; the message says where it
    looked and which files are missing."""


def looks_like_repo_id(name: str) -> bool:
    """``OWNER/NAME`` with no other path parts (not absolute, no ``./``, ``~`` or backslash)."""
    parts = name.split("/")
    return (len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name
            and not any(p in (".", "..") for p in parts))


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or env


def _cache_snapshot(folder: Path, revision: str | None) -> Path:
    """A cache folder ``models--OWNER--NAME`` -> its snapshot for ``revision`` (a ref such as ``main`` or a hash)."""
    revision = revision or "main"
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir():
        have = sorted(p.name for p in (folder / "snapshots").glob("*"))
        raise PretrainedNotFoundError(f"{folder} is a Hugging Face cache folder with no snapshot for revision "
                                      f"{revision!r} (snapshots: {have})")
    return snapshot


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds model weights of a format we read (or is our orbax checkpoint)."""
    return (folder / ORBAX_MARKER).is_file() or any(any(folder.glob(p)) for p in WEIGHT_PATTERNS)


def missing_files(root: Path, subfolders: Sequence[str]) -> list[str]:
    """The files each of ``subfolders`` (relative to ``root``; "" for ``root`` itself) lacks: ``config.json``
    and some weights."""
    missing = []
    for sub in subfolders:
        folder = root / sub if sub else root
        prefix = f"{sub}/" if sub else ""
        if (folder / ORBAX_MARKER).is_file():
            continue
        if not (folder / "config.json").is_file():
            missing.append(f"{prefix}config.json")
        if not folder.is_dir() or not has_weights(folder):
            missing.append(f"{prefix}<weights: diffusion_pytorch_model.safetensors, a *.safetensors.index.json or "
                           "a .ckpt/.pt/.bin>")
    return missing


def resolve_pretrained(
    path_or_repo_id: str | os.PathLike,
    *,
    subfolders: Sequence[str] = (),
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local folder holding ``path_or_repo_id``; downloads (only ``subfolders``) when it is a repo id and the
    Hub is reachable. ``subfolders`` are checked for ``config.json`` and weights; every missing file is named.

    Raises :class:`PretrainedNotFoundError` (a ``FileNotFoundError``) when nothing usable is found.
    """
    name = os.fspath(path_or_repo_id)
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise PretrainedNotFoundError(f"{local} is a file; give the folder that holds the model")
        root = _cache_snapshot(local, revision) if (local / "snapshots").is_dir() and local.name.startswith(
            "models--") else local
        where = str(root)
    elif looks_like_repo_id(name):
        root = _from_hub(name, subfolders=subfolders, revision=revision, cache_dir=cache_dir,
                         local_files_only=local_files_only, token=token)
        where = f"Hugging Face repo {name} (snapshot {root})"
    else:
        raise PretrainedNotFoundError(f"no model at {local}: not a local folder and not a Hugging Face repo id "
                                      "(OWNER/NAME, e.g. LanguageBind/Open-Sora-Plan-v1.2.0)")
    missing = missing_files(root, subfolders)
    if missing:
        raise PretrainedNotFoundError(f"{where} is missing {', '.join(missing)}")
    return root


def _from_hub(repo_id: str, *, subfolders: Sequence[str], revision: str | None, cache_dir, local_files_only,
              token) -> Path:
    import huggingface_hub
    from huggingface_hub import constants, errors

    patterns = [f"{s}/*" for s in subfolders if s] + (["*"] if "" in subfolders else []) or None
    kwargs = dict(revision=revision, cache_dir=cache_dir, allow_patterns=patterns, token=token)
    cache = cache_dir or constants.HF_HUB_CACHE
    if not _offline(local_files_only):
        try:
            return Path(huggingface_hub.snapshot_download(repo_id, **kwargs))
        except (errors.RepositoryNotFoundError, errors.GatedRepoError, errors.RevisionNotFoundError) as err:
            raise PretrainedNotFoundError(f"Hugging Face repo {repo_id} (revision {revision or 'main'}) cannot be "
                                          f"used: {type(err).__name__}: {str(err).splitlines()[0]}") from err
        except (OSError, errors.HfHubHTTPError, errors.LocalEntryNotFoundError) as err:
            warnings.warn(f"could not download {repo_id} ({type(err).__name__}: {str(err).splitlines()[0]}); "
                          f"trying the local cache {cache}", stacklevel=3)
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, local_files_only=True, **kwargs))
    except (OSError, errors.LocalEntryNotFoundError) as err:  # LocalEntryNotFoundError is not always an OSError
        wanted = ", ".join(f"{s}/" for s in subfolders if s) or "the whole repo"
        raise PretrainedNotFoundError(
            f"Hugging Face repo {repo_id} is not in the local cache {cache} (needed: {wanted}) and was not "
            f"downloaded ({'offline' if _offline(local_files_only) else 'the Hub could not be reached'}); run "
            f"`hf download {repo_id}` on a machine with network access, or pass a local folder"
        ) from err
