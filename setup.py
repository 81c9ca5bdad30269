"""almtok: text-to-audio language modelling over continuous-valued tokens."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "numpy>=2.0,<2.5",
    "scipy>=1.11",
    "librosa>=0.11,<0.12",
    "soundfile>=0.12",
    "tensorflow-datasets>=4.9.10,<4.10",
    "tensorflow-cpu>=2.21,<2.22",
    "tensorboard>=2.21,<2.22",
    "clu>=0.0.12",
    "ml-collections>=1.1,<1.2",
    "einops>=0.8.2,<0.9",
    "safetensors>=0.4",
    "tokenizers>=0.19",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "absl-py>=2.1",
    # TFDS needs it to build a dataset defined inside a package (it only declares it for
    # Python < 3.9).
    "importlib_resources>=6",
]

EXTRAS_REQUIRE = {
    # Accelerator builds of jaxlib for the launch recipes (experiments/launch/).
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    "cuda": ["jax[cuda12]>=0.10.2,<0.11"],
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "filelock>=3.12",   # tests/conftest.py: session fixtures built once across workers.
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        "ruff>=0.6",        # `make lint`, run by `make test` (config: ruff.toml).
    ],
}

setuptools.setup(
    name="almtok",
    version="0.1.0",
    description=__doc__,
    packages=setuptools.find_packages(include=["almtok", "almtok.*", "configs"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
