"""VAR's scale-wise AdaLN transformer. Every module takes its settings as one `TransformerSpec`
(transformer/spec.py); the attention mask (`var`, `markov`, ...) comes from the registry in
transformer/masks.py and only shapes teacher forcing: the sampler's step takes key segments.

Parameters are float32 and carry logical axis names (`layers`, `embed`, `mlp`, `qkv`, `heads`,
`vocab`, `classes`, `levels`, `tokens`, `adaln`, `latent`, `joined_heads`) that `srdd_jax.parallel`
maps to mesh axes. Compute runs in the spec's `dtype`; layer norms, softmax, the head and the logits stay
float32.

The `depth` blocks are one `nn.scan` over a stacked parameter tree (`params['blocks']`, leading
axis `layers` of size depth), for teacher forcing and for the sampler's per-scale step alike, so
the compiled program holds one block whatever the depth. In training each block can be
rematerialised (`remat`: none, dots, full). Attention is `transformer.attention` (exact XLA
einsum, or cuDNN's fused kernel on GPUs).

Shapes: B batch, L = sum(pn^2) tokens, C width, H heads, D = C / H, V vocabulary, Cv latent
channels. Inputs are labels (B,) and the teacher-forcing tokens x_BLCv (B, L - pn_0^2, Cv).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from srdd_jax import scales
from srdd_jax.transformer import attention
from srdd_jax.transformer.spec import REMATS, TransformerSpec, validate_remat

MAX_SCALE_MUL = 4.605170249938965  # float32 log(100), VAR's clamp of the attention temperature


def normal(std: float):
    return nn.initializers.normal(stddev=std)


def scaled(init, factor_fn):
    """An initializer whose output is multiplied (per column) by factor_fn(shape)."""

    def init_fn(key, shape, dtype=jnp.float32):
        return init(key, shape, dtype) * factor_fn(shape).astype(dtype)

    return init_fn


def dense(features: int, axes: tuple, name: str, dtype, kernel_init, use_bias: bool = True):
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(kernel_init, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Parameter-free LayerNorm over the last axis in float32 (PyTorch's biased variance)."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(|x|_2, eps) over the last axis, like torch.nn.functional.normalize."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
    return (x / jnp.maximum(norm, eps)).astype(x.dtype)


# Rematerialisation of a block in the backward pass (`TransformerSpec.remat`): what its forward
# keeps for the gradient.
REMAT_POLICIES = {
    "none": None,  # keep everything (fastest, most memory)
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep weight matmul outputs
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only each block's input
}
assert tuple(REMAT_POLICIES) == REMATS


def drop_path(x_BLC: jax.Array, rate, rng) -> jax.Array:
    """Per-sample stochastic depth: zero a sample's branch with prob `rate` (may be traced),
    scale the rest."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x_BLC.shape[0],) + (1,) * (x_BLC.ndim - 1))
    return jnp.where(mask, x_BLC / keep, 0.0).astype(x_BLC.dtype)


