"""The mT5 text path on a tiny, randomly initialised MT5 encoder built here (a sentencepiece vocabulary trained on a
few sentences, ``MT5EncoderModel`` with 2 layers of width 32), saved as a local folder the way google/mt5-xxl is
laid out: ``TextEncoder`` (prompts for sampling, release template and negative prompt), ``mt5_text_source``
(captions for ``vdit prepare-data``) and the pipeline's ``text_encoder=`` argument all read it and give what
transformers gives. Skipped where the optional ``jax-vdit[text]`` extra (transformers, sentencepiece, torch) is
not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")
torch = pytest.importorskip("torch")

from jax_vdit.data.text import mt5_text_source  # noqa: E402
from jax_vdit.text_encoder import NEGATIVE_PROMPT, PROMPT_TEMPLATE, TextEncoder, clean_caption  # noqa: E402

WORDS = ("a red ball moves left across the frame while a blue square bounces slowly near the top of the scene "
         "masterpiece best quality ultra detailed nsfw lowres bad anatomy hands text error missing fingers extra "
         "digit fewer cropped worst low normal jpeg artifacts signature watermark username blurry").split()
MAX_LEN = 24


@pytest.fixture(scope="module")
def tiny_mt5(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-mt5")
    rng = np.random.default_rng(0)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(400)) + "\n")
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=64,
                                             model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             minloglevel=2)
    corpus.unlink()
    tokenizer = transformers.T5Tokenizer(vocab_file=str(folder / "spiece.model"), extra_ids=0)
    tokenizer.save_pretrained(folder)
    (folder / "spiece.vocab").unlink(missing_ok=True)
    torch.manual_seed(0)
    config = transformers.MT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                    num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                    feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)
    transformers.MT5EncoderModel(config).save_pretrained(folder)
    return folder


def _reference(folder: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """What transformers gives for ``texts`` (bf16 encoder, padded to MAX_LEN), independently of our wrapper."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.MT5EncoderModel.from_pretrained(folder, local_files_only=True).to(torch.bfloat16)
    tokens = tokenizer(texts, max_length=MAX_LEN, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    return hidden.float().numpy(), tokens.attention_mask.numpy()


def test_prompts_get_the_release_template_and_the_negative_prompt(tiny_mt5):
    encoder = TextEncoder(tiny_mt5, max_length=MAX_LEN)
    out = encoder.encode(["A red ball moves LEFT", "a blue square bounces"], negative_prompt=NEGATIVE_PROMPT)
    assert out["text"].shape == (2, MAX_LEN, 32) and out["text"].dtype == np.float32
    assert out["text_mask"].shape == (2, MAX_LEN) and out["negative_text"].shape == (1, MAX_LEN, 32)
    text, mask = _reference(tiny_mt5, [PROMPT_TEMPLATE.format(clean_caption(p)) for p in
                                       ("A red ball moves LEFT", "a blue square bounces")])
    np.testing.assert_array_equal(out["text_mask"], mask)
    np.testing.assert_allclose(out["text"], text, rtol=0, atol=1e-6)
    neg, neg_mask = _reference(tiny_mt5, [clean_caption(NEGATIVE_PROMPT)])  # the release: no template
    np.testing.assert_allclose(out["negative_text"], neg, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["negative_mask"], neg_mask)
    assert 0 < mask[0].sum() < MAX_LEN  # padded: the mask marks the real tokens only


def test_prepare_data_captions_are_encoded_without_template_in_batches(tiny_mt5):
    source = mt5_text_source(tiny_mt5, batch_size=2, max_length=MAX_LEN)
    captions = ["a red ball", "the blue square bounces slowly", "a ball near the top"]
    text, mask = source.encode(captions)
    ref_text, ref_mask = _reference(tiny_mt5, [clean_caption(c) for c in captions])
    np.testing.assert_allclose(text, ref_text, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(mask, ref_mask)
    u_text, u_mask = source.unconditional()
    assert u_text.shape[-2:] == (MAX_LEN, 32) and np.asarray(u_mask).sum() >= 1  # the empty caption: one eos
    assert source.name.startswith("mt5:")


def test_the_pipeline_encodes_prompts_with_a_local_mt5_folder(tiny_mt5):
    import jax.numpy as jnp

    from jax_vdit.config import get_preset
    from jax_vdit.model import random_model
    from jax_vdit.pipeline import OpenSoraPipeline

    cfg = get_preset("tiny", caption_channels=32, param_dtype="float32", compute_dtype="float32")
    pipe = OpenSoraPipeline(transformer=random_model(cfg, seed=0),
                            text_encoder=TextEncoder(tiny_mt5, max_length=MAX_LEN))
    out = pipe("a red ball moves left", num_inference_steps=2, guidance_scale=4.0, seed=3, output_type="latent",
               num_frames=5, height=32, width=32)
    assert out.latents.shape[0] == 1 and np.isfinite(out.latents).all()
    record = out.records[0]
    assert record["prompt"] == "a red ball moves left" and record["negative_prompt"] == NEGATIVE_PROMPT
    assert jnp.asarray(out.latents).dtype == jnp.float32
