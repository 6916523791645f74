"""A model's spec (`ModelSpec`: one schema for both models) and its bundle (`Model`).

    patch_nums: tuple of scale sides, e.g. (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    tokenizer_patch_nums: the pyramid the tokenizer was trained on (its Phi per scale); () means
                patch_nums. Set for a scale-distilled student, whose patch_nums are a subset of it.
    class_names: the name of every class label (in label order) of the data the model was
                trained on, for labelled sample grids; () when unknown (converted VAR models).
    tokenizer:  a `TokenizerSpec` (tokenizer/spec.py)
    transformer: a `TransformerSpec` (transformer/spec.py; each field with its kind: identity,
                sampling or execution)

Specs are frozen and validated when made; `ModelSpec.from_dict` reads the JSON of a model
directory (or a config section's plain dict) and `to_dict` writes it. `Model(spec)` (cached per
spec) gives the modules, abstract and initialised parameters, their shardings on a mesh and the
derived sizes. The transformer's vocab_size and z_channels are the tokenizer's, so they are given
once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from srdd_jax import host_memory, parallel, scales, spec_fields
from srdd_jax.tokenizer.spec import TokenizerSpec
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.transformer import spec as transformer_spec
from srdd_jax.transformer.model import VAR
from srdd_jax.transformer.spec import TransformerSpec

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
IDENTITY, SAMPLING, EXECUTION = (transformer_spec.IDENTITY, transformer_spec.SAMPLING,
                                 transformer_spec.EXECUTION)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Both models' settings (see the module docstring); validated when made."""

    patch_nums: tuple[int, ...] = PATCH_NUMS_256
    tokenizer_patch_nums: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    tokenizer: TokenizerSpec = TokenizerSpec()
    transformer: TransformerSpec = TransformerSpec()

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """ValueError naming the first bad field of the spec and how to fix it."""
        scales.validate_patch_nums(self.patch_nums)
        full = self.tokenizer_patch_nums
        if full:
            scales.validate_patch_nums(full)
            if not set(self.patch_nums) <= set(full) or self.patch_nums[-1] != full[-1]:
                raise ValueError(f"model.patch_nums={self.patch_nums} must be a subset of "
                                 f"model.tokenizer_patch_nums={full} ending with its last scale")
        self.tokenizer.validate()
        self.transformer.validate()
        names, classes = self.class_names, self.transformer.num_classes
        if names and len(names) != classes:
            raise ValueError(f"model.class_names has {len(names)} names for "
                             f"model.transformer.num_classes={classes}: give one per class, or ()")

    # ---------------------------------------------------------------------------- conversions
    @classmethod
    def from_dict(cls, raw: Mapping) -> ModelSpec:
        """The spec of a plain dict (a model directory's JSON, a config section's `to_dict()`).
        Fields absent from earlier versions' directories (execution settings, class names,
        tokenizer_patch_nums) take their defaults; an unknown field is a ValueError naming it."""
        return spec_fields.from_dict(cls, raw, "model")

    def to_dict(self) -> dict:
        """The plain (JSON-ready) dict `from_dict` reads back; tuples stay tuples."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    def with_transformer(self, **changes) -> ModelSpec:
        """The spec with these transformer fields changed (e.g. mask='var', remat='none')."""
        return self.replace(transformer=dataclasses.replace(self.transformer, **changes))

    # ------------------------------------------------------------------------------- by kind
    @staticmethod
    def field_paths(kind: str) -> tuple[str, ...]:
        """Dotted paths (under `model.`) of the transformer fields of one kind."""
        return tuple(f"transformer.{f.name}" for f in dataclasses.fields(TransformerSpec)
                     if transformer_spec.kind_of(f) == kind)

    def training_identity(self) -> dict:
        """What a training run's checkpoints must agree on: every field but the execution ones."""
        raw = self.to_dict()
        for field in dataclasses.fields(TransformerSpec):
            if transformer_spec.kind_of(field) == EXECUTION:
                del raw["transformer"][field.name]
        return raw


def parameter_key(rng) -> jax.Array:
    """An 'rbg' key drawn from `rng` (any JAX key), for creating parameters. Every tensor is then
    drawn by one XLA RngBitGenerator op instead of threefry's unrolled rounds, which makes the
    init program compile several times faster (a model has hundreds of parameter tensors)."""
    return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")


