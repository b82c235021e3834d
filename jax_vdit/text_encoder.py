"""Text conditioning for the release model: mT5-XXL embeddings (B, 512, 4096) and masks (B, 512).

Three sources, none of which downloads anything:

* precomputed embeddings in a ``.safetensors`` file (keys ``text``, ``text_mask`` and optionally
  ``negative_text``, ``negative_mask``), see :func:`load_embeddings`;
* ``transformers``' ``MT5EncoderModel`` from a local folder (optional extra ``jax-vdit[text]``), with the release's
  prompt template and negative prompt, see :func:`encode_with_mt5`;
* the toy world's deterministic stand-in (``encoder="toy"``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

PROMPT_TEMPLATE = "(masterpiece), (best quality), (ultra-detailed), {}. "
NEGATIVE_PROMPT = (
    "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
MAX_LENGTH = 512


class TextConditioningError(ValueError):
    """Text embeddings could not be produced or read; the message says what to provide."""


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``text`` (B, L, C) or (B, 1, L, C), ``text_mask`` (B, L), optional ``negative_text``/``negative_mask``."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise TextConditioningError(f"embeddings file not found: {path}")
    try:
        data = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise TextConditioningError(
            f"{path} is not a readable safetensors embeddings file ({err.__class__.__name__}: {err})") from err
    if "text" not in data:
        raise TextConditioningError(f"{path} has no 'text' tensor (found {sorted(data)})")
    out = {}
    for key in ("text", "negative_text"):
        if key in data:
            value = data[key].astype(np.float32)
            out[key] = value[:, 0] if value.ndim == 4 else value
            if out[key].ndim != 3:
                raise TextConditioningError(f"{key} must be (B, L, C) or (B, 1, L, C), got {data[key].shape}")
    for key, text_key in (("text_mask", "text"), ("negative_mask", "negative_text")):
        if text_key in out:
            mask = data.get(key)
            if mask is None:
                mask = np.ones(out[text_key].shape[:2], np.int32)
            mask = mask[:, 0] if mask.ndim == 3 else mask
            if mask.shape != out[text_key].shape[:2]:
                raise TextConditioningError(f"{key} shape {mask.shape} does not match {text_key} {out[text_key].shape}")
            out[key] = mask.astype(np.int32)
    return out


def clean_caption(text: str) -> str:
    """A light version of the release's caption cleaning: lower case, URLs and HTML removed, spaces collapsed.

    The release uses DeepFloyd-IF's cleaner (bs4 + ftfy); without those libraries it also falls back to this kind
    of cleaning. For exact parity, precompute embeddings with the release pipeline.
    """
    text = text.strip().lower()
    text = re.sub(r"https?://\S+|www\.\S+", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _check_encoder_dir(encoder_dir: Path) -> None:
    if not encoder_dir.is_dir():
        raise TextConditioningError(
            f"mT5 encoder folder not found: {encoder_dir}. Provide a local copy of google/mt5-xxl (tokenizer + "
            "MT5EncoderModel weights) or precomputed embeddings with --embeddings"
        )


class TextEncoder:
    """Prompts -> embeddings, loaded once and reused: ``"toy"`` (the toy world's stand-in) or a local
    ``google/mt5-xxl`` folder (``transformers``' ``MT5EncoderModel``, bf16, loaded on the first :meth:`encode`).

    ``default_negative_prompt``: the release's negative prompt for mT5, "" for the toy stand-in.
    """

    def __init__(self, source: str | Path, *, max_length: int = MAX_LENGTH, template: bool = True):
        self.source = str(source)
        self.is_toy = self.source == "toy"
        if not self.is_toy:
            _check_encoder_dir(Path(source))
        self.max_length = max_length
        self.template = template
        self._loaded = None

    def __repr__(self) -> str:
        return f"TextEncoder({self.source!r})"

    @property
    def default_negative_prompt(self) -> str:
        return "" if self.is_toy else NEGATIVE_PROMPT

    def _mt5(self):
        if self._loaded is None:
            try:
                import torch
                from transformers import AutoTokenizer, MT5EncoderModel
            except ImportError as err:
                raise TextConditioningError(
                    "encoding prompts needs transformers and torch (pip install 'jax-vdit[text]'), or pass "
                    "precomputed embeddings"
                ) from err
            tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
            model = MT5EncoderModel.from_pretrained(self.source, local_files_only=True, torch_dtype=torch.bfloat16)
            self._loaded = (tokenizer, model)
        return self._loaded

    def _encode_mt5(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        tokenizer, model = self._mt5()
        tokens = tokenizer(texts, max_length=self.max_length, padding="max_length", truncation=True,
                           add_special_tokens=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden.float().numpy(), tokens.attention_mask.numpy().astype(np.int32)

    def encode_texts(self, texts: list[str], *, template: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, L, C) float32 embeddings and (B, L) int32 masks; prompts get the release template (mT5 only)."""
        if self.is_toy:
            from jax_vdit.toy.world import encode_captions, get_config

            text, mask = encode_captions(list(texts), get_config(), on_unknown="unk")
            return np.asarray(text, np.float32), np.asarray(mask, np.int32)
        template = self.template if template is None else template
        return self._encode_mt5([PROMPT_TEMPLATE.format(clean_caption(t)) if template else clean_caption(t)
                                 for t in texts])

    def encode(self, prompts: list[str], *, negative_prompt: str | None = None) -> dict[str, np.ndarray]:
        """``text`` (B, L, C), ``text_mask`` (B, L) and, with ``negative_prompt`` (encoded without the template,
        as the release does), ``negative_text`` (1, L, C) and ``negative_mask`` (1, L)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        text, mask = self.encode_texts(list(prompts))
        out = {"text": text, "text_mask": mask}
        if negative_prompt is not None:
            out["negative_text"], out["negative_mask"] = self.encode_texts([negative_prompt], template=False)
        return out


def encode_with_mt5(
    prompts: list[str], encoder_dir: str | Path, *, template: bool = True, max_length: int = MAX_LENGTH,
    negative_prompt: str | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Encode prompts with a local ``google/mt5-xxl`` encoder folder -> (B, L, 4096) float32, (B, L) int32.

    With ``negative_prompt`` (encoded without the template, as the release does) the same loaded encoder also
    returns its (1, L, 4096) embedding and (1, L) mask after the prompts'.
    """
    encoder = TextEncoder(encoder_dir, max_length=max_length, template=template)
    data = encoder.encode(prompts, negative_prompt=negative_prompt)
    if negative_prompt is None:
        return data["text"], data["text_mask"]
    return data["text"], data["text_mask"], data["negative_text"], data["negative_mask"]


def encode_prompts(
    prompts: list[str], encoder: str, *, negative_prompt: str | None = None, caption_channels: int | None = None
) -> dict[str, np.ndarray]:
    """Embeddings for ``prompts`` (and the negative prompt: default the release's for mT5, "" for the toy
    stand-in) from ``encoder`` = "toy" or a local mT5 folder."""
    text_encoder = TextEncoder(encoder)
    negative = text_encoder.default_negative_prompt if negative_prompt is None else negative_prompt
    data = text_encoder.encode(prompts, negative_prompt=negative)
    if caption_channels is not None and data["text"].shape[-1] != caption_channels:
        raise TextConditioningError(
            f"the text encoder gives {data['text'].shape[-1]}-channel embeddings but the model expects "
            f"{caption_channels}"
        )
    return data
