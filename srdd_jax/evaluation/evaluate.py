"""Sample quality and likelihood of a trained model: `--config.mode=evaluate`, or from scripts.

In-domain metrics (any dataset; the only meaningful ones for small images) use a small classifier
trained on the dataset itself (`classifier.py`) and are named after the dataset tag (`fmnist` for
Fashion-MNIST, the TFDS name, or the image folder's name):

- `fid_<tag>`: Fréchet distance between classifier features of samples and of the real split;
- `precision_<tag>`, `recall_<tag>`: k-NN precision/recall on the same features (against as many
  real images as there are samples);
- `class_accuracy`: fraction of class-conditional samples classified as their label
  (`classifier_test_accuracy` is the classifier's accuracy on real held-out images, for context).

Inception metrics (`fid_inception`, `is_inception`, `precision_inception`, `recall_inception`)
need `config.evaluate.inception_weights`; without it they are omitted and the reason is logged.
`evaluate` adds the held-out NLL (`likelihood.py`), the editing metrics when evaluate.edit names
tasks (`edit_eval.py`), and writes `<workdir>/evaluate/report.json`.

An `Evaluator` is built from (model spec, EvalSpec, DataSpec, seed, workdir, mesh) and owns what
evaluations share: the classifier, the real statistics, and the samplers and Inception networks it
made (each compiles once per batch size). For sweeps (CFG, masked resampling), build the
classifier and real statistics once with `load_classifier` and `real_statistics`, then call
`sample_metrics` per setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from srdd_jax import image_grids
from srdd_jax.data import loading, pipeline
from srdd_jax.data.spec import DataSpec
from srdd_jax.evaluation import classifier as classifier_lib
from srdd_jax.evaluation import edit_eval, features, likelihood, metrics, precision_recall
from srdd_jax.evaluation.spec import EvalSpec
from srdd_jax.models import ModelSpec
from srdd_jax.sampling import generation
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings


@dataclasses.dataclass(frozen=True)
class RealStats:
    """Reference statistics of the real split: classifier features, and Inception pool features
    when Inception weights were given (else None)."""

    classifier: features.FeatureStats
    inception: features.FeatureStats | None = None


def dataset_tag(data: DataSpec) -> str:
    """Short dataset name for metric keys: fmnist, the TFDS name, or the image folder's name."""
    if data.source == "fashion_mnist":
        return "fmnist"
    name = data.name if data.source == "tfds" else os.path.basename(os.path.normpath(data.root))
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "data"