WHICH = ("tokenizer", "transformer")


class Model:
    """A spec's modules, parameters and sizes; `Model(spec)` returns one cached object per spec."""

    _made: dict = {}  # spec -> Model

    def __new__(cls, spec: ModelSpec):
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"Model takes a ModelSpec, got {type(spec).__name__}: read a config "
                            "section with modes.specs.model_spec, a JSON dict with "
                            "ModelSpec.from_dict")
        if spec in cls._made:
            return cls._made[spec]
        model = cls._made[spec] = super().__new__(cls)
        model.spec = spec
        model.tokenizer = model.tokenizer_in(jnp.float32)
        model.transformer = VAR(spec.transformer, spec.patch_nums, spec.tokenizer.vocab_size,
                                spec.tokenizer.z_channels)
        return model

    def tokenizer_in(self, dtype) -> VQVAE:
        """The tokenizer computing in `dtype` (its parameters stay float32)."""
        spec = self.spec
        return VQVAE(spec.tokenizer, spec.patch_nums, spec.tokenizer_patch_nums, dtype)

    # ---------------------------------------------------------------------------- sizes
    @property
    def image_size(self) -> int:
        return self.spec.patch_nums[-1] * self.spec.tokenizer.downsampling

    @property
    def sequence_length(self) -> int:
        return scales.sequence_length(self.spec.patch_nums)

    def zero_image(self) -> jax.Array:
        """A zero image batch (1, H, W, C) of the tokenizer's input size."""
        size = self.image_size
        return jnp.zeros((1, size, size, self.spec.tokenizer.in_channels), jnp.float32)

    # ---------------------------------------------------------------------------- parameters
    def create_params(self, rng, which: str):
        """Boxed parameters (with logical-axis metadata) of 'tokenizer' or 'transformer', traced
        (not jitted): call it inside `jax.jit` (with out_shardings) or `jax.eval_shape`. Both
        models make their parameters from the smallest input (one token, one latent pixel), so
        nothing runs at full size."""
        if which == "tokenizer":
            return self.tokenizer.init(parameter_key(rng), method=VQVAE.create_params)["params"]
        if which == "transformer":
            return self.transformer.init(parameter_key(rng), jnp.zeros((1,), jnp.int32),
                                         method=VAR.create_params)["params"]
        raise ValueError(f"which must be 'tokenizer' or 'transformer', got {which!r}")

    def init_params(self, rng, which: str, mesh=None):
        """Boxed parameters of 'tokenizer' or 'transformer', made by one jitted program. With a
        `parallel.make_mesh` mesh, each parameter is created directly in its sharding (by the
        logical-axis rules), so no device ever holds a whole FSDP-sharded model. Waits for the
        program and hands its freed temporaries back to the system (`host_memory.release_freed`)."""
        make = jax.jit(lambda r: self.create_params(r, which), out_shardings=None if mesh is None
                       else boxed_shardings(self.abstract_params(which), mesh))
        params = jax.block_until_ready(make(rng))
        host_memory.release_freed()
        return params

    @functools.cache  # noqa: B019 (a Model lives as long as its spec's cache entry)
    def abstract_params(self, which: str):
        """Boxed ShapeDtypeStructs of `init_params` (no memory is allocated)."""
        return jax.eval_shape(lambda rng: self.create_params(rng, which), jax.random.key(0))

    def shardings(self, mesh, which: str = ""):
        """The parameters' shardings on a mesh by the logical-axis rules: one model's tree, or
        {'tokenizer': ..., 'transformer': ...} when `which` is empty."""
        if which:
            return parallel.param_shardings(self.abstract_params(which), mesh)
        return {name: self.shardings(mesh, name) for name in WHICH}


def boxed_shardings(boxed, mesh):
    """`parallel.param_shardings` of a boxed tree, boxed the same way (for jit out_shardings)."""
    shardings = parallel.param_shardings(boxed, mesh)

    def box_like(leaf, sharding):
        return leaf.replace_boxed(sharding) if isinstance(leaf, nn.Partitioned) else sharding

    return jax.tree.map(box_like, boxed, shardings,
                        is_leaf=lambda x: isinstance(x, nn.Partitioned))
