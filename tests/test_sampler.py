"""Sampler properties, one filter at a time (M0-W-1030, M0-W-1032, M0-W-1421)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.sampler import (Sampler, SamplingParams, apply_repetition_penalty, min_p_filter, softmax,
                                      top_k_filter, top_p_filter)

logit_arrays = arrays(np.float64, st.integers(2, 60), elements=st.floats(-30, 30))
seeds = st.integers(0, 2**64 - 1)


@given(logits=logit_arrays, seed=seeds)
def test_temperature_zero_is_argmax(logits, seed):
    assert Sampler(SamplingParams(temperature=0.0), seed).sample(logits) == int(np.argmax(logits))


@settings(max_examples=50)
@given(logits=logit_arrays, seed=seeds, temperature=st.floats(0.01, 2.0))
def test_same_seed_same_tokens(logits, seed, temperature):
    params = SamplingParams(temperature=temperature)
    first, second = Sampler(params, seed), Sampler(params, seed)
    assert [first.sample(logits) for _ in range(10)] == [second.sample(logits) for _ in range(10)]


def test_different_seeds_give_different_draws():
    logits = np.zeros(1000)
    draws = {tuple(Sampler(SamplingParams(), seed).sample(logits) for _ in range(5)) for seed in range(20)}
    assert len(draws) == 20


def test_temperature_sharpens_and_flattens():
    logits = np.array([2.0, 1.0, 0.0])

    def frequency_of_top(temperature: float) -> float:
        sampler = Sampler(SamplingParams(temperature=temperature), seed=7)
        return np.mean([sampler.sample(logits) == 0 for _ in range(4000)])

    cold, warm, hot = frequency_of_top(0.25), frequency_of_top(1.0), frequency_of_top(2.0)
    assert cold > warm > hot
    assert abs(warm - softmax(logits)[0]) < 0.03  # temperature 1 draws from the softmax itself


@given(logits=logit_arrays, k=st.integers(1, 70))
def test_top_k_keeps_the_k_best(logits, k):
    kept = np.isfinite(top_k_filter(logits, k))
    assert kept.sum() >= min(k, len(logits))
    assert logits[kept].min() >= logits[~kept].max(initial=-np.inf)
    assert kept.sum() == min(k, len(logits)) or len(np.unique(logits)) < len(logits)  # more only on ties


@given(logits=logit_arrays, p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_nucleus(logits, p):
    kept = np.isfinite(top_p_filter(logits, p))
    probs = softmax(logits)
    assert probs[kept].sum() >= p - 1e-9 or kept.all()
    assert logits[kept].min() >= logits[~kept].max(initial=-np.inf)
    without_weakest = probs[kept].sum() - probs[kept].min()
    assert without_weakest < p + 1e-9  # dropping the weakest kept token would fall short of p


@given(logits=logit_arrays, min_p=st.floats(0.0, 1.0))
def test_min_p_keeps_tokens_near_the_top(logits, min_p):
    kept = np.isfinite(min_p_filter(logits, min_p))
    probs = softmax(logits)
    assert kept[np.argmax(logits)]
    np.testing.assert_array_equal(kept, probs >= min_p * probs.max())


@given(logits=logit_arrays, penalty=st.floats(1.01, 3.0), data=st.data())
def test_repetition_penalty_lowers_only_seen_tokens(logits, penalty, data):
    history = data.draw(st.lists(st.integers(0, len(logits) - 1), max_size=10))
    out = apply_repetition_penalty(logits, history, penalty)
    seen = np.isin(np.arange(len(logits)), history)
    assert np.all(out[seen] <= logits[seen])
    np.testing.assert_array_equal(out[~seen], logits[~seen])


@settings(max_examples=30)
@given(logits=logit_arrays, seed=seeds, k=st.integers(1, 5))
def test_draws_come_only_from_kept_tokens(logits, seed, k):
    sampler = Sampler(SamplingParams(temperature=1.5, top_k=k), seed)
    allowed = np.isfinite(top_k_filter(logits, k))
    assert all(allowed[sampler.sample(logits)] for _ in range(20))


@pytest.mark.parametrize("field, value", [("temperature", -0.1), ("temperature", 2.5), ("top_k", -1),
                                          ("top_p", 0.0), ("top_p", 1.5), ("min_p", -0.1),
                                          ("repetition_penalty", 0.0), ("seed", -1), ("stop", ("",))])
def test_out_of_range_parameters_are_invalid_requests(field, value):
    with pytest.raises(WorkerError) as caught:
        SamplingParams(**{field: value})
    assert caught.value.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_nan_is_never_chosen_and_inf_wins(temperature):
    sampler = Sampler(SamplingParams(temperature=temperature), seed=0)
    assert sampler.sample(np.array([np.nan, 1.0, np.nan])) == 1
    assert sampler.sample(np.array([0.0, np.inf, 1.0])) == 1
    with pytest.raises(WorkerError) as caught:
        sampler.sample(np.array([np.nan, -np.inf]))
    assert caught.value.code == ErrorCode.INTERNAL
