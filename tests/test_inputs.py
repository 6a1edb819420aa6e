"""Inputs that used to give a silent wrong answer or a misleading message: NaN/inf images, unknown attn_probs
points, a wider input dtype than the model's, None or a string instead of an array, --top 0."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import swinref
from swinref import cli
from swinref import model as model_module
from swinref.errors import InputError

TINY = swinref.get_config("T").replace(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=10,
                                        img_size=(32, 32))


@pytest.fixture(scope="module")
def model():
    return swinref.random_model(TINY, dtype="float64")


def images(batch=2):
    return np.random.default_rng(0).standard_normal((batch, 3, 32, 32))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_an_error_naming_the_count_and_the_opt_out(model, value):
    x = images()
    x[1, 2, 3, 4:7] = value
    for run in (model, model.features, model.trace):
        with pytest.raises(InputError, match=r"holds 3 non-finite values \(NaN or inf\) of 6144.*check_finite=False"):
            run(x)
    with np.errstate(invalid="ignore"):
        logits = model(x, check_finite=False)  # the opt-out runs: the clean image is unaffected
        assert swinref.forward(model.params, x, TINY, check_finite=False).shape == (2, 10)
    assert np.isfinite(logits[0]).all() and not np.isfinite(logits[1]).all()
    np.testing.assert_allclose(logits[0], model(x[:1])[0], rtol=0, atol=1e-12)


def test_unknown_attn_probs_point_raises_naming_the_blocks(model):
    with pytest.raises(InputError, match=r"no block of this model: 'bogus'.*depth \(2, 2\).*layers\.0\.blocks\.1"):
        model.trace(images(1), attn_probs=["bogus"])
    with pytest.raises(InputError, match="layers.2.blocks.0"):
        model.trace(images(1), attn_probs=["layers.0.blocks.0", "layers.2.blocks.0"])
    with pytest.raises(InputError, match="attn_probs"):
        swinref.point_names(TINY, attn_probs=["layers.0.block.1"])
    kept = model.trace(images(1), attn_probs="layers.1.blocks.1")  # one name as a string, not its letters
    assert [k for k in kept if k.endswith("attn_probs")] == ["layers.1.blocks.1.attn_probs"]


def test_wider_input_dtype_warns_once_and_is_rounded(monkeypatch):
    monkeypatch.setattr(model_module, "_WARNED_CASTS", set())
    small = swinref.random_model(TINY, dtype="float32")
    x = images(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = small(x)
        small(x)
        small(x.astype(np.float16))  # widening: nothing is lost, no warning
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "float64" in messages[0] and "dtype='float64'" in messages[0]
    assert caught[0].filename == __file__  # points at the caller, not inside swinref
    np.testing.assert_array_equal(first, small(x.astype(np.float32)))


@pytest.mark.parametrize("value, said", [(None, "got None"), ("cat.jpg", "got a str 'cat.jpg'"),
                                         (b"\x89PNG", "got a bytes"), ([["a", "b"]], "dtype <U1 and shape [1, 2]"),
                                         (3, "got an array of shape []")])
def test_non_array_input_says_what_it_got(model, value, said):
    with pytest.raises(InputError) as info:
        model(value)
    assert said in str(info.value)
    assert "[B, 3, H, W]" in str(info.value)


def test_top_zero_names_the_option(capsys):
    code = cli.main(["predict", "x.png", "--top", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--top" in err and "number of classes to show must be a positive integer" in err
    assert "batch" not in err.splitlines()[-1]
