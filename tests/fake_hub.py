"""A fake Hugging Face cache with the release repo's layout (``models--LanguageBind--Open-Sora-Plan-v1.2.0``), holding
the tiny golden transformer as ``29x720p/`` and the tiny golden VAE as ``vae/``; and tiny embeddings for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "data" / "golden"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def build_fake_hub_cache(cache: Path, *, with_vae: bool = True) -> Path:
    """Write the cache under ``cache`` (refs/main -> snapshots/COMMIT); returns the snapshot folder."""
    repo = cache / "models--LanguageBind--Open-Sora-Plan-v1.2.0"
    snapshot = repo / "snapshots" / COMMIT
    parts = {"29x720p": GOLDEN / "opensora_v12" / "tiny_a"}
    if with_vae:
        parts["vae"] = GOLDEN / "causalvae_v12" / "tiny_a"
    for sub, src in parts.items():
        (snapshot / sub).mkdir(parents=True)
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            shutil.copy(src / name, snapshot / sub / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def embeddings(batch: int = 2, *, negative: bool = True, seed: int = 0) -> dict:
    """Random (B, 7, 64) embeddings for the tiny golden transformer; the last prompt is padded after 5 tokens."""
    rng = np.random.default_rng(seed)
    out = {"text": rng.standard_normal((batch, 7, 64)).astype(np.float32), "text_mask": np.ones((batch, 7), np.int32)}
    out["text_mask"][-1, 5:] = 0
    if negative:
        out |= {"negative_text": rng.standard_normal((1, 7, 64)).astype(np.float32),
                "negative_mask": np.ones((1, 7), np.int32)}
    return out
