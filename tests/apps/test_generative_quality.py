"""Generative-model and anomaly measures: the Frechet distance against closed forms, class
coverage, the generation report of a small digits classifier, and the anomaly baselines."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, average_precision_score, precision_score, recall_score, roc_auc_score

from fovea.apps.generative import (
    anomaly_metrics, class_coverage, classifier_features, frechet_distance, generation_report,
    ocsvm_anomaly_scores, pca_anomaly_scores, pick_threshold,
)
from fovea.data.transforms import Preprocess
from fovea.errors import UserError
from fovea.tasks.classify import ImageClassifier, build_net


def with_moments(z: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``z`` transformed so that its sample mean is exactly ``mu`` and its sample covariance
    (``np.cov``) exactly ``cov``: then the Frechet distance has an exact closed form."""
    z = z - z.mean(0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return mu + white @ np.linalg.cholesky(cov).T


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def random_cov(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_of_a_set_to_itself_is_zero():
    a = np.random.default_rng(0).normal(size=(300, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.tensor(a), a[::-1].copy()) == pytest.approx(0.0, abs=1e-8)  # order is irrelevant


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 8)), 2 * rng.normal(size=(150, 8)) + 1
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 1.0


def test_frechet_distance_diagonal_gaussians_exact_moments():
    # diagonal covariances: the trace term is sum (sqrt(a) - sqrt(b))^2
    rng = np.random.default_rng(2)
    mu_a, mu_b = np.array([0.0, 1.0, 2.0, -1.0]), np.array([0.5, 1.0, 1.0, -1.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([1.0, 1.0, 1.0, 0.5])
    a = with_moments(rng.normal(size=(500, 4)), mu_a, np.diag(var_a))
    b = with_moments(rng.normal(size=(400, 4)), mu_b, np.diag(var_b))
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert expected == pytest.approx(3.0)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_full_covariances_exact_moments():
    # Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), by eigendecompositions rather than sqrtm(S_a S_b)
    rng = np.random.default_rng(3)
    d = 6
    s_a, s_b = random_cov(rng, d), random_cov(rng, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    a = with_moments(rng.normal(size=(300, d)), mu_a, s_a)
    b = with_moments(rng.normal(size=(300, d)), mu_b, s_b)
    root_a = psd_sqrt(s_a)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * psd_sqrt(root_a @ s_b @ root_a))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_diagonal_gaussians_large_samples():
    # true distance 3.0; over 30 seeds with 20000 samples each the estimate had std 0.026 and
    # strayed at most 0.056 from it: 0.15 is about 6 standard deviations
    rng = np.random.default_rng(4)
    a = np.array([0.0, 1.0, 2.0, -1.0]) + rng.normal(size=(20000, 4)) * np.sqrt([1.0, 4.0, 0.25, 2.0])
    b = np.array([0.5, 1.0, 1.0, -1.0]) + rng.normal(size=(20000, 4)) * np.sqrt([1.0, 1.0, 1.0, 0.5])
    assert frechet_distance(a, b) == pytest.approx(3.0, abs=0.15)


def test_frechet_distance_mean_shift_and_one_dimension():
    a = np.random.default_rng(5).normal(size=(100, 3))
    assert frechet_distance(a, a + [1.0, 2.0, -2.0]) == pytest.approx(9.0, rel=1e-8)  # same covariance
    x = with_moments(np.random.default_rng(6).normal(size=(50, 1)), np.array([1.0]), np.array([[4.0]]))
    y = with_moments(np.random.default_rng(7).normal(size=(60, 1)), np.array([-1.0]), np.array([[1.0]]))
    assert frechet_distance(x, y) == pytest.approx(2.0**2 + (2.0 - 1.0) ** 2, rel=1e-8)


def test_frechet_distance_singular_covariances_stay_finite():
    # fewer samples than dimensions, and dead (all-zero) features like a ReLU's
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(12, 40))
    a[:, :5] = b[:, :5] = 0
    d_ab, d_ba = frechet_distance(a, b), frechet_distance(b, a)
    assert np.isfinite(d_ab) and d_ab > 0
    assert d_ab == pytest.approx(d_ba, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_refuses_bad_shapes():
    with pytest.raises(UserError, match="3 features per sample and feats_b 4"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(UserError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(UserError, match=r"shape \(5,\)"):
        frechet_distance(np.zeros(5), np.zeros((5, 1)))


# ---------------------------------------------------------------------------- class coverage


def test_class_coverage_on_hand_made_logits():
    logits = F.one_hot(torch.tensor([0, 0, 0, 1, 2, 2]), 5).float() * 3 - 1
    coverage, counts = class_coverage(logits)
    assert coverage == pytest.approx(3 / 5)
    assert counts.tolist() == [3, 1, 2, 0, 0]
    assert class_coverage(logits, min_share=0.3)[0] == pytest.approx(2 / 5)  # needs 1.8 samples: classes 0 and 2
    assert class_coverage(logits, min_share=0.5)[0] == pytest.approx(1 / 5)
    assert class_coverage(logits, num_classes=10)[0] == pytest.approx(3 / 10)
    assert class_coverage(torch.eye(4))[0] == 1.0
    with pytest.raises(UserError, match="num_classes=3"):
        class_coverage(logits, num_classes=3)


# ---------------------------------------------------------------------------- a digits classifier


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images / 16, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def classifier(digits):
    x, y = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention
    try:
        torch.manual_seed(0)
        model = ImageClassifier(build_net("conv3x3-4,relu,maxpool2,fc10", 10, 1, (8, 8)), Preprocess("none"))
        g = torch.Generator().manual_seed(1)
        for _ in range(300):  # plain SGD: torch.optim's first use costs seconds of imports
            i = torch.randint(0, 1000, (64,), generator=g)
            grads = torch.autograd.grad(F.cross_entropy(model(x[i]), y[i]), list(model.parameters()))
            with torch.no_grad():
                for p, grad in zip(model.parameters(), grads):
                    p -= 0.5 * grad
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        assert (model(x[1000:]).argmax(1) == y[1000:]).float().mean() > 0.9
    return model


def test_classifier_features_match_the_model(classifier, digits):
    x = digits[0][1000:1100]
    classifier.train()
    feats, logits = classifier_features(classifier, x, batch_size=7)
    assert classifier.training  # the mode it had is given back
    classifier.eval()
    assert feats.shape == (100, 64) and logits.shape == (100, 10)
    with torch.no_grad():
        assert torch.allclose(logits, classifier(x), atol=1e-5)
        assert torch.allclose(feats, classifier.net.forward_head(classifier.net.forward_features(x), pre_logits=True),
                              atol=1e-5)
    assert torch.equal(classifier_features(classifier, x)[1], logits)  # batching changes nothing


def test_classifier_features_sizes(classifier, digits):
    x = digits[0][:20]
    big = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    feats, logits = classifier_features(classifier, big, image_size=8)
    assert logits.shape == (20, 10)
    assert (logits.argmax(1) == classifier_features(classifier, x)[1].argmax(1)).float().mean() > 0.8
    with pytest.raises(UserError, match="3 channels; the classifier takes 1"):
        classifier_features(classifier, x.expand(-1, 3, -1, -1))


def test_generation_report_orders_real_fake_and_noise(classifier, digits):
    x, y = digits
    real, other = x[1000:1400], x[1400:1600]
    report = generation_report(classifier, real, other, generator=torch.Generator().manual_seed(0))
    fid, cov = report["fid"], report["coverage"]
    assert report["n"] == {"reference": 200, "real": 200, "samples": 200, "noise": 200}
    # real images are close to the reference set, noise is far (seen: 1.7 and 1.5 against 46)
    assert fid["real"] < 0.2 * fid["noise"] and fid["samples"] < 0.2 * fid["noise"]
    assert cov["real"] == 1.0 and cov["samples"] == 1.0
    assert cov["noise"] < 1.0  # seen: 0.9

    # a collapsed generator: one seven, slightly perturbed (seen: distance 64, coverage 0.1)
    seven = x[1000:][y[1000:] == 7][:1]
    collapsed = (seven + 0.05 * torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    report = generation_report(classifier, real, collapsed, generator=torch.Generator().manual_seed(0))
    assert report["fid"]["samples"] > 10 * report["fid"]["real"]
    assert report["coverage"]["samples"] <= 0.2
    assert report["fid"]["noise"] == pytest.approx(fid["noise"])  # same generator seed, same noise


def test_generation_report_takes_given_noise(classifier, digits):
    real = digits[0][1000:1200]
    noise = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a = generation_report(classifier, real, real[100:], noise=noise)
    b = generation_report(classifier, real, real[100:], noise=noise.clone())
    assert a["n"]["noise"] == 30 and a["fid"]["noise"] == b["fid"]["noise"]
    assert a["fid"]["samples"] == pytest.approx(a["fid"]["real"])  # fake = the held-out half itself
    with pytest.raises(UserError, match=r"fake has shape \(10, 1, 4, 4\)"):
        generation_report(classifier, real, torch.rand(10, 1, 4, 4))


# ---------------------------------------------------------------------------- anomaly detection


@pytest.fixture(scope="module")
def zeros_vs_rest():
    """Digits: half of the zeros to train on (normal); the other zeros and every other digit to test."""
    d = load_digits()
    x, y = d.images / 16, d.target
    zeros = np.flatnonzero(y == 0)
    np.random.default_rng(0).shuffle(zeros)
    test = np.concatenate([zeros[90:], np.flatnonzero(y != 0)])
    return x[zeros[:90]], x[test], y[test]


@pytest.mark.parametrize("scorer", [pca_anomaly_scores, ocsvm_anomaly_scores])
def test_anomaly_baselines_separate_zeros_from_other_digits(scorer, zeros_vs_rest):
    # seen: overall ROC-AUC 0.9999 (PCA) and 0.9993 (one-class SVM); per digit >= 0.998
    train, test, labels = zeros_vs_rest
    scores = scorer(train, test)
    assert scores.shape == (len(test),)
    assert anomaly_metrics(scores, labels != 0)["roc_auc"] > 0.95
    for digit in range(1, 10):
        keep = (labels == 0) | (labels == digit)
        assert anomaly_metrics(scores[keep], labels[keep] != 0)["roc_auc"] > 0.8, digit


def test_pca_scores_are_reconstruction_errors():
    rng = np.random.default_rng(0)
    train = np.c_[rng.normal(size=(200, 2)) * [3.0, 1.0], np.zeros((200, 1))]  # a plane in 3-D
    test = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(pca_anomaly_scores(train, test, n_components=2), [0.0, 4.0], atol=1e-2)
    with pytest.raises(UserError, match="n_components=1.5"):
        pca_anomaly_scores(train, test, n_components=1.5)


def test_ocsvm_subsamples_train(zeros_vs_rest):
    train, test, _ = zeros_vs_rest
    a = ocsvm_anomaly_scores(train, test[:20], max_train=40, seed=1)
    assert np.array_equal(a, ocsvm_anomaly_scores(train, test[:20], max_train=40, seed=1))
    assert not np.allclose(a, ocsvm_anomaly_scores(train, test[:20], max_train=40, seed=2))
    with pytest.raises(UserError, match="64 values per sample and test 3"):
        ocsvm_anomaly_scores(train, np.zeros((2, 3)))


def test_anomaly_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = rng.normal(size=200) + 1.5 * labels
    m = anomaly_metrics(scores, labels, threshold=0.8)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["average_precision"] == pytest.approx(average_precision_score(labels, scores))
    flagged = scores > 0.8
    assert m["precision"] == pytest.approx(precision_score(labels, flagged))
    assert m["recall"] == pytest.approx(recall_score(labels, flagged))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, flagged))
    assert "precision" not in anomaly_metrics(scores, labels)


def test_anomaly_metrics_by_hand_and_one_class():
    m = anomaly_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), threshold=0.37)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert (m["precision"], m["recall"], m["accuracy"]) == (0.5, 0.5, 0.5)
    with pytest.raises(UserError, match="0 anomalies and 3 normal"):
        anomaly_metrics(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))
    with pytest.raises(UserError, match="2 anomalies and 0 normal"):
        anomaly_metrics(np.array([0.1, 0.2]), np.array([True, True]))


def test_pick_threshold_is_the_normal_quantile():
    assert pick_threshold(np.arange(101.0), 0.95) == pytest.approx(95.0)
    assert pick_threshold(np.arange(101.0)[::-1], 0.5) == pytest.approx(50.0)
    normal = np.random.default_rng(0).normal(size=2000)
    t = pick_threshold(normal[:1000], 0.9)
    assert 0.07 < (normal[1000:] > t).mean() < 0.13  # about 10% of fresh normal scores are flagged
    with pytest.raises(UserError, match="quantile=1.5"):
        pick_threshold(normal, 1.5)
    with pytest.raises(UserError, match="empty"):
        pick_threshold(np.array([]))