def first_images(source, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n (0: all) uint8 images (n, H, W, C) and int32 labels (n,) of a source in order."""
    images, labels, have = [], [], 0
    for batch_images, batch_labels in source.ordered(4096):
        images.append(batch_images)
        labels.append(batch_labels)
        have += len(batch_labels)
        if n and have >= n:
            break
    images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
    return (images[:n], labels[:n]) if n else (images, labels)


class Evaluator:
    """Scores one model on one dataset (see the module docstring)."""

    def __init__(self, spec: ModelSpec, ev: EvalSpec, data: DataSpec, seed: int, workdir: str,
                 mesh: Mesh | None = None):
        """seed: the experiment's (the classifier's initialisation and held-out split)."""
        self.spec, self.ev, self.data, self.seed = spec, ev, data, seed
        self.workdir, self.mesh = workdir, mesh
        self.tag = dataset_tag(data)
        self._samplers = {}  # settings -> Sampler (it keeps its programs)
        self._inception = None  # features.InceptionFeatures, made on first use

    def classifier_settings(self) -> dict:
        """What decides the in-domain classifier: its data, image shape, classes and training."""
        ev = self.ev
        size, channels = loading.image_shape(self.spec)
        return dict(data={k: getattr(self.data, k) for k in ("source", "root", "name", "split")},
                    image_size=size, channels=channels, classes=self.spec.transformer.num_classes,
                    test_split=ev.split, steps=ev.classifier_steps, images=ev.classifier_images,
                    reference_images=ev.reference_images, seed=self.seed)

    def load_classifier(self) -> classifier_lib.Classifier:
        """The in-domain classifier for these settings (`classifier_settings`), from its cache under
        evaluate.classifier_dir (default <workdir>/evaluate/classifier): one folder per setting,
        named by their hash and holding them in settings.json, so a cached classifier is reused
        only when every setting matches; otherwise one is trained there first, on data.split and
        tested on evaluate.split (when both are the same split or an image folder, on a held-out
        tenth of it)."""
        ev, data = self.ev, self.data
        settings = self.classifier_settings()
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        directory = os.path.join(ev.classifier_dir
                                 or os.path.join(self.workdir, "evaluate", "classifier"), key)
        num_classes = settings["classes"]
        if classifier_lib.exists(directory):
            logging.info("classifier: reusing %s (trained with the same settings)", directory)
            return classifier_lib.load(directory, settings["image_size"], settings["channels"],
                                       num_classes)
        train_images, train_labels = first_images(loading.load(data, self.spec),
                                                  ev.classifier_images)
        if data.source == "image_folder" or ev.split == data.split:
            order = np.random.default_rng(self.seed).permutation(len(train_labels))
            held = order[:max(1, len(order) // 10)]
            test_images, test_labels = train_images[held], train_labels[held]
            train_images = train_images[order[len(held):]]
            train_labels = train_labels[order[len(held):]]
        else:
            test_images, test_labels = first_images(loading.load(data, self.spec, ev.split),
                                                    ev.reference_images)
        trained = classifier_lib.train(train_images, train_labels, test_images, test_labels,
                                       num_classes, ev.classifier_steps, seed=self.seed)
        if jax.process_index() == 0:
            trained.save(directory)
            with open(os.path.join(directory, "settings.json"), "w") as f:
                json.dump(settings, f, indent=1)
        return trained

    def real_images(self) -> tuple[np.ndarray, np.ndarray]:
        """The first evaluate.reference_images images and labels of evaluate.split."""
        return first_images(loading.load(self.data, self.spec, self.ev.split),
                            self.ev.reference_images)

    def real_statistics(self, classifier: classifier_lib.Classifier, images_NHWC: np.ndarray,
                        cache_dir: str) -> RealStats:
        """Statistics of real uint8 (N, H, W, C) images (the evaluation split), cached in
        `cache_dir` under names that hold the dataset, split and classifier fingerprint."""
        ev = self.ev
        split = re.sub(r"[^A-Za-z0-9]+", "_", ev.split)
        stats = features.cached_stats(
            cache_dir, f"{self.tag}_{split}_{len(images_NHWC)}_classifier_{classifier.fingerprint}",
            lambda: classifier.features(images_NHWC, ev.batch_size, self.mesh))
        inception_stats = None
        if ev.inception_weights:
            inception_stats = features.cached_stats(
                cache_dir, f"{self.tag}_{split}_{len(images_NHWC)}_inception",
                lambda: self.inception(images_NHWC)["pool"])
        return RealStats(stats, inception_stats)

    def inception(self, images_NHWC: np.ndarray) -> dict:
        if self._inception is None:
            self._inception = features.InceptionFeatures(self.ev.inception_weights, self.mesh,
                                                         self.ev.inception_batch_size)
        return self._inception(images_NHWC)

    def sampler(self, settings: SamplerSettings) -> Sampler:
        if settings not in self._samplers:
            self._samplers[settings] = Sampler(self.spec, settings, mesh=self.mesh)
        return self._samplers[settings]

    def sample_images(self, params: dict, settings: SamplerSettings, labels_N: np.ndarray,
                      seed: int) -> tuple[np.ndarray, dict]:
        """uint8 (N, H, W, C) samples for (N,) labels in batches of evaluate.batch_size
        (`generation.generate`), and {images_per_s (sampling + decoding, the compiling first
        batch excluded), compile_s, resampled_per_scale and tokens_per_scale (MR's redraws and
        all tokens, per sampled scale)}."""
        out = generation.generate(self.sampler(settings), params, labels_N, jax.random.key(seed),
                                  self.ev.batch_size)
        logging.info("sampled %d images (%.1f images/s, first batch with compilation %.1fs)",
                     len(labels_N), out["images_per_s"], out["compile_s"])
        return image_grids.to_uint8(out["images_NHWC"]), dict(
            images_per_s=out["images_per_s"], compile_s=out["compile_s"],
            resampled_per_scale=out["resampled_K"].tolist(),
            tokens_per_scale=out["tokens_K"].tolist())

    def sample_metrics(self, params: dict, settings: SamplerSettings,
                       classifier: classifier_lib.Classifier, real_stats: RealStats,
                       per_class: int, seed: int) -> dict:
        """Samples `per_class` images of every class with `settings` and scores them.

        Returns {fid_<tag>, precision_<tag>, recall_<tag>, class_accuracy,
        class_accuracy_per_class (K floats), classifier_test_accuracy, images, images_per_s,
        compile_s, resampled_per_scale, tokens_per_scale}, plus {fid_inception, is_inception,
        is_inception_std, precision_inception, recall_inception} when evaluate.inception_weights
        is set.
        """
        ev = self.ev
        num_classes = self.spec.transformer.num_classes
        labels_N = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
        images, timing = self.sample_images(params, settings, labels_N, seed)
        result = {**self.classifier_metrics(classifier, real_stats, images, labels_N), **timing}
        if not ev.inception_weights:
            logging.info("Inception metrics skipped: config.evaluate.inception_weights is empty "
                         "(see srdd_jax/evaluation/inception_weights.py for the file)")
            return result
        if real_stats.inception is None:
            raise ValueError("config.evaluate.inception_weights is set but real_stats has no "
                             "Inception statistics: build them with real_statistics() first")
        inception = self.inception(images)
        scores = _scores(inception["pool"], real_stats.inception, ev.pr_k)
        is_mean, is_std = metrics.inception_score(inception["logits_unbiased"],
                                                  min(10, len(images)))
        result.update(fid_inception=scores["fid"], is_inception=is_mean, is_inception_std=is_std,
                      precision_inception=scores["precision"], recall_inception=scores["recall"])
        return result

    def classifier_metrics(self, classifier: classifier_lib.Classifier, real_stats: RealStats,
                           images_NHWC: np.ndarray, labels_N: np.ndarray) -> dict:
        """The in-domain scores of uint8 (N, H, W, C) images meant to be of classes `labels_N`:
        {fid_<tag>, precision_<tag>, recall_<tag>, class_accuracy, class_accuracy_per_class,
        classifier_test_accuracy, images}. Samples or real held-out images alike (the latter
        give the floor these numbers reach at that many images)."""
        tag = self.tag
        out = classifier(images_NHWC, self.ev.batch_size, self.mesh)
        scores = _scores(out["features"], real_stats.classifier, self.ev.pr_k)
        correct_N = np.argmax(out["logits"], axis=-1) == labels_N
        return {f"fid_{tag}": scores["fid"], f"precision_{tag}": scores["precision"],
                f"recall_{tag}": scores["recall"], "class_accuracy": float(correct_N.mean()),
                "class_accuracy_per_class": [float(correct_N[labels_N == c].mean())
                                             for c in range(self.spec.transformer.num_classes)],
                "classifier_test_accuracy": classifier.test_accuracy, "images": len(labels_N)}

    def evaluate(self, params: dict, settings: SamplerSettings) -> dict:
        """Held-out NLL and sample metrics of `params`; writes and returns the report
        `<workdir>/evaluate/report.json` (see `sample_metrics` for the sample keys; NLL keys
        are nll_bits_per_token, nll_bits_per_token_per_scale, nll_bits_per_image and the same
        with `nll_uncond_` for the null class)."""
        ev = self.ev
        out_dir = os.path.join(self.workdir, "evaluate")
        images, labels = self.real_images()
        report = dict(dataset=self.tag, split=ev.split, reference_images=len(labels),
                      mask=self.spec.transformer.mask)
        nll = likelihood.Likelihood(self.spec, ev.batch_size, self.mesh)
        count = min(ev.nll_images or len(labels), len(labels))
        for prefix, unconditional in (("nll", False), ("nll_uncond", True))[:1 + ev.nll_unconditional]:
            result = nll.nll(params, images[:count], labels[:count], unconditional)
            report.update({f"{prefix}_{key}": value for key, value in result.items()
                           if key not in ("images", "tokens_per_image")})
        report.update(nll_images=count, tokens_per_image=result["tokens_per_image"])
        classifier = self.load_classifier()
        real = self.real_statistics(classifier, images,
                                    ev.reference_cache or os.path.join(out_dir, "reference"))
        report.update(self.sample_metrics(params, settings, classifier, real, ev.per_class,
                                          ev.seed))
        if ev.edit.tasks:
            count = min(ev.edit.images, len(labels))
            report["edit"] = edit_eval.evaluate(self, params, settings, ev.edit,
                                                pipeline.to_unit_range(images[:count]),
                                                labels[:count], classifier, real)
            for task, scores in report["edit"].items():
                logging.info("editing, %s:\n%s", task, format_table(scores))
        report["settings"] = dataclasses.asdict(settings)
        if not ev.inception_weights:
            report["inception"] = "skipped: config.evaluate.inception_weights is empty"
        if jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "report.json"), "w") as f:
                json.dump(report, f, indent=1)
        logging.info("evaluation of %s (%s split):\n%s", report["dataset"], ev.split,
                     format_table(report))
        return report


def _scores(fake_ND: np.ndarray, real: features.FeatureStats, k: int) -> dict[str, float]:
    """{fid, precision, recall}: FID against all real statistics; k-NN precision/recall against
    as many real points as there are samples (a fixed random subset), since both manifolds'
    radii depend on their set sizes."""
    mu, sigma = metrics.feature_statistics(fake_ND)
    subset = np.sort(np.random.default_rng(0).permutation(len(real.features))[:len(fake_ND)])
    precision, recall = precision_recall.precision_recall(real.features[subset], fake_ND, k)
    return dict(fid=metrics.frechet_distance(mu, sigma, real.mu, real.sigma), precision=precision,
                recall=recall)


def format_table(report: dict) -> str:
    """Two aligned columns, one scalar per row; lists are shown rounded on one row."""
    rows = []
    for key, value in report.items():
        if isinstance(value, dict):
            continue
        if isinstance(value, list):
            value = " ".join(f"{v:.3f}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.4f}"
        rows.append((key, str(value)))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"  {key:<{width}}  {value}" for key, value in rows)
