"""Unit tests of the CausalVAE port: config parsing, the conv/upsample/attention ops against plain references,
tiling geometry and blending (CPU, float32, tiny shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jax_vdit.vae import ComputeConfig, TilingConfig, TilingConfigError, VAEConfig, VAEConfigError, ops
from jax_vdit.io.vae_weights import vae_key_map
from jax_vdit.vae import abstract_vae, param_count
from jax_vdit.vae.runtime import tiled_apply
from jax_vdit.vae.tiling import assemble_tiles, tile_starts, time_chunks

GOLDEN = Path(__file__).parent / "data" / "golden" / "causalvae_v12" / "tiny_a"  # = ../shared/golden
RNG = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return jnp.asarray(RNG.standard_normal(shape).astype(np.float32) * scale)


# ----------------------------------------------------------------------------------------------- config
def test_release_config_param_count_and_keys():
    """The default config is the release: 239,189,991 params in 248 tensors (spec section 7)."""
    cfg = VAEConfig()
    vae = abstract_vae(cfg)
    assert param_count(vae) == 239_189_991
    assert param_count(vae.encoder) + param_count(vae.quant_conv) == 94_399_440
    assert param_count(vae.decoder) + param_count(vae.post_quant_conv) == 144_790_551
    km = vae_key_map(cfg)
    assert len(km.rules) == 248
    assert km.rules["decoder.up.1.upsample.conv.conv.weight"].source_shape == (256, 256, 1, 3, 3)
    assert km.rules["encoder.down.0.downsample.conv.weight"].source_shape == (128, 128, 3, 3)
    assert km.rules["encoder.down.1.block.0.nin_shortcut.weight"].source_shape == (256, 128, 1, 1)
    assert cfg.latent_shape(93, 720, 1280) == (4, 24, 90, 160)
    assert cfg.decoded_frames(24) == 93 and cfg.decoded_frames(8) == 29


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="golden folder not available")
def test_golden_config_parses_and_ignores_training_fields():
    raw = json.loads((GOLDEN / "config.json").read_text())
    cfg = VAEConfig.from_dict(raw)
    assert cfg == VAEConfig.tiny()
    assert "loss_params" in raw and "decoder_spatial_upsample_unup" in raw and "lr" in raw


def test_unsupported_block_type_names_field_and_value():
    raw = VAEConfig().to_dict()
    raw["encoder_temporal_downsample"] = ["", "", "TimeDownsampleRes2x", ""]
    with pytest.raises(VAEConfigError, match=r"encoder_temporal_downsample.*\[2\].*TimeDownsampleRes2x"):
        VAEConfig.from_dict(raw)
    raw = VAEConfig().to_dict()
    raw["decoder_attention"] = "AttnBlock3D"
    with pytest.raises(VAEConfigError, match=r"decoder_attention.*AttnBlock3D"):
        VAEConfig.from_dict(raw)
    raw = VAEConfig().to_dict()
    raw["encoder_resnet_blocks"] = ["ResnetBlock2D"] * 3
    with pytest.raises(VAEConfigError, match="encoder_resnet_blocks"):
        VAEConfig.from_dict(raw)
    with pytest.raises(VAEConfigError, match="unknown VAE config field"):
        VAEConfig.from_dict({**VAEConfig().to_dict(), "hidden_sise": 3})
    with pytest.raises(VAEConfigError, match="attn_resolutions"):
        VAEConfig(attn_resolutions=(16,))
    with pytest.raises(VAEConfigError, match="conv_impl"):
        ComputeConfig(conv_impl="winograd")


# ----------------------------------------------------------------------------------------------- ops
def reference_causal_conv(x, kernel, bias, stride, padding):
    """Independent reference: explicit replicate-first-frame padding + VALID-in-time 3-D conv."""
    kt = kernel.shape[0]
    xp = jnp.concatenate([jnp.repeat(x[:, :1], kt - 1, axis=1), x], axis=1) if kt > 1 else x
    y = lax.conv_general_dilated(
        xp, kernel, stride, ((0, 0), *padding), dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        precision=lax.Precision.HIGHEST,
    )
    return y + bias


GEOMETRIES = [
    ((3, 3, 3), (1, 1, 1), ((1, 1), (1, 1)), 7),
    ((3, 3, 3), (2, 2, 2), ((0, 1), (0, 1)), 7),  # Spatial2xTime2x3DDownsample
    ((1, 3, 3), (1, 2, 2), ((0, 1), (0, 1)), 3),  # 2-D Downsample
    ((3, 3, 3), (1, 1, 1), ((1, 1), (1, 1)), 1),
]


@pytest.mark.parametrize(
    "impl,chunked", [("stack", False), ("taps", False), ("conv3d", False), ("stack", True), ("conv3d", True)]
)
@pytest.mark.parametrize("kernel_size,stride,padding,t", GEOMETRIES)
def test_causal_conv_matches_reference(impl, kernel_size, stride, padding, t, chunked):
    x = rand(2, t, 6, 5, 8)
    kernel = rand(*kernel_size, 8, 16, scale=0.2)
    bias = rand(16)
    ref = reference_causal_conv(x, kernel, bias, stride, padding)
    chunk_bytes = 1 if chunked else 1 << 30  # 1 byte -> one output frame per chunk (loop + peeled chunks)
    got = ops.causal_conv(x, kernel, bias, stride=stride, padding=padding, impl=impl, chunk_bytes=chunk_bytes)
    assert got.shape == ref.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-5, rtol=0)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 6 * 5 * 24 * 4 * 2, 1 << 30])
def test_causal_conv_pre_and_residuals(chunk_bytes):
    """GN+SiLU fused as ``pre``, identity residual (in place) and shortcut residual; 1, 2-3 or all frames a chunk."""
    x = rand(1, 7, 6, 5, 32)
    kernel = rand(3, 3, 3, 32, 32, scale=0.05)
    bias = rand(32)
    scale, shift = rand(32), rand(32)
    mean, rstd = ops.group_norm_stats(x, 32)
    a, b = ops.group_norm_affine(mean, rstd, scale, shift)
    act = ops.silu(x * a + b)
    ref = reference_causal_conv(act, kernel, bias, (1, 1, 1), ((1, 1), (1, 1)))
    kw = dict(impl="stack", chunk_bytes=chunk_bytes)
    got = ops.causal_conv(x, kernel, bias, pre=ops.norm_silu_fn(a, b), residual=(x, None), **kw)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref + x), atol=2e-5)
    w = rand(32, 16, scale=0.1)
    k16 = kernel[..., :16]
    got = ops.causal_conv(x, k16, bias[:16], pre=ops.norm_silu_fn(a, b), residual=(x, lambda r: r @ w), **kw)
    ref16 = reference_causal_conv(act, k16, bias[:16], (1, 1, 1), ((1, 1), (1, 1))) + x @ w
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref16), atol=2e-5)


@pytest.mark.parametrize("kt", [3, 1])
@pytest.mark.parametrize("chunk_bytes", [1, 2 * 6 * 5 * 3 * 32 * 4, 1 << 30])
def test_causal_conv_in_place_matches_reference(kt, chunk_bytes):
    """Output written over the input (chunks of 1, 2 (+ a shorter last one) or all 7 frames): the overwritten
    halo frames come from the carried copy, so results equal the out-of-place conv, with a shortcut residual."""
    x = rand(2, 7, 6, 5, 32)
    kernel = rand(kt, 3, 3, 32, 32, scale=0.05)
    bias = rand(32)
    r = rand(2, 7, 6, 5, 16)
    w = rand(16, 32, scale=0.1)
    pre = ops.norm_silu_fn(*ops.group_norm_affine(*ops.group_norm_stats(x, 32), rand(32), rand(32)))
    kw = dict(pre=pre, residual=(r, lambda v: v @ w), impl="stack", chunk_bytes=chunk_bytes)
    ref = ops.causal_conv(x, kernel, bias, **kw)
    got = jax.jit(lambda x: ops.causal_conv(x, kernel, bias, in_place=True, **kw), donate_argnums=0)(x + 0.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=5e-6, rtol=0)  # jit vs eager rounding
    act = pre(x, 0)
    direct = reference_causal_conv(act, kernel, bias, (1, 1, 1), ((1, 1), (1, 1))) + r @ w
    np.testing.assert_allclose(np.asarray(got), np.asarray(direct), atol=2e-5, rtol=0)


def test_map_time_chunks_in_place_rejects_shape_change():
    x = rand(1, 4, 3, 3, 8)
    with pytest.raises(ValueError, match="in_place"):
        ops.map_time_chunks(x, kt=3, st=2, t_out=2, chunk=1, out_tail=(3, 3, 8), out_dtype=x.dtype,
                            chunk_fn=lambda w, s0, a, f, acc: w[:, :f], in_place=True)


def test_group_norm_matches_torch_semantics():
    """5-D statistics over (C/G, T, H, W), per-frame statistics over (C/G, H, W); biased variance, eps 1e-6."""
    x = rand(2, 3, 4, 5, 64, scale=3.0) + 1.5
    xn = np.asarray(x).reshape(2, 3, 4, 5, 32, 2)
    for per_frame, axes in ((False, (1, 2, 3, 5)), (True, (2, 3, 5))):
        mean, rstd = ops.group_norm_stats(x, 32, per_frame=per_frame)
        a, b = ops.group_norm_affine(mean, rstd, jnp.ones(64), jnp.zeros(64))
        got = np.asarray(x * a + b).reshape(xn.shape)
        m = xn.mean(axis=axes, keepdims=True)
        v = xn.var(axis=axes, keepdims=True)
        np.testing.assert_allclose(got, (xn - m) / np.sqrt(v + 1e-6), atol=1e-5)


def test_group_norm_stats_stay_float32_in_bf16():
    x = rand(1, 3, 4, 4, 32).astype(jnp.bfloat16) + 100.0
    mean, rstd = ops.group_norm_stats(x, 32)
    assert mean.dtype == jnp.float32 and rstd.dtype == jnp.float32
    xf = np.asarray(x.astype(jnp.float32)).reshape(1, 3, 4, 4, 32, 1)
    np.testing.assert_allclose(np.asarray(mean).ravel(), xf.mean(axis=(1, 2, 3, 5)).ravel(), rtol=1e-6)


def test_interp2x_matches_torch_trilinear():
    torch = pytest.importorskip("torch")
    x = rand(1, 4, 3, 5, 6)  # N, T, H, W, C
    xt = torch.from_numpy(np.array(jnp.transpose(x, (0, 4, 1, 2, 3))))
    # frame 0: bilinear x2 in space only; frames 1..: trilinear x2 (as Spatial2xTime2x3DUpsample)
    first = torch.nn.functional.interpolate(xt[:, :, :1], scale_factor=(1, 2, 2), mode="trilinear")
    rest = torch.nn.functional.interpolate(xt[:, :, 1:], scale_factor=(2, 2, 2), mode="trilinear")
    ref = torch.cat([first, rest], dim=2).permute(0, 2, 3, 4, 1).numpy()
    for chunk_bytes in (1, 1 << 30):  # one frame pair per chunk (loop + remainder), or all at once
        got = np.asarray(ops.upsample_first_frame_apart(x, jnp.float32, chunk_bytes=chunk_bytes))
        assert got.shape == (1, 7, 6, 10, 6)
        np.testing.assert_allclose(got, ref, atol=1e-6)
    one = np.asarray(ops.upsample_first_frame_apart(x[:, :1], jnp.float32))
    np.testing.assert_allclose(one, ref[:, :1], atol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])
def test_subpixel_nearest_upsample_conv(chunk_bytes):
    x = rand(2, 3, 5, 4, 8)
    kernel = rand(1, 3, 3, 8, 16, scale=0.2)
    bias = rand(16)
    got = ops.upsample_nearest_conv(x, kernel, bias, chunk_bytes=chunk_bytes)
    ref = ops.upsample_nearest_conv_reference(x, kernel, bias)
    assert got.shape == (2, 3, 10, 8, 16)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-5)


def test_group_stats_and_map_merges_chunks_exactly():
    x = rand(1, 7, 3, 4, 32, scale=2.0) + 0.7
    ident = lambda u: u  # noqa: E731
    for chunk in (1, 3, 7):
        mean, rstd, out = ops.group_stats_and_map(
            x, ident, lambda u: u * 2.0, num_groups=32, eps=1e-6, chunk=chunk, up_hwc=(3, 4, 32), map_c=32,
            out_dtype=jnp.float32,
        )
        ref_mean, ref_rstd = ops.group_norm_stats(x, 32)
        np.testing.assert_allclose(np.asarray(mean), np.asarray(ref_mean), atol=1e-6)
        np.testing.assert_allclose(np.asarray(rstd), np.asarray(ref_rstd), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(out), np.asarray(x) * 2.0, atol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])
def test_frame_attention(chunk_bytes):
    q, k, v = rand(1, 3, 2, 3, 8), rand(1, 3, 2, 3, 8), rand(1, 3, 2, 3, 8)
    got = ops.frame_attention(q, k, v, chunk_bytes=chunk_bytes)
    qf, kf, vf = (np.asarray(a).reshape(1, 3, 6, 8) for a in (q, k, v))
    s = np.einsum("ntqc,ntkc->ntqk", qf, kf) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("ntqk,ntkc->ntqc", p, vf).reshape(1, 3, 2, 3, 8)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)


# ----------------------------------------------------------------------------------------------- tiling
def test_tiling_presets_and_validation():
    s = TilingConfig.sample_script()
    assert (s.tile_sample_min_size, s.tile_latent_min_size, s.tile_sample_min_size_t, s.tile_latent_min_size_t,
            s.tile_overlap_factor) == (512, 64, 29, 8, 0.125)
    c = TilingConfig.class_default()
    assert (c.tile_sample_min_size, c.tile_latent_min_size, c.tile_sample_min_size_t, c.tile_latent_min_size_t,
            c.tile_overlap_factor) == (256, 32, 33, 16, 0.125)
    m = TilingConfig.save_memory()
    assert (m.tile_sample_min_size, m.tile_latent_min_size, m.tile_sample_min_size_t, m.tile_latent_min_size_t,
            m.tile_overlap_factor) == (256, 32, 29, 8, 0.125)
    with pytest.raises(TilingConfigError):
        TilingConfig(tile_latent_min_size_t=1)
    with pytest.raises(TilingConfigError):
        TilingConfig(tile_overlap_factor=1.0)


def test_release_tile_geometry():
    """Spec section 6: 93x720p -> chunks [0,8) [7,15) [14,22) [21,24) (29+28+28+8 frames); rows 0,56; cols 0,56,112."""
    assert time_chunks(24, 8) == [(0, 8), (7, 15), (14, 22), (21, 24)]
    assert time_chunks(8, 8) == [(0, 8)]
    assert time_chunks(3, 2) == [(0, 2), (1, 3)]
    assert time_chunks(9, 5) == [(0, 5), (4, 9)]
    assert tile_starts(90, 64, 0.125) == [0, 56]
    assert tile_starts(160, 64, 0.125) == [0, 56, 112]
    assert tile_starts(60, 64, 0.125) == [0, 56] and tile_starts(80, 64, 0.125) == [0, 56]
    frames = [4 * (e - s) - 3 - (1 if i else 0) for i, (s, e) in enumerate(time_chunks(24, 8))]
    assert frames == [29, 28, 28, 8] and sum(frames) == 93


def release_blend_numpy(grid, extent, keep):
    """Direct NumPy transcription of the release's in-place row/column cross-fade loops (N,C,T,H,W tiles)."""
    rows = [[t.copy() for t in row] for row in grid]
    out_rows = []
    for i, row in enumerate(rows):
        res = []
        for j, tile in enumerate(row):
            if i > 0:
                a, e = rows[i - 1][j], min(rows[i - 1][j].shape[3], tile.shape[3], extent)
                for y in range(e):
                    tile[:, :, :, y, :] = a[:, :, :, -e + y, :] * (1 - y / e) + tile[:, :, :, y, :] * (y / e)
            if j > 0:
                a, e = row[j - 1], min(row[j - 1].shape[4], tile.shape[4], extent)
                for x in range(e):
                    tile[:, :, :, :, x] = a[:, :, :, :, -e + x] * (1 - x / e) + tile[:, :, :, :, x] * (x / e)
            res.append(tile[:, :, :, :keep, :keep])
        out_rows.append(np.concatenate(res, axis=4))
    return np.concatenate(out_rows, axis=3)


