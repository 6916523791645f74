"""Samples from a fixed seed match the tokens main wrote before the typed-spec refactor (issue 21),
for every mask and sampler option (tests/fixtures/make_sampler_tokens.py lists the cases)."""

import importlib.util
import json
import pathlib

import jax
import numpy as np

FIXTURES = pathlib.Path(__file__).with_name("fixtures")


def _maker():
    spec = importlib.util.spec_from_file_location("make_sampler_tokens",
                                                  FIXTURES / "make_sampler_tokens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tokens_match_the_saved_ones_for_every_mask_and_option():
    maker = _maker()
    saved = json.loads((FIXTURES / "sampler_tokens.json").read_text())
    model, params = maker.model_and_params()
    now = maker.sample_all(model, params)
    # The same JAX gives the same program: every token equal. Another JAX version may round a
    # float differently and move a draw at a probability boundary: then 99 % must still agree.
    exact = saved["jax_version"] == jax.__version__
    for mask, cases in saved["tokens"].items():
        for case, expected in cases.items():
            got, want = np.asarray(now[mask][case]["idx"]), np.asarray(expected["idx"])
            assert got.shape == want.shape, (mask, case)
            agree = np.mean(got == want)
            assert agree == 1.0 if exact else agree >= 0.99, (mask, case, agree)
            if exact:
                assert now[mask][case]["resampled"] == expected["resampled"], (mask, case)
