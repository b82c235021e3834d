"""prepare-data: real videos + captions -> ArrayRecord shards -> Grain batches (tiny golden VAE, toy text encoder).

The dataset: 6 usable clips (moving squares, 32x48 at 8 fps, one at 16 fps), one unreadable file, one too-short
clip, one too-small clip, one missing file, one empty caption; clips of 5 frames at 32x32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_vdit.data import (
    ClipSpec,
    ClipTooShortError,
    ClipTooSmallError,
    DatasetIntegrityError,
    EmbeddingsTextSource,
    MissingClipError,
    NothingUsableError,
    PrepareError,
    ShardLoader,
    UnreadableClipError,
    clip_key,
    decode_record,
    prepare_data,
    read_captions,
    read_clip,
    save_caption_embeddings,
    toy_text_source,
    write_captions_jsonl,
)
from jax_vdit.data import command as prepare_command
from jax_vdit.data import latents as latents_mod
from jax_vdit.data import prepare as prepare_mod
from jax_vdit.data.captions import CaptionFileError
from jax_vdit.data.codec import decode_tensors
from jax_vdit.data.latents import TILING_PRESETS
from jax_vdit.data.shards import PARTIAL, shard_name
from jax_vdit.data.video import resize_and_crop
from jax_vdit.io import load_vae
from jax_vdit.vae import SCALING_FACTOR, encode_video_to_latents, write_video

GOLDEN = Path(__file__).parent / "data" / "golden" / "causalvae_v12" / "tiny_a"
SIZE = {"frames": 5, "height": 32, "width": 32, "fps": 8.0}
RUN = {**SIZE, "shard_size": 2, "latent_dtype": "float32", "seed": 3}  # float32: latents stored exactly
USABLE = 6

pytestmark = [
    pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden folder {GOLDEN} not available"),
    pytest.mark.filterwarnings("ignore:os.fork"),  # ffmpeg subprocesses writing the test videos
]


def squares(t: int, h: int, w: int, colour: tuple[int, int, int], speed: int) -> np.ndarray:
    """uint8 (t, h, w, 3): a square of ``colour`` moving right by ``speed`` pixels a frame on grey."""
    frames = np.full((t, h, w, 3), 60, np.uint8)
    for i in range(t):
        x = (2 + speed * i) % max(1, w - 10)
        frames[i, h // 4 : h // 4 + 10, x : x + 10] = colour
    return frames


def grey_ramp(t: int, h: int, w: int) -> np.ndarray:
    """Frame i is uniform grey 40 + 10 i, so a decoded frame tells its index."""
    return np.broadcast_to((40 + 10 * np.arange(t, dtype=np.uint8))[:, None, None, None], (t, h, w, 3)).copy()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("videos")
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    pairs = []
    for i, colour in enumerate(colours):
        write_video(squares(16, 32, 48, colour, speed=1 + i % 3), root / f"clip{i}.mp4", fps=8)
        pairs.append((f"clip{i}.mp4", f"a {['red', 'green', 'blue', 'yellow', 'cyan'][i]} square moves right"))
    write_video(grey_ramp(20, 32, 48), root / "sub" / "fast.mp4", fps=16)
    pairs.append(("sub/fast.mp4", "a grey screen brightens"))
    (root / "broken.mp4").write_bytes(b"this is not a video" * 50)
    pairs.append(("broken.mp4", "a broken file"))
    write_video(squares(3, 32, 48, (255, 0, 255), 1), root / "short.mp4", fps=8)
    pairs.append(("short.mp4", "a short clip"))
    write_video(squares(16, 16, 16, (255, 0, 255), 1), root / "small.mp4", fps=8)
    pairs.append(("small.mp4", "a small clip"))
    pairs.append(("missing.mp4", "a file that is not there"))
    pairs.append(("clip0.mp4", "   "))
    return root, write_captions_jsonl(root / "captions.jsonl", pairs)


@pytest.fixture(scope="module")
def vae():
    return load_vae(GOLDEN)


@pytest.fixture(scope="module")
def prepared(videos, vae, tmp_path_factory):
    root, captions = videos
    out = tmp_path_factory.mktemp("prepared") / "data"
    manifest = prepare_data(root, captions, out, vae=vae, text=toy_text_source(), vae_path=GOLDEN,
                            show_progress=False, **RUN)
    return out, manifest


def shard_hashes(data_dir: Path) -> list[tuple[str, str]]:
    return [(s["file"], s["sha256"]) for s in json.loads((data_dir / "manifest.json").read_text())["shards"]]


# ----------------------------------------------------------------------------------------------- reading clips
def test_read_clip_fps_stride_and_centre_window(videos):
    root, _ = videos
    clip = read_clip(root / "sub" / "fast.mp4", ClipSpec(frames=5, height=32, width=32, fps=8.0))
    assert clip.frames.shape == (5, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert (clip.stride, clip.source_fps, clip.source_size) == (2, 16.0, (32, 48))
    # 20 source frames, a window of 9 in the middle: frames 5, 7, ..., 13 (identified by their grey level)
    assert clip.start_frame == 5
    levels = np.round((clip.frames.reshape(5, -1).mean(axis=1) - 40) / 10).astype(int)
    np.testing.assert_array_equal(levels, [5, 7, 9, 11, 13])
    first = read_clip(root / "sub" / "fast.mp4", ClipSpec(frames=5, height=32, width=32, fps=None, start="begin"))
    assert (first.start_frame, first.stride) == (0, 1)
    np.testing.assert_array_equal(np.round((first.frames.reshape(5, -1).mean(1) - 40) / 10), [0, 1, 2, 3, 4])


def test_resize_and_centre_crop():
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[:, :48] = (255, 0, 0)
    frame[:, 48:] = (0, 0, 255)
    out = resize_and_crop(frame, 32, 32)  # 64x96 -> 32x48 (short side to 32), columns 8..39 kept
    assert out.shape == (32, 32, 3)
    assert np.all(out[:, :14, 0] > 240) and np.all(out[:, :14, 2] < 15)
    assert np.all(out[:, 18:, 2] > 240) and np.all(out[:, 18:, 0] < 15)


def test_bad_clips_raise_specific_errors(videos):
    root, _ = videos
    spec = ClipSpec(**SIZE)
    cases = {"broken.mp4": (UnreadableClipError, "unreadable"), "short.mp4": (ClipTooShortError, "too_short"),
             "small.mp4": (ClipTooSmallError, "too_small"), "missing.mp4": (MissingClipError, "missing")}
    for name, (error, reason) in cases.items():
        with pytest.raises(error) as info:
            read_clip(root / name, spec)
        assert info.value.reason == reason and name in str(info.value)
    assert "needs 5" in str(pytest.raises(ClipTooShortError, read_clip, root / "short.mp4", spec).value)
    # upscaling on request
    assert read_clip(root / "small.mp4", ClipSpec(**SIZE, allow_upscale=True)).frames.shape == (5, 32, 32, 3)
    with pytest.raises(ValueError, match="4k\\+1"):
        ClipSpec(frames=6, height=32, width=32)


# ----------------------------------------------------------------------------------------------- captions
def test_caption_layouts_and_errors(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"video": "x.mp4", "caption": "one"}\n\n{"path": "y.mp4", "cap": "two"}\n')
    entries = read_captions(jsonl)
    assert [(e.index, e.video, e.caption, e.where) for e in entries] == [(0, "x.mp4", "one", "line 1"),
                                                                          (1, "y.mp4", "two", "line 3")]
    osp = tmp_path / "anno.json"
    osp.write_text(json.dumps([{"path": "a/b.mp4", "cap": ["first", "second"], "fps": 30},
                               {"path": "c.mp4", "cap": "plain"}]))
    assert [(e.video, e.caption) for e in read_captions(osp)] == [("a/b.mp4", "first"), ("c.mp4", "plain")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "x.mp4", "caption": "ok"}\n{"video": "y.mp4"\n')
    with pytest.raises(CaptionFileError, match="line 2"):
        read_captions(bad)
    bad.write_text('{"video": "x.mp4", "caption": "ok"}\n{"video": "y.mp4", "text": "no caption key"}\n')
    with pytest.raises(CaptionFileError, match=r"line 2: needs keys"):
        read_captions(bad)
    osp.write_text(json.dumps([{"path": "a.mp4", "cap": "x"}, {"path": "b.mp4", "cap": 3}]))
    with pytest.raises(CaptionFileError, match="item 1"):
        read_captions(osp)


# ----------------------------------------------------------------------------------------------- prepare
def test_manifest_counts_skips_and_settings(prepared, videos):
    out, manifest = prepared
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["complete"] is True
    assert raw["counts"] == {"clips": 11, "records": USABLE, "skipped": 5, "shards": 3, "skipped_by_reason": {
        "empty_caption": 1, "missing": 1, "too_short": 1, "too_small": 1, "unreadable": 1}}
    assert {s["video"]: s["reason"] for s in raw["skipped"]} == {
        "broken.mp4": "unreadable", "short.mp4": "too_short", "small.mp4": "too_small", "missing.mp4": "missing",
        "clip0.mp4": "empty_caption"}
    assert all(s["detail"] for s in raw["skipped"])
    assert manifest.to_dict() == raw and manifest.skip_counts() == raw["counts"]["skipped_by_reason"]
    assert [s["records"] for s in raw["shards"]] == [2, 2, 2]
    assert sorted(c for s in raw["shards"] for c in s["clips"]) == [0, 1, 2, 3, 4, 5]
    assert raw["latent_shape"] == [4, 2, 4, 4] and raw["text_shape"] == [16, 32]
    settings = raw["settings"]
    assert (settings["frames"], settings["height"], settings["width"], settings["fps"]) == (5, 32, 32, 8.0)
    assert settings["vae"]["path"] == str(GOLDEN) and settings["vae"]["scaling_factor"] == SCALING_FACTOR
    assert settings["text_encoder"].startswith("toy:") and settings["latent_dtype"] == "float32"
    assert not list(out.glob("*" + PARTIAL))
    from jax_vdit.data.shards import sha256_file

    for s in raw["shards"]:
        assert sha256_file(out / s["file"]) == s["sha256"] and (out / s["file"]).stat().st_size == s["bytes"]


def test_records_equal_direct_encoding(prepared, videos, vae):
    """Every record's latents are exactly encode_video_to_latents of the clip's frames with the clip's key."""
    out, _ = prepared
    root, captions = videos
    entries = {e.index: e for e in read_captions(captions)}
    toy = toy_text_source()
    loader = ShardLoader(out, 2, process_index=0, process_count=1)
    assert len(loader.source) == USABLE
    for i in range(USABLE):
        rec = loader.source.record(i)
        entry = entries[rec.clip_index]
        assert (rec.video, rec.caption) == (entry.video, entry.caption)
        frames = read_clip(root / rec.video, ClipSpec(**SIZE)).frames
        direct = encode_video_to_latents(vae, frames[None], clip_key(RUN["seed"], rec.clip_index),
                                         tiling=TILING_PRESETS["sample-script"])
        assert rec.latents.dtype == np.float32
        np.testing.assert_array_equal(rec.latents, np.asarray(direct)[0])
        text, mask = toy.encode([entry.caption])
        np.testing.assert_array_equal(rec.text_mask, mask[0])
        np.testing.assert_array_equal(rec.text, text[0].astype("bfloat16").astype(np.float32))  # bf16 storage
    uncond = loader.unconditional()
    text, mask = toy.unconditional()
    np.testing.assert_array_equal(uncond["uncond_text"], text)
    np.testing.assert_array_equal(uncond["uncond_mask"], mask)
    assert int(uncond["uncond_mask"].sum()) == 1  # "" -> EOS only
    # clips differ from each other (a real encoding, not a constant)
    assert not np.allclose(loader.source.record(0).latents, loader.source.record(1).latents)


