"""Text-encoder stand-in: determinism, mask semantics, empty caption, word order, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jax_vdit.toy.world import ToyTextEncoder, caption_vocabulary, encode_captions, get_config, tokenize, vocabulary
from jax_vdit.toy.world.text import EOS_ID, PAD_ID, embedding_table, position_code

CFG = get_config("toy-9x24x24")
CAPS = [
    "a red circle moving left quickly",
    "a blue square bouncing up-right slowly and a green triangle standing still",
    "",
]


def test_shapes_dtypes_and_determinism():
    emb, mask = encode_captions(CAPS, CFG)
    assert emb.shape == (3, CFG.max_text_len, CFG.caption_channels) == (3, 16, 32)
    assert emb.dtype == np.float32 and mask.dtype == np.int32 and mask.shape == (3, 16)
    emb2, mask2 = encode_captions(CAPS, CFG)
    np.testing.assert_array_equal(emb, emb2)
    np.testing.assert_array_equal(mask, mask2)
    # the table depends only on (vocabulary, caption_channels, text_seed), not on cache state or other fields
    other = dataclasses.replace(CFG, seed=5, num_heldout=7)
    np.testing.assert_array_equal(embedding_table(other), embedding_table(CFG))
    np.testing.assert_array_equal(encode_captions(CAPS, other)[0], emb)
    assert not np.allclose(embedding_table(dataclasses.replace(CFG, text_seed=1)), embedding_table(CFG))
    enc = ToyTextEncoder(CFG)
    np.testing.assert_array_equal(enc(CAPS)[0], emb)
    assert enc.caption_channels == 32 and enc.max_length == 16


def test_mask_semantics_and_padding():
    ids, mask = tokenize(CAPS, CFG)
    for cap, row_ids, row_mask in zip(CAPS, ids, mask):
        n = len(cap.split()) + 1  # words + EOS
        assert row_mask.tolist() == [1] * n + [0] * (16 - n)
        assert row_ids[n - 1] == EOS_ID
        assert np.all(row_ids[n:] == PAD_ID)
        assert np.all(row_ids[: n - 1] > 2)
    emb, _ = encode_captions(CAPS, CFG)
    assert np.all(emb[mask == 0] == 0.0)  # padding is exactly zero
    assert np.all(np.abs(emb[mask == 1]).sum(-1) > 0)
    # roughly unit-variance features on valid tokens
    assert 0.6 < emb[mask == 1].std() < 1.4


def test_empty_caption_is_one_valid_eos_token():
    ids, mask = tokenize([""], CFG)
    assert mask.sum() == 1 and mask[0, 0] == 1 and ids[0, 0] == EOS_ID
    emb, _ = encode_captions(["", "   "], CFG)
    np.testing.assert_array_equal(emb[0], emb[1])
    assert np.abs(emb[0, 0]).sum() > 0


def test_different_captions_and_word_order_give_different_embeddings():
    a = "a red circle moving left quickly and a blue square standing still"
    b = "a blue circle moving left quickly and a red square standing still"  # same words, other order
    c = "a red circle moving right quickly and a blue square standing still"
    emb, mask = encode_captions([a, b, c], CFG)
    np.testing.assert_array_equal(mask[0], mask[1])
    assert sorted(a.split()) == sorted(b.split())
    assert not np.allclose(emb[0], emb[1])  # order is recoverable thanks to the position code
    assert not np.allclose(emb[0], emb[2])
    diff_pos = np.flatnonzero(np.abs(emb[0] - emb[1]).max(-1) > 0)
    assert diff_pos.tolist() == [1, 8]  # exactly where the colour words were swapped
    # the word sequence (order included) is recoverable from the embeddings: remove the position code, then
    # nearest table row
    table = embedding_table(CFG)
    pos = position_code(CFG)
    for cap, e in zip([a, b, c], emb):
        n = len(cap.split())
        words = e[:n] * np.sqrt(1.5) - pos[:n]
        dec = np.argmin(((words[:, None, :] - table[None]) ** 2).sum(-1), axis=1)
        assert [vocabulary(CFG)[i] for i in dec] == cap.split()
    # the same word at the same position embeds identically across captions
    np.testing.assert_array_equal(emb[0, :3], emb[2, :3])


def test_vocabulary_covers_all_captions_and_is_small():
    vocab = vocabulary(CFG)
    assert vocab[:3] == ("<pad>", "<eos>", "<unk>")
    assert len(vocab) == len(set(vocab)) < 64
    words = set(caption_vocabulary(CFG))
    for w in ("a", "and", "moving", "bouncing", "standing", "still", "slowly", "quickly", "up-left"):
        assert w in words
    assert set(CFG.colours) <= words and set(CFG.shapes) <= words


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown word 'magenta'"):
        tokenize(["a magenta circle"], CFG)
    ids, mask = tokenize(["a magenta circle"], CFG, on_unknown="unk")
    assert ids[0, 1] == 2 and mask.sum() == 4
    with pytest.raises(ValueError, match="max_text_len=16"):
        tokenize([" ".join(["a"] * 16)], CFG)
    with pytest.raises(TypeError, match="single str"):
        tokenize("a red circle", CFG)  # type: ignore[arg-type]