class SelfAttention(nn.Module):
    """Multi-head attention. In teacher forcing each query scale attends to one contiguous key range
    (`ranges`); the sampler instead passes keys/values of earlier scales as a context.

    With `attn_l2_norm`, q and k are l2-normalised per head and q is scaled by
    exp(min(scale_mul_h, log 100)) (cosine attention, softmax scale 1); otherwise the softmax scale
    is 0.25 / sqrt(D). `implementation` is 'xla' or 'cudnn' (see `transformer.attention`).
    """

    spec: TransformerSpec
    ranges: Sequence[tuple[tuple[int, int], tuple[int, int]]]  # per scale: (query range, key range)
    implementation: str = "xla"

    def setup(self):
        c, std, dtype = self.spec.embed_dim, self.spec.weight_std, self.spec.compute_dtype
        zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
        self.mat_qkv = dense(3 * c, ("embed", "qkv"), "mat_qkv", dtype, normal(std),
                             use_bias=False)
        self.q_bias = self.param("q_bias", zeros, (c,))
        self.v_bias = self.param("v_bias", zeros, (c,))
        if self.spec.attn_l2_norm:
            self.scale_mul = self.param(
                "scale_mul",
                nn.with_logical_partitioning(nn.initializers.constant(math.log(4.0)), ("heads",)),
                (self.spec.num_heads,),
            )
        residual_factor = 1.0 / math.sqrt(2 * self.spec.depth)
        proj_init = scaled(normal(std), lambda s: jnp.full(s[-1:], residual_factor))
        self.proj = dense(c, ("joined_heads", "embed"), "proj", dtype, proj_init)

    @property
    def softmax_scale(self) -> float:
        return 1.0 if self.spec.attn_l2_norm else 0.25 / math.sqrt(self.spec.embed_dim // self.spec.num_heads)

    def project(self, x_BLC: jax.Array):
        """(B, L, C) -> q, k, v each heads-major (B, H, L, D), the layout `attention` reads; q/k
        normalised and q scaled when l2-norm is on."""
        b, length, c = x_BLC.shape
        h = self.spec.num_heads
        qkv = self.mat_qkv(x_BLC)
        qkv = qkv + jnp.concatenate([self.q_bias, jnp.zeros_like(self.q_bias), self.v_bias]
                                    ).astype(qkv.dtype)
        qkv = qkv.reshape(b, length, 3, h, c // h)
        q, k, v = (jnp.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))
        if self.spec.attn_l2_norm:
            temperature_H = jnp.exp(jnp.minimum(self.scale_mul, MAX_SCALE_MUL))
            q = l2_normalize(q) * temperature_H[:, None, None].astype(q.dtype)
            k = l2_normalize(k)
        return q, k, v

    def output(self, out_BLHD: jax.Array) -> jax.Array:
        b, length = out_BLHD.shape[:2]
        return self.proj(out_BLHD.reshape(b, length, self.spec.embed_dim))

    def __call__(self, x_BLC: jax.Array) -> jax.Array:
        """Teacher-forced attention over the whole sequence, (B, L, C) -> (B, L, C)."""
        q, k, v = self.project(x_BLC)
        outputs = [
            attention.attend(q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1], self.softmax_scale,
                             self.implementation)
            for (q0, q1), (k0, k1) in self.ranges
        ]
        return self.output(jnp.concatenate(outputs, axis=1))

    def step(self, x_BlC: jax.Array, context, own_valid_Bl: jax.Array):
        """One scale's attention for the sampler.

        Args:
          x_BlC: this scale's (padded) tokens (B, l, C).
          context: sequence of (k_BHcD, v_BHcD, valid_Bc) key segments of earlier scales (may be
            empty); attended together with this scale's own keys, never concatenated.
          own_valid_Bl: (B, l) bool, True on a prefix (the scale's tokens), False on padding.
        Returns:
          (out_BlC, k_BHlD, v_BHlD): the output and this scale's keys/values.
        """
        q, k, v = self.project(x_BlC)
        if not context:  # this scale's own keys only
            lengths_B = jnp.sum(own_valid_Bl, axis=1, dtype=jnp.int32)
            out = attention.attend(q, k, v, self.softmax_scale, self.implementation, lengths_B)
        else:
            segments = [(ck.astype(k.dtype), cv.astype(v.dtype), valid) for ck, cv, valid in context]
            out = attention.attend_segments(q, segments + [(k, v, own_valid_Bl)],
                                            self.softmax_scale)
        return self.output(out), k, v


class FFN(nn.Module):
    """fc1 (C -> hidden) -> tanh-GELU -> fc2 (hidden -> C)."""

    hidden: int
    init_std: float
    fc2_init_factor: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BLC: jax.Array) -> jax.Array:
        c = x_BLC.shape[-1]
        h = dense(self.hidden, ("embed", "mlp"), "fc1", self.dtype, normal(self.init_std))(x_BLC)
        h = jax.nn.gelu(h, approximate=True)
        fc2_init = scaled(normal(self.init_std), lambda s: jnp.full(s[-1:], self.fc2_init_factor))
        return dense(c, ("mlp", "embed"), "fc2", self.dtype, fc2_init)(h)


def ada_lin_init(std: float, channels: int, gamma_chunks: int, gamma: float, rest: float):
    """VAR's AdaLN init: normal(std) kernel, columns of the first `gamma_chunks` C-sized chunks
    (the gammas) scaled by `gamma`, the others (scales, shifts) by `rest`."""

    def factor(shape):
        return jnp.where(jnp.arange(shape[-1]) < gamma_chunks * channels, gamma, rest)

    return scaled(normal(std), factor)


