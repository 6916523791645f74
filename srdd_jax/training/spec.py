"""A training run's settings, declared once: `TrainSpec` (with its `OptimSpec`), frozen and typed.

One schema serves the three runs (config.tokenizer_training, config.training, config.distill);
fields a run does not read keep their defaults: the tokenizer losses (vq_weight ... disc_optim) are
the tokenizer run's, label_smoothing the transformer's and the student's, cached_tokens the
transformer's, teacher and patch_nums the student's. `modes/specs.py` reads the sections.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    """VAR's recipe: AdamW (0.9, 0.95), wd 0.05, lr = base_lr * batch / 256, clip 2.0.
    weight_decay_end (VAR's twde): wd follows a cosine from weight_decay to it over the run;
    -1 keeps it equal to weight_decay (constant)."""

    base_lr: float = 1e-4
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.05
    weight_decay_end: float = -1.0
    grad_clip: float = 2.0


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    steps: int = 2000
    batch_size: int = 64
    optim: OptimSpec = OptimSpec()
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # > 0: one jax.profiler trace of that many steps in workdir/logs/<run>.
    profile_steps: int = 0
    # On SIGTERM/SIGINT the run saves the step it reached and waits this long for the write
    # (cloud machines allow about 30 s between the notice and the end), then exits 75.
    preemption_save_seconds: float = 25.0
    # The transformer's and the student's runs.
    label_smoothing: float = 0.0
    # A token cache written by mode=tokenize (WORKDIR/tokens/<split>): the step skips the encoder.
    cached_tokens: str = ""
    # The tokenizer's run. Optional losses (0 = off). perceptual: LPIPS (VGG16) between image and
    # reconstruction, with weights from lpips_weights (one .npz, or the lpips package's vgg.pth
    # together with torchvision's vgg16 .pth in vgg16_weights). adversarial: PatchGAN hinge loss
    # from step adversarial_start, discriminator trained by disc_optim.
    vq_weight: float = 1.0
    beta: float = 0.25
    perceptual_weight: float = 0.0
    lpips_weights: str = ""
    vgg16_weights: str = ""
    adversarial_weight: float = 0.0
    adversarial_start: int = 0
    disc_channels: int = 64
    disc_layers: int = 3
    disc_optim: OptimSpec = OptimSpec(base_lr=4e-4)
    # The student's run (mode=distill): a student on the subset `patch_nums` of the teacher's
    # scales, initialised from `teacher` (a model directory; default <workdir>/model).
    teacher: str = ""
    patch_nums: tuple[int, ...] = ()

    def validate(self, section: str, devices: int) -> None:
        """ValueError naming the first bad field (as config.<section>.<field>)."""
        for field in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, field) < 1:
                raise ValueError(f"config.{section}.{field}={getattr(self, field)} must be >= 1")
        if self.batch_size % devices:
            raise ValueError(f"config.{section}.batch_size={self.batch_size} must be divisible by "
                             f"the {devices} devices")
        if self.optim.base_lr <= 0:
            raise ValueError(f"config.{section}.optim.base_lr={self.optim.base_lr} must be > 0")
        if self.optim.weight_decay < 0:
            raise ValueError(f"config.{section}.optim.weight_decay={self.optim.weight_decay} must "
                             "be >= 0")
        if not self.preemption_save_seconds > 0:
            raise ValueError(f"config.{section}.preemption_save_seconds="
                             f"{self.preemption_save_seconds} must be > 0")
        if not 0 <= self.profile_steps < self.steps:
            raise ValueError(f"config.{section}.profile_steps={self.profile_steps} must be in "
                             f"[0, steps={self.steps}) (0: no profile)")