def test_float16_storage_trimmed_text_and_embeddings_file(videos, vae, tmp_path):
    """Default storage (float16 latents, bfloat16 text trimmed to the valid tokens) from a precomputed
    embeddings file; a caption the file lacks is skipped."""
    root, captions = videos
    entries = read_captions(captions)[:3]  # clip0..clip2
    toy = toy_text_source()
    known = [e.caption for e in entries[:2]]
    text, mask = toy.encode(known)
    u_text, u_mask = toy.unconditional()
    emb = save_caption_embeddings(tmp_path / "emb.safetensors", known, text.astype("bfloat16"), mask, u_text,
                                  u_mask, encoder="toy")
    source = EmbeddingsTextSource(emb)
    out = tmp_path / "data"
    manifest = prepare_data(root, entries, out, vae=vae, text=source, show_progress=False, **SIZE, seed=3)
    assert manifest.num_records == 2 and [s["reason"] for s in manifest.skipped] == ["no_embedding"]
    assert manifest.settings["latent_dtype"] == "float16" and manifest.settings["trim_text"] is True
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(out / manifest.shards[0].file))
    assert reader.writer_options_string().startswith("group_size:1")
    raw = reader.read_all()
    reader.close()
    for k, blob in enumerate(raw):
        tensors, _ = decode_tensors(blob)
        assert tensors["latents"].dtype == np.float16 and str(tensors["text"].dtype) == "bfloat16"
        n_valid = int(mask[k].sum())
        assert tensors["text"].shape == (n_valid, 32)  # only the valid tokens are stored
        rec = decode_record(blob)
        assert rec.text.shape == (16, 32) and not rec.text[n_valid:].any()
        np.testing.assert_array_equal(rec.text, text[k].astype("bfloat16").astype(np.float32))
        frames = read_clip(root / rec.video, ClipSpec(**SIZE)).frames
        direct = np.asarray(encode_video_to_latents(vae, frames[None], clip_key(3, rec.clip_index)))[0]
        np.testing.assert_array_equal(rec.latents, direct.astype(np.float16).astype(np.float32))