class AdaLNSelfAttn(nn.Module):
    """x += gamma1 * Attn(LN(x)(1+scale1)+shift1); x += gamma2 * FFN(LN(x)(1+scale2)+shift2).

    The six modulation vectors come from this block's `ada_lin` (SiLU -> Dense(D -> 6C)), or, when
    `shared_aln`, from the shared projection plus this block's `ada_gss` (6, C). Order: gamma1,
    gamma2, scale1, scale2, shift1, shift2. One instance is scanned over the depth by `VAR`, so
    its parameters carry a leading `layers` axis.
    """

    spec: TransformerSpec
    ranges: Sequence
    attention: str = "xla"  # the resolved kernel (`attention.resolve`)

    def setup(self):
        spec = self.spec
        c = spec.embed_dim
        if self.spec.shared_aln:
            def ada_gss_init(key, shape, dtype=jnp.float32):
                factor = jnp.array([self.spec.init_adaln_gamma] * 2 + [self.spec.init_adaln] * 4, dtype)
                return jax.random.normal(key, shape, dtype) / math.sqrt(c) * factor[:, None]

            self.ada_gss = self.param(
                "ada_gss", nn.with_logical_partitioning(ada_gss_init, ("adaln", "embed")), (6, c)
            )
        else:
            init = ada_lin_init(spec.weight_std, c, 2, spec.init_adaln_gamma, spec.init_adaln)
            self.ada_lin = dense(6 * c, ("embed", "adaln"), "ada_lin", jnp.float32, init)
        self.attn = SelfAttention(spec, self.ranges, self.attention)
        self.ffn = FFN(round(c * spec.mlp_ratio), spec.weight_std, 1.0 / math.sqrt(2 * spec.depth),
                       spec.compute_dtype)

    def modulations(self, cond) -> list[jax.Array]:
        """cond (B, C), or (B, 6, C) when shared -> six (B, 1, C) vectors."""
        if self.spec.shared_aln:
            mods_B6C = self.ada_gss[None] + cond
        else:
            mods_B6C = self.ada_lin(nn.silu(cond)).reshape(-1, 6, self.spec.embed_dim)
        return [mods_B6C[:, None, i] for i in range(6)]

    def _modulate(self, x, scale, shift):
        return (layer_norm(x, self.spec.norm_eps) * (1 + scale) + shift).astype(self.spec.compute_dtype)

    def _branch(self, out, gamma, drop_rate):
        out = out.astype(jnp.float32) * gamma
        if drop_rate is not None:
            out = drop_path(out, drop_rate, self.make_rng("dropout"))
        return out

    def __call__(self, x_BLC: jax.Array, cond: jax.Array, drop_rate=None) -> jax.Array:
        """Teacher forcing over the whole sequence (B, L, C); drop_rate: this block's drop-path
        rate (a traced scalar in training), or None for none."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulations(cond)
        x_BLC = x_BLC + self._branch(self.attn(self._modulate(x_BLC, scale1, shift1)), gamma1,
                                     drop_rate)
        return x_BLC + self._branch(self.ffn(self._modulate(x_BLC, scale2, shift2)), gamma2,
                                    drop_rate)

    def step(self, x_BlC: jax.Array, cond: jax.Array, context, own_valid_Bl: jax.Array):
        """One scale for the sampler (inference only); returns (x, k, v) as SelfAttention.step."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulations(cond)
        out, k, v = self.attn.step(self._modulate(x_BlC, scale1, shift1), context, own_valid_Bl)
        x_BlC = x_BlC + self._branch(out, gamma1, None)
        x_BlC = x_BlC + self._branch(self.ffn(self._modulate(x_BlC, scale2, shift2)), gamma2, None)
        return x_BlC, k, v


def scan_blocks(body, depth: int, remat: str = "none"):
    """`body(block, carry, *xs) -> (carry, ys)` scanned over `depth` layers of one block module
    whose parameters (and per-layer rngs) are stacked on a leading `layers` axis; with `remat`,
    each layer is rematerialised in the backward pass by that policy."""
    if validate_remat(remat) != "none":
        body = nn.remat(body, policy=REMAT_POLICIES[remat], prevent_cse=False)
    return nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                   length=depth, metadata_params={nn.PARTITION_NAME: "layers"})