def test_blend_matches_release_loops():
    sizes_h, sizes_w = (32, 32, 16), (32, 32, 16)
    grid = [[RNG.standard_normal((1, 3, 2, h, w)).astype(np.float32) for w in sizes_w] for h in sizes_h]
    ref = release_blend_numpy(grid, 8, 24)
    cl = [[jnp.asarray(np.transpose(t, (0, 2, 3, 4, 1))) for t in row] for row in grid]
    got = np.transpose(np.asarray(assemble_tiles(cl, 8, 24)), (0, 4, 1, 2, 3))
    assert got.shape == ref.shape == (1, 3, 2, 64, 64)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def _stub_decoder(tiles, max_batch):
    """A tiling-consistent 'decoder': latent frame ceil(f/4) for output frame f, nearest x8 in space."""
    out = []
    for z in tiles:
        t = z.shape[1]
        idx = np.array([0] + [(f + 3) // 4 for f in range(1, 4 * t - 3)])
        out.append(jnp.repeat(jnp.repeat(z[:, idx], 8, axis=2), 8, axis=3))
    return out


def _stub_encoder(tiles, max_batch):
    """A tiling-consistent 'encoder': pixel frame 4j for latent j, every 8th pixel."""
    return [x[:, ::4, ::8, ::8] for x in tiles]


@pytest.mark.parametrize(
    "latent_shape,lt,st,lt_t,st_t,ov,batch",
    [
        ((1, 3, 8, 8, 2), 4, 32, 2, 5, 0.25, 1),  # the golden geometry
        ((2, 24, 12, 20, 3), 8, 64, 8, 29, 0.125, 3),  # release geometry scaled 1/8 in space, batched tiles
    ],
)
def test_tiled_driver_is_exact_for_a_tiling_consistent_model(latent_shape, lt, st, lt_t, st_t, ov, batch):
    """With a model whose output on a tile equals the crop of its output on the whole input, the release's
    chunks, cross-fades and crops reproduce the untiled result (blending equal values: rounding only, 1e-6)."""
    z = rand(*latent_shape)
    whole = _stub_decoder([z], 1)[0]
    tiled = tiled_apply(_stub_decoder, z, in_size=lt, in_t=lt_t, out_size=st, overlap=ov, max_tile_batch=batch)
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(np.asarray(tiled), np.asarray(whole), atol=1e-6)
    x = whole
    enc_whole = _stub_encoder([x], 1)[0]
    enc_tiled = tiled_apply(_stub_encoder, x, in_size=st, in_t=st_t, out_size=lt, overlap=ov, max_tile_batch=batch)
    assert enc_tiled.shape == enc_whole.shape
    np.testing.assert_allclose(np.asarray(enc_tiled), np.asarray(enc_whole), atol=1e-6)
