"""Face + voice fusion chosen on data (issue 13 item 7): the pooling rules, their fitting on held-out groups,
the CREMA-D vote tables, and the rule predict ships."""

from __future__ import annotations

import numpy as np
import pytest

from affectfuse.inference.fusion import FLOOR, FUSION_WEIGHTS, late_fusion, pool
from affectfuse.inference.fusion_fit import (cross_validate, fit, read_crema_votes, shipped_weights,
                                             vote_shares)


def _planted(n=1500, a=0.8, b=0.3, votes=60, seed=0):
    """Face/voice distributions and audio-visual vote counts drawn from a known log-linear pool."""
    rng = np.random.default_rng(seed)
    pf, pv = rng.dirichlet(np.ones(6), n), rng.dirichlet(np.ones(6), n)
    target = pool(pf, pv, "loglinear", (a, b))
    av = np.stack([rng.multinomial(votes, p) for p in target]).astype(float)
    return pf, pv, av, rng.integers(0, 30, n)


def test_pool_rules():
    pf, pv = np.array([[0.7, 0.2, 0.1]]), np.array([[0.1, 0.3, 0.6]])
    np.testing.assert_allclose(pool(pf, pv, "linear", (0.25,)), 0.25 * pf + 0.75 * pv)
    geo = pf ** 0.6 * pv ** 0.4
    np.testing.assert_allclose(pool(pf, pv, "geometric", (0.6,)), geo / geo.sum())
    np.testing.assert_allclose(pool(pf, pv, "loglinear", (1.0, 0.0)), pf)
    np.testing.assert_allclose(pool(pf, pv, "loglinear", (2.0, 2.0)).sum(), 1.0)
    with pytest.raises(ValueError, match="unknown fusion rule"):
        pool(pf, pv, "max", (1.0,))
    np.testing.assert_allclose(vote_shares(np.array([[3, 0, 1]]), 1.0), [[4 / 7, 1 / 7, 2 / 7]])
    with pytest.raises(ValueError, match="alpha"):
        vote_shares(np.zeros((1, 3)), 0.0)


def test_fit_recovers_planted_exponents_and_cross_validation_holds_out_groups():
    pf, pv, av, groups = _planted()
    a, b = fit(pf, pv, av, "loglinear")
    assert a == pytest.approx(0.8, abs=0.06) and b == pytest.approx(0.3, abs=0.06)
    assert shipped_weights((a, b))[0] == pytest.approx(0.8 / 1.1, abs=0.03)
    labels = np.argmax(pool(pf, pv, "loglinear", (0.8, 0.3)), axis=1)
    # counts as shares, so that alpha adds next to nothing: scores on held-out groups, fitted beats fixed rules
    shares = np.round(pf * 1000), np.round(pv * 1000)
    fitted = cross_validate(*shares, av, labels, groups, "loglinear", 1e-3, k=5)
    mean = cross_validate(*shares, av, labels, groups, "linear", 1e-3, k=5, fixed=(0.5,))
    assert len(fitted.fold_params) == 5 and fitted.cross_entropy < mean.cross_entropy
    assert fitted.label_accuracy > 0.9 and fitted.params[0] == pytest.approx(0.8, abs=0.06)
    with pytest.raises(ValueError, match="groups"):
        cross_validate(*shares, av, labels, np.zeros(len(av)), "linear", 1e-3, k=5)


def test_shipped_weights_are_the_crema_d_fit(shared_data):
    """`python scripts/fit_fusion.py` chose the log-linear pool at alpha 1; refit on all clips here."""
    t = read_crema_votes(shared_data / "crema-d" / "tabulatedVotes.csv")
    assert len(t.clips) == 7442 and len(set(t.actors)) == 91
    params = fit(vote_shares(t.face, 1.0), vote_shares(t.voice, 1.0), t.av, "loglinear")
    assert shipped_weights(params) == tuple(FUSION_WEIGHTS)


def test_bad_vote_table_names_the_file(tmp_path):
    bad = tmp_path / "votes.csv"
    bad.write_text("id,A,B\n1,2,3\n")
    with pytest.raises(ValueError, match="votes.csv"):
        read_crema_votes(bad)


def test_late_fusion_is_the_weighted_log_linear_pool():
    face = {"Neutral": 0.6, "Happiness": 0.3, "Sadness": 0.1, "Surprise": 0.0}
    voice = {"Neutral": 0.05, "Happiness": 0.15, "Sadness": 0.8, "Other": 0.0}
    fc, vc = list(face), list(voice)
    shared = ["Neutral", "Happiness", "Sadness"]
    got = late_fusion(face, voice, face_classes=fc, voice_classes=vc, reliability=(1.0, 0.5))
    wf, wv = FUSION_WEIGHTS
    expect = np.array([face[c] for c in shared]) ** wf * np.array([voice[c] for c in shared]) ** (wv * 0.5)
    np.testing.assert_allclose([got["probabilities"][c] for c in shared], expect / expect.sum())
    assert got["weights"] == {"face": wf, "voice": round(wv * 0.5, 4)} and got["fusion_rule"] == "geometric"
    linear = late_fusion(face, voice, face_classes=fc, voice_classes=vc, weights=(0.5, 0.5), rule="linear")
    assert linear["probabilities"]["Sadness"] == pytest.approx((0.1 + 0.8) / 2)
    # a zero is floored (a strong vote against, not a veto); a source of reliability 0 drops out
    zero = late_fusion({"Neutral": 1.0, "Sadness": 0.0}, {"Neutral": 0.0, "Sadness": 1.0},
                       face_classes=["Neutral", "Sadness"], voice_classes=["Neutral", "Sadness"])
    assert zero["probabilities"]["Neutral"] == pytest.approx(1 / (1 + FLOOR ** (wf - wv)))
    alone = late_fusion(face, voice, face_classes=fc, voice_classes=vc, reliability=(1.0, 0.0))
    assert alone["modalities"] == ["face"] and alone["probabilities"]["Neutral"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="rule"):
        late_fusion(face, voice, face_classes=fc, voice_classes=vc, rule="max")