def test_nothing_usable_raises(videos, vae, tmp_path):
    root, _ = videos
    captions = write_captions_jsonl(tmp_path / "bad.jsonl", [("broken.mp4", "a"), ("missing.mp4", "b")])
    with pytest.raises(NothingUsableError, match=r"no usable clip among 2 \(1 missing, 1 unreadable\)"):
        prepare_data(root, captions, tmp_path / "out", vae=vae, text=toy_text_source(), show_progress=False, **SIZE)
    raw = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert raw["counts"]["records"] == 0 and len(raw["skipped"]) == 2


def test_settings_checked(videos, vae, prepared, tmp_path):
    root, captions = videos
    out, _ = prepared
    with pytest.raises(PrepareError, match=r"other settings(.|\n)*seed: 3 -> 4"):
        prepare_data(root, captions, out, vae=vae, text=toy_text_source(), vae_path=GOLDEN, show_progress=False,
                     **{**RUN, "seed": 4})
    with pytest.raises(PrepareError, match="multiples of 16"):
        prepare_data(root, captions, tmp_path / "x", vae=vae, text=toy_text_source(), show_progress=False,
                     frames=5, height=40, width=32)


# ----------------------------------------------------------------------------------------------- resume
class Killed(BaseException):
    """Stands in for the process being killed."""