class VAR(nn.Module):
    """The scale-wise transformer: labels + teacher-forcing tokens -> logits (B, L, V) float32."""

    spec: TransformerSpec = TransformerSpec()
    patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    vocab_size: int = 4096  # the tokenizer's
    z_channels: int = 32  # the tokenizer's

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    def setup(self):
        spec = self.spec
        c, std = spec.embed_dim, spec.weight_std
        length = scales.sequence_length(self.patch_nums)
        self.word_embed = dense(c, ("latent", "embed"), "word_embed", jnp.float32, normal(std))
        self.class_emb = nn.Embed(
            self.spec.num_classes + 1, c,
            embedding_init=nn.with_logical_partitioning(normal(std), ("classes", "embed")),
        )
        self.lvl_embed = nn.Embed(
            len(self.patch_nums), c,
            embedding_init=nn.with_logical_partitioning(normal(std), ("levels", "embed")),
        )
        self.pos_start = self.param(
            "pos_start", nn.with_logical_partitioning(normal(std), (None, "embed")),
            (self.first_l, c),
        )
        self.pos_embed = self.param(
            "pos_embed", nn.with_logical_partitioning(normal(std), ("tokens", "embed")),
            (length, c),
        )
        if self.spec.shared_aln:
            self.shared_ada_lin = dense(6 * c, ("embed", "adaln"), "shared_ada_lin", jnp.float32,
                                        normal(std))
        ranges = tuple(zip(scales.scale_bounds(self.patch_nums),
                           spec.attention_mask.key_ranges(self.patch_nums)))
        self.blocks = AdaLNSelfAttn(
            spec, ranges, attention.resolve(spec.attention, spec.compute_dtype, spec.head_dim),
            name="blocks")
        self.head_ada_lin = dense(
            2 * c, ("embed", "adaln"), "head_ada_lin", jnp.float32,
            ada_lin_init(std, c, 0, 0.0, self.spec.init_adaln),
        )
        self.head = dense(
            self.vocab_size, ("embed", "vocab"), "head", jnp.float32,
            scaled(normal(std), lambda s: jnp.full(s[-1:], self.spec.init_head)),
        )

    def condition(self, labels_B: jax.Array, train: bool = False) -> jax.Array:
        """Class embedding (B, C); in training, labels are replaced by the null class
        (index num_classes) with probability cond_drop_rate."""
        if train and self.spec.cond_drop_rate > 0:
            drop = jax.random.uniform(self.make_rng("dropout"), labels_B.shape) < self.spec.cond_drop_rate
            labels_B = jnp.where(drop, self.spec.num_classes, labels_B)
        return self.class_emb(labels_B)

    def embed_tokens(self, cond_BC: jax.Array, x_BLCv: jax.Array) -> jax.Array:
        """Input sequence (B, L, C) float32: [sos + pos_start ; word_embed(x)] + lvl + pos."""
        b = cond_BC.shape[0]
        sos = jnp.broadcast_to(cond_BC[:, None], (b, self.first_l, cond_BC.shape[-1]))
        sos = sos + self.pos_start[None]
        seq = jnp.concatenate([sos, self.word_embed(x_BLCv.astype(jnp.float32))], axis=1)
        levels = jnp.asarray(scales.token_levels(self.patch_nums))
        return seq + self.lvl_embed(levels)[None] + self.pos_embed[None]

    def block_condition(self, cond_BC: jax.Array) -> jax.Array:
        """What each block receives: raw cond (B, C), or the shared (B, 6, C) modulation."""
        if self.spec.shared_aln:
            return self.shared_ada_lin(nn.silu(cond_BC)).reshape(-1, 6, self.spec.embed_dim)
        return cond_BC

    def logits(self, h_BLC: jax.Array, cond_BC: jax.Array) -> jax.Array:
        """AdaLN before the head, then the head: (B, L, C) -> (B, L, V) float32."""
        scale, shift = jnp.split(self.head_ada_lin(nn.silu(cond_BC))[:, None], 2, axis=-1)
        h = layer_norm(h_BLC, self.spec.norm_eps) * (1 + scale) + shift
        return self.head(h).astype(jnp.float32)

    def embed_scale(self, cond_BC: jax.Array, x_BlCv: jax.Array, level, positions_l: jax.Array,
                    is_first) -> jax.Array:
        """The sampler's input for one (padded) scale, (B, l, C) float32.

        Args:
          cond_BC: class embeddings (B, C).
          x_BlCv: area-downsampled f_hat tokens (B, l, Cv) (ignored on the first scale).
          level: the scale's level index (may be traced).
          positions_l: (l,) int token positions in the full sequence (clipped for padding).
          is_first: whether this is the first scale (sos tokens); may be traced.
        """
        word = self.word_embed(x_BlCv.astype(jnp.float32))
        sos = cond_BC[:, None] + self.pos_start[jnp.minimum(positions_l, self.first_l - 1)][None]
        x = jnp.where(is_first, sos, word)
        return x + self.lvl_embed(level)[None, None] + self.pos_embed[positions_l][None]

    def step(self, x_BlC: jax.Array, cond_BC: jax.Array, contexts, own_valid_Bl: jax.Array):
        """Runs one scale through all blocks (inference), scanned over the depth.

        Args:
          x_BlC: `embed_scale` output (B, l, C).
          cond_BC: class embeddings (B, C).
          contexts: sequence of key segments (k_NBHcD, v_NBHcD, valid_Bc) this scale attends to
            besides itself, keys/values stacked over the N blocks (empty for the markov mask).
          own_valid_Bl: (B, l) bool, False on padding.
        Returns:
          (logits_BlV float32, k_NBHlD, v_NBHlD) with this scale's keys/values for later scales.
        """
        block_cond = self.block_condition(cond_BC)
        kv_per_layer = tuple((k_N, v_N) for k_N, v_N, _ in contexts)
        valids = tuple(valid for _, _, valid in contexts)

        def layer(block, x, kv):
            context = [(k, v, valid) for (k, v), valid in zip(kv, valids)]
            x, k, v = block.step(x, block_cond, context, own_valid_Bl)
            return x, (k, v)

        x_BlC, (keys, values) = scan_blocks(layer, self.spec.depth)(self.blocks, x_BlC, kv_per_layer)
        return self.logits(x_BlC, cond_BC), keys, values

    def create_params(self, labels_B: jax.Array) -> jax.Array:
        """Touches every parameter on a one-token input (what `init` runs, through
        `models.init_params`): creating parameters never traces the model at full size."""
        cond_BC = self.condition(labels_B)
        x_Bl1 = jnp.zeros(labels_B.shape + (1, self.z_channels), jnp.float32)
        x_BlC = self.embed_scale(cond_BC, x_Bl1, jnp.int32(0), jnp.zeros((1,), jnp.int32), True)
        return self.step(x_BlC, cond_BC, (), jnp.ones(x_BlC.shape[:2], bool))[0]

    def __call__(self, labels_B: jax.Array, x_BLCv: jax.Array, train: bool = False) -> jax.Array:
        """Teacher-forced logits.

        Args:
          labels_B: (B,) int class labels; num_classes is the null class.
          x_BLCv: (B, L - pn_0^2, Cv) teacher-forcing input from the tokenizer.
          train: enables label dropout and drop-path (needs a 'dropout' rng) and rematerialises
            the blocks by `remat`.
        Returns:
          logits_BLV (B, L, V) float32.
        """
        expected = scales.sequence_length(self.patch_nums) - self.first_l
        if x_BLCv.ndim != 3 or x_BLCv.shape[1:] != (expected, self.z_channels):
            raise ValueError(
                f"teacher-forcing input must be (B, {expected}, {self.z_channels}) for patch_nums "
                f"{tuple(self.patch_nums)}, got {tuple(x_BLCv.shape)}"
            )
        if labels_B.shape != x_BLCv.shape[:1]:
            raise ValueError(f"labels must be (B,) = ({x_BLCv.shape[0]},), got {labels_B.shape}")
        cond_BC = self.condition(labels_B, train)
        h_BLC = self.embed_tokens(cond_BC, x_BLCv)
        block_cond = self.block_condition(cond_BC)
        drop_path_on = train and self.spec.drop_path_rate > 0
        rates_N = jnp.linspace(0.0, self.spec.drop_path_rate, self.spec.depth, dtype=jnp.float32)

        def layer(block, h, rate):
            return block(h, block_cond, rate if drop_path_on else None), None

        h_BLC, _ = scan_blocks(layer, self.spec.depth, self.spec.remat if train else "none")(
            self.blocks, h_BLC, rates_N)
        return self.logits(h_BLC, cond_BC)
