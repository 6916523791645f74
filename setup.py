"""srdd_jax: scale-wise visual generation (VAR and its Markovian discrete-diffusion variant SRDD)."""

from setuptools import find_packages, setup

setup(
    name="srdd_jax",
    version="0.1.0",
    description="VAR and SRDD (scale-wise discrete diffusion) in JAX/Flax",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["srdd_jax", "srdd_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "numpy>=1.26",
        "absl-py>=2.0",
        "tensorboard>=2.15",
        # clu's TensorBoard writer and tf.data need TensorFlow; the CPU build keeps it off accelerators.
        "tensorflow-cpu>=2.16",
        "pillow>=10.0",
        # srdd_jax.pretrained: VAR's released weights from the Hugging Face Hub (and its cache).
        "huggingface_hub>=0.24",
        # The input pipeline (data/pipeline.py): lazy decoding, per-process shards, worker
        # processes, resumable iterator state; ArrayRecord shards (data/shards.py).
        "grain>=0.2.12",
        "array-record>=0.5",
    ],
    extras_require={
        # Only for reading PyTorch .pth checkpoints (python -m srdd_jax.convert).
        "torch": ["torch>=2.1"],
        # gs:// workdirs: orbax's CheckpointManager asks google-cloud-storage about the bucket.
        "gcs": ["google-cloud-storage>=2.0"],
        # Plots of benchmarks/reproduction.py.
        "repro": ["matplotlib>=3.8"],
        # python -m srdd_jax.app: the local sampling and editing page.
        "app": ["gradio>=5.0"],
        # papermill runs the colabs/ notebooks in tests/test_colabs.py, on an ipykernel of this Python.
        # playwright drives Debian's Chromium in tests/test_app.py (no browser download).
        "test": ["torch>=2.1", "pytest>=8.0", "ruff>=0.6", "matplotlib>=3.8",
                 "papermill>=2.6", "nbformat>=5.9", "ipykernel>=6.29", "gradio>=5.0",
                 "playwright>=1.40"],
    },
)