def test_resume_after_kill_is_exact_and_skips_finished_shards(videos, vae, prepared, tmp_path, monkeypatch):
    root, captions = videos
    out = tmp_path / "data"
    real_write = prepare_mod.write_shard
    writes = []

    def dies_on_second_shard(out_dir, number, records, clips):
        writes.append(number)
        if len(writes) == 2:  # killed while writing shard 1: half a file under the .partial name
            (Path(out_dir) / (shard_name(number) + PARTIAL)).write_bytes(b"half a shard")
            raise Killed
        return real_write(out_dir, number, records, clips)

    monkeypatch.setattr(prepare_mod, "write_shard", dies_on_second_shard)
    with pytest.raises(Killed):
        prepare_data(root, captions, out, vae=vae, text=toy_text_source(), vae_path=GOLDEN, show_progress=False,
                     **RUN)
    monkeypatch.setattr(prepare_mod, "write_shard", real_write)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["complete"] is False and [s["file"] for s in raw["shards"]] == [shard_name(0)]
    assert (out / (shard_name(1) + PARTIAL)).exists()
    with pytest.raises(DatasetIntegrityError, match="not completely prepared"):
        ShardLoader(out, 2, process_index=0, process_count=1)
    # a finished shard file the manifest never listed (killed between rename and manifest update)
    shutil.copy(out / shard_name(0), out / shard_name(7))

    calls = []
    real_encode = latents_mod.encode_video_to_latents
    monkeypatch.setattr(latents_mod, "encode_video_to_latents", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
    manifest = prepare_data(root, captions, out, vae=vae, text=toy_text_source(), vae_path=GOLDEN,
                            show_progress=False, **RUN)
    assert len(calls) == USABLE - 2  # the two clips of shard 0 were not encoded again
    assert not list(out.glob("*" + PARTIAL)) and not (out / shard_name(7)).exists()
    assert manifest.complete and manifest.num_records == USABLE
    assert shard_hashes(out) == shard_hashes(prepared[0])  # byte-identical to the uninterrupted run
    # a finished dataset: rerunning encodes nothing
    calls.clear()
    prepare_data(root, captions, out, vae=vae, text=toy_text_source(), vae_path=GOLDEN, show_progress=False, **RUN)
    assert calls == []


# ----------------------------------------------------------------------------------------------- loading
def test_corrupted_or_missing_shard_detected(prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(prepared[0], out)
    ShardLoader(out, 2, process_index=0, process_count=1)  # intact: opens
    shard = out / shard_name(1)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetIntegrityError, match=f"{shard_name(1)}: sha256 differs"):
        ShardLoader(out, 2, process_index=0, process_count=1)
    shard.unlink()
    with pytest.raises(DatasetIntegrityError, match=f"{shard_name(1)} is listed in the manifest but missing"):
        ShardLoader(out, 2, process_index=0, process_count=1)


def test_loader_deterministic_and_split_across_processes(prepared):
    out, _ = prepared
    a = ShardLoader(out, 4, seed=11, process_index=0, process_count=1)
    b = ShardLoader(out, 4, seed=11, process_index=0, process_count=1, verify="size")
    for step in (0, 1, 5):
        x, y = a.batch_at(step), b.batch_at(step)
        assert x.keys() == y.keys() == {"latents", "text", "text_mask"}
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    batch = a.batch_at(2)
    assert batch["latents"].shape == (4, 4, 2, 4, 4) and batch["latents"].dtype == np.float32
    assert batch["text"].shape == (4, 16, 32) and batch["text_mask"].shape == (4, 16)
    assert batch["text_mask"].dtype == np.int32
    # one batch of 4 per epoch of 6 records: 4 distinct records from a permutation that changes every epoch
    assert a.steps_per_epoch == 1
    stream = np.stack([a.indices_at(s) for s in range(8)])
    assert all(len(set(row)) == 4 and set(row) <= set(range(USABLE)) for row in stream)
    assert len({tuple(row) for row in stream}) > 1 and len(set(stream.ravel())) == USABLE
    pairs = ShardLoader(out, 2, seed=11, process_index=0, process_count=1, verify="none")  # 3 batches an epoch
    epochs = np.stack([pairs.indices_at(s) for s in range(12)]).reshape(4, USABLE)
    assert all(sorted(e) == list(range(USABLE)) for e in epochs) and len({tuple(e) for e in epochs}) > 1
    other = ShardLoader(out, 4, seed=12, process_index=0, process_count=1, verify="none")
    assert not np.array_equal(stream, np.stack([other.indices_at(s) for s in range(8)]))
    # two processes: disjoint halves whose union is the global batch
    p0 = ShardLoader(out, 4, seed=11, process_index=0, process_count=2, verify="none")
    p1 = ShardLoader(out, 4, seed=11, process_index=1, process_count=2, verify="none")
    for step in range(6):
        i0, i1 = p0.indices_at(step), p1.indices_at(step)
        assert len(i0) == len(i1) == 2 and not set(i0) & set(i1)
        np.testing.assert_array_equal(np.concatenate([i0, i1]), a.indices_at(step))
        assert sorted([*p0.clip_indices_at(step), *p1.clip_indices_at(step)]) == sorted(a.clip_indices_at(step))
    np.testing.assert_array_equal(p1.batch_at(3)["latents"], np.stack([a.source[int(i)]["latents"]
                                                                        for i in p1.indices_at(3)]))
    # the Grain iterator yields the same batches, and its state is the step
    it = a.iterator(start_step=3, read_threads=2)
    for step in (3, 4):
        np.testing.assert_array_equal(next(it)["latents"], a.batch_at(step)["latents"])
    assert it.get_state() == a.iterator_state(5)
    with pytest.raises(ValueError, match="multiple of process_count"):
        ShardLoader(out, 3, process_index=0, process_count=2, verify="none")


class TextConditionedStub(nnx.Module):
    """A stand-in denoiser with the DiT's call signature (x (B,C,T,H,W), t (B,), text (B,L,Ct), mask (B,L)):
    eps = x * scale + a projection of the masked mean text embedding. Compiles in a moment."""

    def __init__(self, channels: int, caption_channels: int) -> None:
        self.scale = nnx.Param(jnp.zeros((channels,)))
        self.text_proj = nnx.Param(jnp.full((caption_channels, channels), 0.01))

    def __call__(self, x, t, text, mask, attention=None):
        assert text.shape[:2] == mask.shape and x.shape[0] == text.shape[0]
        weights = mask.astype(text.dtype)
        pooled = jnp.einsum("blc,bl->bc", text, weights) / jnp.maximum(weights.sum(1, keepdims=True), 1.0)
        bias = pooled @ self.text_proj[...]
        return x * self.scale[...][None, :, None, None, None] + bias[:, :, None, None, None]


def test_batches_feed_the_training_loop(prepared, tmp_path):
    """loader.batch_at and loader.unconditional() plug into training.train with the release objective (caption
    dropout swaps in the stored empty-caption embedding)."""
    from jax_vdit.objectives import DiffusionObjective
    from jax_vdit.training import TrainConfig, train

    loader = ShardLoader(prepared[0], 2, seed=0, process_index=0, process_count=1, verify="size")
    frozen = {k: jnp.asarray(v) for k, v in loader.unconditional().items()}
    model = TextConditionedStub(4, 32)
    result = train(model, DiffusionObjective(caption_dropout=0.5), loader.batch_at,
                   TrainConfig(steps=3, learning_rate=0.05, log_every=1, checkpoint_every=100), tmp_path,
                   frozen=frozen, show_progress=False)
    assert len(result.history) == 3 and all(np.isfinite(r["loss"]) for r in result.history)
    assert float(jnp.abs(result.model().scale[...]).max()) > 0  # the batches produced gradients


# ----------------------------------------------------------------------------------------------- command
def test_command_main_and_register(videos, tmp_path, capsys):
    root, captions = videos
    common = ["--videos", str(root), "--captions", str(captions), "--vae", str(GOLDEN), "--text-encoder", "toy"]
    args = [*common, "--frames", "5", "--height", "32", "--width", "32", "--fps", "8", "--shard-size", "4",
            "--no-progress"]
    assert prepare_command.main([*args, "--out", str(tmp_path / "out")]) == 0
    assert f"{USABLE} clips in 2 shards" in capsys.readouterr().out
    raw = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert raw["settings"]["latent_dtype"] == "float16" and raw["settings"]["posterior"] == "sample"
    assert prepare_command.main([*args, "--out", str(tmp_path / "o2"), "--frames", "6"]) == 2
    assert "4k+1" in capsys.readouterr().err

    import argparse

    parser = argparse.ArgumentParser(prog="vdit")
    prepare_command.register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["prepare-data", *common, "--out", "o", "--size", "29x480p", "--frames", "9"])
    assert ns.func is prepare_command.run
    assert prepare_command.resolve_size(ns) == (9, 480, 640)  # the preset, with --frames overriding
    ns = parser.parse_args(["prepare-data", "--videos", "v", "--captions", "c", "--out", "o", "--vae", "x",
                            "--embeddings", "e.safetensors", "--size", "93x720p"])
    assert prepare_command.resolve_size(ns) == (93, 720, 1280) and ns.text_encoder is None
    help_text = parser._subparsers._group_actions[0].choices["prepare-data"].format_help()
    assert "(default: float16)" in help_text and "(default: 64)" in help_text

