"""fastnn.metrics: stateful metrics, the compile-time resolver, and evaluation reports.

Expected values are hand-computed (several are the examples of the Keras and scikit-learn
documentation) or counted directly with NumPy loops; scikit-learn, when installed, is a
further cross-check (skipped otherwise, never required).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastnn import losses, metrics
from fastnn.metrics import (BinaryAccuracy, CategoricalAccuracy, ConfusionMatrix, F1Score,
                            Mean, MeanAbsoluteError, MeanMetricWrapper, MeanSquaredError,
                            Metric, Precision, Recall, SparseCategoricalAccuracy,
                            classification_report, confusion_matrix, precision_recall_f1)


def approx(x, rel=1e-12, abs=1e-12):
    return pytest.approx(x, rel=rel, abs=abs)


def one_hot(labels, k):
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1
    return out


def direct_counts(t, p, k, w=None):
    """Per-class tp, fp, fn, support by explicit loops (the oracle)."""
    w = np.ones(len(t)) if w is None else np.asarray(w, float)
    tp, fp, fn, sup = (np.zeros(k) for _ in range(4))
    for ti, pi, wi in zip(t, p, w):
        sup[ti] += wi
        if ti == pi:
            tp[ti] += wi
        else:
            fp[pi] += wi
            fn[ti] += wi
    return tp, fp, fn, sup


def direct_prf(t, p, k, average=None, w=None):
    tp, fp, fn, sup = direct_counts(t, p, k, w)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()

    def div(a, b):
        a, b = np.atleast_1d(a).astype(float), np.atleast_1d(b).astype(float)
        return np.array([x / y if y else 0.0 for x, y in zip(a, b)])

    prec, rec = div(tp, tp + fp), div(tp, tp + fn)
    f1 = div(2 * prec * rec, prec + rec)
    if average == "micro":
        return prec[0], rec[0], f1[0]
    if average == "macro":
        return prec.mean(), rec.mean(), f1.mean()
    if average == "weighted":
        return tuple((v * sup).sum() / sup.sum() for v in (prec, rec, f1))
    return prec, rec, f1


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# =============================================================================== Mean
class TestMean:
    def test_plain_and_weighted(self):
        m = Mean()
        m.update_state([1, 3, 5, 7])
        assert m.result() == 4.0
        m.reset_state()
        m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
        assert m.result() == 2.0

    def test_accumulates_counts_not_batch_means(self):
        m = Mean()
        m.update_state([1.0])          # batch mean 1, one sample
        m.update_state([4.0, 4.0, 4.0])  # batch mean 4, three samples
        assert m.result() == approx(13 / 4)  # not (1 + 4) / 2

    def test_scalar_values_and_weights(self):
        m = Mean()
        m.update_state(2.0)
        m.update_state(4.0, sample_weight=3.0)
        assert m.result() == approx((2 + 12) / 4)

    def test_scalar_weight_is_per_sample(self):
        m = Mean()
        m.update_state([1.0, 3.0], sample_weight=2.0)
        m.update_state([5.0])
        assert m.result() == approx((2 + 6 + 5) / 5)

    def test_multi_axis_values_and_element_weights(self):
        v = np.array([[1.0, 3.0], [5.0, 7.0]])
        m = Mean()
        m.update_state(v)
        assert m.result() == 4.0
        m.reset_state()
        w = np.array([[1.0, 0.0], [1.0, 1.0]])
        m.update_state(v, sample_weight=w)
        assert m.result() == approx((1 + 5 + 7) / 3)
        m.reset_state()
        m.update_state(v, sample_weight=[[1.0], [3.0]])  # (N, 1) weights
        assert m.result() == approx((2 + 3 * 6) / 4)

    def test_empty_is_zero(self):
        m = Mean()
        assert m.result() == 0.0
        m.update_state(np.zeros(0))
        assert m.result() == 0.0

    def test_name_and_config(self):
        assert Mean().name == "mean"
        m = Mean(name="loss")
        assert m.name == "loss" and m.get_config() == {"name": "loss"}
        assert Mean.from_config(m.get_config()).name == "loss"

    def test_call_updates_and_returns(self):
        m = Mean()
        assert m([2.0, 4.0]) == 3.0
        assert m([6.0]) == 4.0


class TestMeanMetricWrapper:
    def test_wraps_per_sample_function(self):
        def abs_err(t, p):
            return np.abs(np.asarray(t, float) - np.asarray(p, float))

        m = MeanMetricWrapper(abs_err)
        assert m.name == "abs_err"
        m.update_state([1.0, 2.0], [1.5, 2.0], sample_weight=[1.0, 3.0])
        assert m.result() == approx(0.5 / 4)

    def test_scalar_function_counts_batch_size(self):
        m = MeanMetricWrapper(lambda t, p: float(np.mean(np.asarray(t) == np.asarray(p))),
                              name="acc")
        m.update_state([1, 1, 1], [1, 1, 1])  # 1.0 over 3 samples
        m.update_state([0], [1])              # 0.0 over 1 sample
        assert m.result() == approx(3 / 4)

    def test_kwargs_forwarded(self):
        m = MeanMetricWrapper(metrics.binary_accuracy, threshold=0.9)
        m.update_state([1, 1], [0.95, 0.8])
        assert m.result() == 0.5

    def test_mse_mae(self):
        t = np.array([[0.0, 1.0], [0.0, 0.0]])
        p = np.array([[1.0, 1.0], [1.0, 0.0]])
        assert MeanSquaredError()(t, p) == 0.5
        assert MeanAbsoluteError()(t, p) == 0.5
        m = MeanSquaredError()
        m.update_state(t, p, sample_weight=[1.0, 0.0])
        assert m.result() == 0.5
        m = MeanAbsoluteError()
        m.update_state([[1.0], [2.0]], [3.0, 2.0])  # (N, 1) vs (N,)
        assert m.result() == 1.0
        assert MeanSquaredError().name == "mean_squared_error"
        assert MeanAbsoluteError().name == "mean_absolute_error"

    def test_per_sample_functions(self):
        np.testing.assert_allclose(metrics.mean_squared_error([[0, 2], [1, 1]],
                                                              [[0, 0], [1, 2]]), [2.0, 0.5])
        np.testing.assert_allclose(metrics.mean_absolute_error([1, 2], [2, 4]), [1.0, 2.0])
        np.testing.assert_allclose(metrics.binary_accuracy([[1, 0], [1, 1]],
                                                           [[0.7, 0.2], [0.4, 0.6]]),
                                   [1.0, 0.5])
        np.testing.assert_allclose(metrics.categorical_accuracy(one_hot([0, 2], 3),
                                                                [[0.5, 0.3, 0.2],
                                                                 [0.5, 0.3, 0.2]]), [1, 0])
        np.testing.assert_allclose(metrics.sparse_categorical_accuracy(
            [0, 2], [[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]]), [1, 1])


# =============================================================================== accuracies
class TestAccuracies:
    def test_binary_accuracy_keras_examples(self):
        m = BinaryAccuracy()
        m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]])
        assert m.result() == 0.75
        m.reset_state()
        m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]],
                       sample_weight=[1, 0, 0, 1])
        assert m.result() == 0.5

    def test_binary_accuracy_threshold_is_strict(self):
        assert BinaryAccuracy()([1, 0], [0.5, 0.5]) == 0.5  # 0.5 is not > 0.5
        assert BinaryAccuracy(threshold=0.0)([1, 0, 1], [2.0, -1.0, -0.5]) == approx(2 / 3)

    def test_binary_accuracy_shapes_and_multilabel(self):
        assert BinaryAccuracy()([1, 0, 1], [[0.9], [0.1], [0.2]]) == approx(2 / 3)
        t = np.array([[1, 0, 1], [0, 0, 1]])
        p = np.array([[0.9, 0.6, 0.7], [0.1, 0.2, 0.3]])
        assert BinaryAccuracy()(t, p) == approx(4 / 6)
        m = BinaryAccuracy()  # per-sample weights on multi-label outputs
        m.update_state(t, p, sample_weight=[1.0, 3.0])
        assert m.result() == approx((2 / 3 * 1 + 2 / 3 * 3) / 4)

    def test_categorical_accuracy_keras_examples(self):
        t = [[0, 0, 1], [0, 1, 0]]
        p = [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]
        assert CategoricalAccuracy()(t, p) == 0.5
        m = CategoricalAccuracy()
        m.update_state(t, p, sample_weight=[0.7, 0.3])
        assert m.result() == approx(0.3)

    def test_sparse_categorical_accuracy_keras_examples(self):
        p = [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]
        assert SparseCategoricalAccuracy()([[2], [1]], p) == 0.5
        assert SparseCategoricalAccuracy()([2, 1], p) == 0.5
        assert SparseCategoricalAccuracy()(np.array([2.0, 1.0]), p) == 0.5
        m = SparseCategoricalAccuracy()
        m.update_state([[2], [1]], p, sample_weight=[0.7, 0.3])
        assert m.result() == approx(0.3)

    def test_sparse_accuracy_logits_equal_probabilities(self, rng):
        z = rng.normal(size=(50, 4))
        prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = rng.integers(0, 4, size=50)
        assert SparseCategoricalAccuracy()(y, z) == SparseCategoricalAccuracy()(y, prob)
        assert SparseCategoricalAccuracy()(y, z) == approx(np.mean(np.argmax(z, 1) == y))

    def test_categorical_accuracy_sequence_outputs(self):
        t = np.zeros((2, 3, 4))
        t[..., 1] = 1
        p = np.zeros((2, 3, 4))
        p[0, :, 1] = 1
        p[1, :, 2] = 1
        p[1, 0, 1] = 2
        assert CategoricalAccuracy()(t, p) == approx(4 / 6)
        assert SparseCategoricalAccuracy()(np.ones((2, 3), int), p) == approx(4 / 6)

    def test_names(self):
        assert BinaryAccuracy().name == "binary_accuracy"
        assert CategoricalAccuracy().name == "categorical_accuracy"
        assert SparseCategoricalAccuracy().name == "sparse_categorical_accuracy"
        assert BinaryAccuracy(threshold=0.3, name="acc").get_config() == {
            "name": "acc", "threshold": 0.3}


# =============================================================================== precision / recall
class TestPrecisionRecall:
    def test_keras_examples(self):
        m = Precision()
        m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        assert m.result() == approx(2 / 3)
        m.reset_state()
        m.update_state([0, 1, 1, 1], [1, 0, 1, 1], sample_weight=[0, 0, 1, 0])
        assert m.result() == 1.0
        r = Recall()
        r.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        assert r.result() == approx(2 / 3)
        r.reset_state()
        r.update_state([0, 1, 1, 1], [1, 0, 1, 1], sample_weight=[0, 0, 1, 0])
        assert r.result() == 1.0

    def test_hand_computed_probabilities(self):
        t = [1, 1, 0, 0, 1, 0]
        p = [0.9, 0.4, 0.6, 0.1, 0.51, 0.5]  # positive: 0.9, 0.6, 0.51 (0.5 is not > 0.5)
        # tp = 2 (0.9, 0.51), fp = 1 (0.6), fn = 1 (0.4)
        assert Precision()(t, p) == approx(2 / 3)
        assert Recall()(t, p) == approx(2 / 3)
        # threshold 0.45: positives 0.9, 0.6, 0.51, 0.5 -> tp 2, fp 2, fn 1
        assert Precision(thresholds=0.45)(t, p) == approx(0.5)
        assert Recall(thresholds=0.45)(t, p) == approx(2 / 3)

    def test_several_thresholds_give_an_array(self):
        t = [1, 1, 0, 0, 1, 0]
        p = [0.9, 0.4, 0.6, 0.1, 0.51, 0.5]
        res = Precision(thresholds=[0.0, 0.45, 0.55, 0.95])(t, p)
        # positives: >0: all 6 (tp3 fp3); >.45: 4 (tp2 fp2); >.55: 0.9, 0.6 (tp1 fp1); >.95: none
        np.testing.assert_allclose(res, [0.5, 0.5, 0.5, 0.0])
        res = Recall(thresholds=[0.0, 0.45, 0.55, 0.95])(t, p)
        np.testing.assert_allclose(res, [1.0, 2 / 3, 1 / 3, 0.0])
        assert isinstance(Precision(thresholds=[0.3])(t, p), float)  # one threshold: float

    def test_multilabel_flattened_and_class_id(self):
        t = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]])
        p = np.array([[0.8, 0.7, 0.2], [0.3, 0.9, 0.6], [0.4, 0.1, 0.7]])
        # predicted positive: (0,0) t1, (0,1) t0, (1,1) t1, (1,2) t1, (2,2) t0
        assert Precision()(t, p) == approx(3 / 5)
        assert Recall()(t, p) == approx(3 / 6)
        # class 2 column: t [1, 1, 0], p [0.2, 0.6, 0.7] -> tp 1, fp 1, fn 1
        assert Precision(class_id=2)(t, p) == approx(0.5)
        assert Recall(class_id=2)(t, p) == approx(0.5)
        # class 0 column: t [1, 0, 1], p [0.8, 0.3, 0.4] -> tp 1, fp 0, fn 1
        assert Precision(class_id=0)(t, p) == 1.0
        assert Recall(class_id=0)(t, p) == 0.5

    def test_sparse_labels_are_one_hot_encoded(self):
        p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.6, 0.2], [0.4, 0.35, 0.25]])
        y = np.array([0, 1, 1, 2])
        for labels in (y, y[:, None]):
            assert Precision()(labels, p) == approx(Precision()(one_hot(y, 3), p))
            assert Recall(class_id=1)(labels, p) == approx(0.5)

    def test_zero_division_is_zero(self):
        assert Precision()([1, 0], [0.1, 0.2]) == 0.0  # nothing predicted positive
        assert Recall()([0, 0], [0.9, 0.2]) == 0.0    # no positive label
        assert Precision().result() == 0.0

    def test_element_weights(self):
        t = np.array([[1, 0], [1, 1]])
        p = np.array([[0.9, 0.9], [0.9, 0.1]])
        w = np.array([[2.0, 1.0], [1.0, 5.0]])
        m = Precision()
        m.update_state(t, p, sample_weight=w)
        assert m.result() == approx(3 / 4)  # tp 2+1, fp 1
        r = Recall()
        r.update_state(t, p, sample_weight=w)
        assert r.result() == approx(3 / 8)  # tp 3, fn 5

    def test_config_round_trip(self):
        m = Precision(thresholds=[0.2, 0.7], class_id=1, name="p1")
        m2 = Precision.from_config(m.get_config())
        assert (m2.name, m2.thresholds, m2.class_id) == ("p1", [0.2, 0.7], 1)
        assert Precision().name == "precision" and Recall().name == "recall"


# =============================================================================== F1
class TestF1Score:
    T3 = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    P3 = np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]])

    def test_keras_example_threshold(self):
        m = F1Score(threshold=0.5)
        m.update_state(self.T3, self.P3)
        np.testing.assert_allclose(m.result(), [0.5, 0.8, 2 / 3], rtol=1e-12)

    def test_keras_example_averages(self):
        # per class: tp [1, 2, 1], fp [0, 1, 1], fn [2, 0, 0], support [3, 2, 1]
        f1 = np.array([0.5, 0.8, 2 / 3])
        assert F1Score("macro", 0.5)(self.T3, self.P3) == approx(f1.mean())
        assert F1Score("weighted", 0.5)(self.T3, self.P3) == approx((f1 * [3, 2, 1]).sum() / 6)
        # micro: tp 4, fp 2, fn 2 -> p = r = 2/3
        assert F1Score("micro", 0.5)(self.T3, self.P3) == approx(2 / 3)

    def test_argmax_without_threshold(self):
        t = one_hot([0, 1, 2, 2], 3)
        p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
        # predicted [0, 0, 2, 1]: tp [1, 0, 1], fp [1, 1, 0], fn [0, 1, 1]
        np.testing.assert_allclose(F1Score()(t, p), [2 / 3, 0.0, 2 / 3])
        np.testing.assert_allclose(F1Score()([0, 1, 2, 2], p), [2 / 3, 0.0, 2 / 3])

    def test_argmax_ties_and_zero_rows(self):
        # Keras: every maximal entry is positive; an all-zero row predicts nothing
        t = one_hot([0, 1], 2)
        p = np.array([[0.5, 0.5], [0.0, 0.0]])
        m = F1Score()
        m.update_state(t, p)
        np.testing.assert_allclose(m.true_positives, [1, 0])
        np.testing.assert_allclose(m.false_positives, [0, 1])
        np.testing.assert_allclose(m.false_negatives, [0, 1])

    @pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_against_direct_counts(self, rng, average, weighted):
        k = 5
        y = rng.integers(0, k, size=300)
        p = rng.random((300, k))
        w = rng.random(300) * 2 if weighted else None
        m = F1Score(average=average)
        for lo in range(0, 300, 64):  # uneven batches
            m.update_state(one_hot(y[lo:lo + 64], k), p[lo:lo + 64],
                           None if w is None else w[lo:lo + 64])
        expect = direct_prf(y, np.argmax(p, 1), k, average, w)[2]
        np.testing.assert_allclose(m.result(), expect, rtol=1e-12, atol=1e-12)

    def test_micro_equals_accuracy_for_single_label(self, rng):
        y = rng.integers(0, 4, 100)
        p = rng.random((100, 4))
        assert F1Score("micro")(y, p) == approx(np.mean(np.argmax(p, 1) == y))

    def test_binary_column_with_threshold(self):
        # tp 2, fp 1, fn 1 -> F1 2/3
        p = [[0.9], [0.6], [0.7], [0.2]]
        assert F1Score("macro", 0.5)([[1], [1], [0], [1]], p) == approx(2 / 3)
        assert F1Score("macro", 0.5)([1, 1, 0, 1], p) == approx(2 / 3)  # labels (N,)

    def test_unbuilt_and_reset(self):
        assert F1Score("macro").result() == 0.0
        assert F1Score().result().shape == (0,)
        m = F1Score()
        m.update_state(self.T3, self.P3)
        m.reset_state()
        np.testing.assert_array_equal(m.result(), [0, 0, 0])

    def test_class_count_change_raises(self):
        m = F1Score()
        m.update_state(one_hot([0, 1], 3), np.eye(3)[:2])
        with pytest.raises(ValueError, match="built for 3"):
            m.update_state(one_hot([0, 1], 2), np.eye(2))

    def test_config(self):
        assert F1Score().name == "f1_score"
        cfg = F1Score("weighted", 0.4, name="f").get_config()
        assert cfg == {"name": "f", "average": "weighted", "threshold": 0.4}
        assert F1Score.from_config(cfg).average == "weighted"


# =============================================================================== ConfusionMatrix
class TestConfusionMatrixMetric:
    def test_accumulates(self, rng):
        y = rng.integers(0, 4, 200)
        p = rng.random((200, 4))
        m = ConfusionMatrix(4)
        for lo in range(0, 200, 30):
            m.update_state(y[lo:lo + 30], p[lo:lo + 30])
        cm = m.result()
        assert cm.dtype == np.int64
        np.testing.assert_array_equal(cm, confusion_matrix(y, p))
        assert cm.sum() == 200

    def test_weighted_and_one_hot(self):
        m = ConfusionMatrix(2)
        m.update_state(one_hot([0, 1, 1], 2), [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]],
                       sample_weight=[1.0, 2.0, 0.5])
        np.testing.assert_allclose(m.result(), [[1.0, 0.0], [0.5, 2.0]])
        assert m.result().dtype == np.float64
        m.reset_state()
        assert m.result().dtype == np.int64 and m.result().sum() == 0

    def test_sigmoid_column(self):
        m = ConfusionMatrix(2)
        m.update_state([[1], [0], [1]], [[0.9], [0.7], [0.2]])
        np.testing.assert_array_equal(m.result(), [[0, 1], [1, 1]])

    def test_bad(self):
        with pytest.raises(TypeError, match="num_classes"):
            ConfusionMatrix(None)
        with pytest.raises(ValueError, match="num_classes"):
            ConfusionMatrix(0)
        with pytest.raises(ValueError, match=r"y_true labels must be in \[0, 2\)"):
            ConfusionMatrix(2).update_state([0, 2], [0, 1])


# =============================================================================== accumulation
def _cases(rng):
    n = 97
    yb = rng.integers(0, 2, (n, 1))
    pb = rng.random((n, 1))
    ym = rng.integers(0, 2, (n, 3))
    pm = rng.random((n, 3))
    ys = rng.integers(0, 4, n)
    ps = rng.random((n, 4))
    yr = rng.normal(size=(n, 2))
    pr = rng.normal(size=(n, 2))
    return [
        (lambda: BinaryAccuracy(), yb, pb),
        (lambda: BinaryAccuracy(threshold=0.3), ym, pm),
        (lambda: CategoricalAccuracy(), one_hot(ys, 4), ps),
        (lambda: SparseCategoricalAccuracy(), ys, ps),
        (lambda: SparseCategoricalAccuracy(), ys[:, None], ps),
        (lambda: Precision(), yb, pb),
        (lambda: Recall(), ym, pm),
        (lambda: Precision(thresholds=[0.1, 0.5, 0.9], class_id=1), ym, pm),
        (lambda: Recall(class_id=3), ys, ps),
        (lambda: F1Score(), one_hot(ys, 4), ps),
        (lambda: F1Score("micro"), ys, ps),
        (lambda: F1Score("macro", threshold=0.5), ym, pm),
        (lambda: F1Score("weighted"), ys, ps),
        (lambda: ConfusionMatrix(4), ys, ps),
        (lambda: MeanSquaredError(), yr, pr),
        (lambda: MeanAbsoluteError(), yr, pr),
    ]


@pytest.mark.parametrize("weighted", [False, True])
def test_batch_accumulation_equals_one_shot(rng, weighted):
    for make, y, p in _cases(rng):
        w = rng.random(len(y)) * 3 if weighted else None
        whole = make()
        whole.update_state(y, p, w)
        batched = make()
        for lo, hi in [(0, 1), (1, 33), (33, 64), (64, 64), (64, 97)]:
            batched.update_state(y[lo:hi], p[lo:hi], None if w is None else w[lo:hi])
        np.testing.assert_allclose(batched.result(), whole.result(), rtol=1e-12, atol=1e-12,
                                   err_msg=repr(whole))


def test_reset_state_forgets(rng):
    for make, y, p in _cases(rng):
        m = make()
        m.update_state(y[:50], p[:50])
        m.reset_state()
        m.update_state(y[50:], p[50:])
        fresh = make()
        fresh.update_state(y[50:], p[50:])
        np.testing.assert_allclose(m.result(), fresh.result(), err_msg=repr(m))


def test_unit_weights_equal_no_weights(rng):
    for make, y, p in _cases(rng):
        a, b = make(), make()
        a.update_state(y, p)
        b.update_state(y, p, np.ones(len(y)))
        np.testing.assert_allclose(a.result(), b.result(), rtol=1e-12, err_msg=repr(a))


def test_integer_weights_equal_repetition(rng):
    for make, y, p in _cases(rng):
        w = rng.integers(0, 4, len(y))
        a, b = make(), make()
        a.update_state(y, p, w)
        b.update_state(np.repeat(y, w, axis=0), np.repeat(p, w, axis=0))
        np.testing.assert_allclose(a.result(), b.result(), rtol=1e-10, atol=1e-12,
                                   err_msg=repr(a))


# =============================================================================== resolver
class TestGet:
    @pytest.mark.parametrize("loss, cls", [
        ("binary_crossentropy", BinaryAccuracy),
        ("categorical_crossentropy", CategoricalAccuracy),
        ("sparse_categorical_crossentropy", SparseCategoricalAccuracy),
        (losses.BinaryCrossentropy(), BinaryAccuracy),
        (losses.CategoricalCrossentropy(from_logits=True), CategoricalAccuracy),
        (losses.SparseCategoricalCrossentropy(), SparseCategoricalAccuracy),
    ])
    @pytest.mark.parametrize("ident", ["accuracy", "acc"])
    def test_accuracy_from_loss(self, loss, cls, ident):
        # the loss decides, whatever the output shape
        for shape in [(None, 1), (None, 10), None]:
            m = metrics.get(ident, loss=loss, output_shape=shape)
            assert type(m) is cls
            assert m.name == ident

    @pytest.mark.parametrize("loss", ["mean_squared_error", "mse", "mae", None])
    def test_accuracy_from_output_shape(self, loss):
        assert type(metrics.get("accuracy", loss, (None, 1))) is BinaryAccuracy
        assert type(metrics.get("accuracy", loss, (None, 5))) is CategoricalAccuracy

    def test_accuracy_from_first_batch_when_nothing_is_known(self):
        m = metrics.get("accuracy")
        assert m.name == "accuracy" and m.result() == 0.0
        m.update_state([1, 2], [[0, 1, 0], [0, 0, 1]])  # sparse labels
        assert m.result() == 1.0
        m = metrics.get("acc")
        m.update_state(one_hot([1, 2], 3), [[0, 1, 0], [0, 1, 0]])  # one-hot
        assert m.result() == 0.5 and m.name == "acc"
        m = metrics.get("accuracy")
        m.update_state([[1], [0]], [[0.9], [0.9]])  # binary
        assert m.result() == 0.5
        m.reset_state()
        assert m.result() == 0.0

    @pytest.mark.parametrize("ident, cls", [
        ("binary_accuracy", BinaryAccuracy), ("categorical_accuracy", CategoricalAccuracy),
        ("sparse_categorical_accuracy", SparseCategoricalAccuracy),
        ("precision", Precision), ("recall", Recall), ("f1", F1Score),
        ("f1_score", F1Score), ("mse", MeanSquaredError),
        ("mean_squared_error", MeanSquaredError), ("mae", MeanAbsoluteError),
        ("mean_absolute_error", MeanAbsoluteError), ("BinaryAccuracy", BinaryAccuracy),
        ("F1Score", F1Score), ("Precision", Precision), ("MSE", MeanSquaredError),
    ])
    def test_names(self, ident, cls):
        m = metrics.get(ident, loss="categorical_crossentropy", output_shape=(None, 3))
        assert type(m) is cls
        assert m.name == ident  # logged exactly as written, as in Keras
        assert metrics.get(ident) is not metrics.get(ident)  # a fresh metric each time

    def test_f1_is_scalar_macro(self):
        m = metrics.get("f1", loss="sparse_categorical_crossentropy", output_shape=(None, 3))
        assert m.average == "macro" and m.threshold is None
        m = metrics.get("f1_score", loss="binary_crossentropy", output_shape=(None, 1))
        assert m.threshold == 0.5
        m.update_state([[1], [0], [1]], [[0.8], [0.3], [0.1]])
        assert m.result() == approx(2 / 3)
        assert metrics.get("f1", loss="mse", output_shape=(None, 1)).threshold == 0.5

    def test_crossentropy_metrics(self):
        m = metrics.get("binary_crossentropy")
        m.update_state([[1.0], [0.0]], [[0.8], [0.4]])
        assert m.result() == approx(-(np.log(0.8) + np.log(0.6)) / 2, rel=1e-6)
        m = metrics.get("sparse_categorical_crossentropy")
        m.update_state([0, 1], [[0.5, 0.5], [0.2, 0.8]])
        assert m.result() == approx(-(np.log(0.5) + np.log(0.8)) / 2, rel=1e-6)

    def test_instances_classes_callables_losses(self):
        inst = Precision(class_id=1)
        assert metrics.get(inst, loss="binary_crossentropy") is inst
        assert type(metrics.get(Recall)) is Recall

        def my_metric(y_true, y_pred):
            return np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))

        m = metrics.get(my_metric)
        assert isinstance(m, MeanMetricWrapper) and m.name == "my_metric"
        m.update_state([1.0, 1.0], [0.0, 1.0])
        assert m.result() == 0.5
        m = metrics.get(losses.MeanSquaredError())
        assert m.name == "mean_squared_error"
        m.update_state([[1.0], [3.0]], [[0.0], [3.0]])
        assert m.result() == 0.5

    def test_serialize_round_trip(self):
        for m in [Precision(thresholds=[0.2, 0.6], class_id=2, name="p"), F1Score("micro"),
                  BinaryAccuracy(0.3), ConfusionMatrix(3, name="cm"),
                  metrics.get("accuracy", "categorical_crossentropy")]:
            m2 = metrics.get(metrics.serialize(m))
            assert type(m2) is type(m) and m2.get_config() == m.get_config()
        with pytest.raises(TypeError, match="cannot serialize"):
            metrics.serialize(MeanMetricWrapper(len))
        with pytest.raises(ValueError, match="Unknown metric class"):
            metrics.get({"class_name": "Nope", "config": {}})

    def test_unknown_name_lists_valid_names(self):
        with pytest.raises(ValueError) as info:
            metrics.get("accuracyy")
        msg = str(info.value)
        assert "'accuracyy'" in msg
        for name in ("accuracy", "precision", "recall", "f1", "mse", "mae",
                     "binary_accuracy", "sparse_categorical_accuracy"):
            assert f"'{name}'" in msg

    @pytest.mark.parametrize("bad", [None, 3, 2.5, [1], object()])
    def test_not_a_metric(self, bad):
        with pytest.raises(TypeError, match="metric must be"):
            metrics.get(bad)

    def test_metric_base_is_abstract(self):
        m = Metric()
        for call in (lambda: m.update_state([1], [1]), m.result, m.reset_state):
            with pytest.raises(NotImplementedError):
                call()


# =============================================================================== functions
class TestConfusionMatrixFunction:
    def test_sklearn_doc_example(self):
        cm = confusion_matrix([2, 0, 2, 2, 0, 1], [0, 0, 2, 2, 0, 2])
        np.testing.assert_array_equal(cm, [[2, 0, 0], [0, 0, 1], [1, 0, 2]])
        assert cm.dtype == np.int64

    def test_equivalent_input_forms(self):
        y = np.array([0, 1, 2, 1])
        labels = np.array([0, 2, 2, 1])
        probs = np.eye(3)[labels] * 0.8 + 0.05
        expect = confusion_matrix(y, labels)
        for t in (y, y[:, None], y.astype(float), one_hot(y, 3)):
            for p in (labels, labels[:, None], probs, labels.astype(np.float32)):
                np.testing.assert_array_equal(confusion_matrix(t, p), expect)

    def test_num_classes_pads(self):
        cm = confusion_matrix([0, 1], [1, 1], num_classes=4)
        assert cm.shape == (4, 4) and cm[0, 1] == 1 and cm[1, 1] == 1 and cm.sum() == 2

    def test_sigmoid_probabilities(self):
        cm = confusion_matrix([0, 1, 1, 0], np.array([[0.2], [0.9], [0.4], [0.51]]))
        np.testing.assert_array_equal(cm, [[1, 1], [1, 1]])
        assert confusion_matrix([0, 0], [0.1, 0.3]).shape == (2, 2)

    def test_weights(self):
        cm = confusion_matrix([0, 1, 1], [0, 0, 1], sample_weight=[0.5, 2.0, 1.0])
        np.testing.assert_allclose(cm, [[0.5, 0.0], [2.0, 1.0]])
        assert cm.dtype == np.float64

    def test_empty(self):
        assert confusion_matrix([], []).shape == (0, 0)
        np.testing.assert_array_equal(confusion_matrix([], [], num_classes=2), np.zeros((2, 2)))
        assert confusion_matrix(np.zeros(0), np.zeros((0, 3))).shape == (3, 3)

    def test_rows_true_cols_pred(self, rng):
        y = rng.integers(0, 5, 400)
        p = rng.integers(0, 5, 400)
        cm = confusion_matrix(y, p)
        for i in range(5):
            for j in range(5):
                assert cm[i, j] == np.sum((y == i) & (p == j))


class TestPrecisionRecallF1:
    def test_hand_computed(self):
        # sklearn's classification_report example
        p, r, f, s = precision_recall_f1([0, 1, 2, 2, 2], [0, 0, 2, 2, 1])
        np.testing.assert_allclose(p, [0.5, 0.0, 1.0])
        np.testing.assert_allclose(r, [1.0, 0.0, 2 / 3])
        np.testing.assert_allclose(f, [2 / 3, 0.0, 0.8])
        np.testing.assert_array_equal(s, [1, 1, 3])
        assert s.dtype == np.int64
        pm, rm, fm, sm = precision_recall_f1([0, 1, 2, 2, 2], [0, 0, 2, 2, 1], average="macro")
        assert (pm, rm, fm, sm) == (approx(0.5), approx(5 / 9), approx((2 / 3 + 0.8) / 3), 5)
        pw, rw, fw, _ = precision_recall_f1([0, 1, 2, 2, 2], [0, 0, 2, 2, 1],
                                            average="weighted")
        assert (pw, rw, fw) == (approx(0.7), approx(0.6), approx((2 / 3 + 2.4) / 5))
        pu, ru, fu, _ = precision_recall_f1([0, 1, 2, 2, 2], [0, 0, 2, 2, 1], average="micro")
        assert pu == ru == fu == approx(0.6)

    @pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_against_direct_counts(self, rng, average, weighted):
        k = 6
        y = rng.integers(0, k, 500)
        probs = rng.random((500, k)) + np.eye(k)[y] * 0.5  # better than chance
        w = rng.random(500) if weighted else None
        pred = np.argmax(probs, 1)
        got = precision_recall_f1(y, probs, average=average, sample_weight=w)
        expect = direct_prf(y, pred, k, average, w)
        for g, e in zip(got[:3], expect):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
        sup = direct_counts(y, pred, k, w)[3]
        np.testing.assert_allclose(got[3], sup if average is None else sup.sum())

    def test_zero_division_gives_zero_without_warnings(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # class 2 never predicted and never true; class 1 never predicted
            p, r, f, s = precision_recall_f1([0, 1, 0], [0, 0, 0], num_classes=3)
            np.testing.assert_allclose(p, [2 / 3, 0, 0])
            np.testing.assert_allclose(r, [1, 0, 0])
            np.testing.assert_allclose(f, [0.8, 0, 0])
            np.testing.assert_array_equal(s, [2, 1, 0])
            assert precision_recall_f1([], [], num_classes=2, average="weighted") == \
                (0.0, 0.0, 0.0, 0)
            classification_report([0, 1, 0], [0, 0, 0], num_classes=3)

    def test_bad_average(self):
        with pytest.raises(ValueError, match="average must be one of"):
            precision_recall_f1([0, 1], [0, 1], average="binary")


class TestClassificationReport:
    def test_sklearn_doc_example_exactly(self):
        report = classification_report([0, 1, 2, 2, 2], [0, 0, 2, 2, 1],
                                       target_names=["class 0", "class 1", "class 2"])
        expected = (
            "              precision    recall  f1-score   support\n"
            "\n"
            "     class 0       0.50      1.00      0.67         1\n"
            "     class 1       0.00      0.00      0.00         1\n"
            "     class 2       1.00      0.67      0.80         3\n"
            "\n"
            "    accuracy                           0.60         5\n"
            "   macro avg       0.50      0.56      0.49         5\n"
            "weighted avg       0.70      0.60      0.61         5\n")
        assert report == expected

    def test_rows_and_averages(self, rng):
        y = rng.integers(0, 4, 80)
        probs = rng.random((80, 4))
        names = ["cat", "dog", "a much longer class name", "bird"]
        report = classification_report(y, probs, target_names=names, digits=4)
        lines = report.splitlines()
        p, r, f, s = precision_recall_f1(y, probs)
        for i, name in enumerate(names):
            row = next(line for line in lines if line.strip().startswith(name))
            assert row.split()[-4:] == [f"{p[i]:.4f}", f"{r[i]:.4f}", f"{f[i]:.4f}", str(s[i])]
        acc = np.mean(np.argmax(probs, 1) == y)
        assert next(l for l in lines if "accuracy" in l).split() == ["accuracy", f"{acc:.4f}",
                                                                     "80"]
        for avg in ("macro", "weighted"):
            pa, ra, fa, _ = precision_recall_f1(y, probs, average=avg)
            row = next(l for l in lines if l.strip().startswith(f"{avg} avg"))
            assert row.split()[2:] == [f"{pa:.4f}", f"{ra:.4f}", f"{fa:.4f}", "80"]
        widths = {len(l) for l in lines if l}
        assert len(widths) == 1  # every row aligned to the same width

    def test_default_names(self):
        report = classification_report([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
        lines = report.splitlines()
        assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
        assert lines[2].split()[0] == "0" and lines[3].split()[0] == "1"
        assert "macro avg" in report and "weighted avg" in report

    def test_weighted_support(self):
        # as sklearn: supports are the float sums of the weights
        report = classification_report([0, 1, 1], [0, 1, 0], sample_weight=[0.5, 1.0, 0.1])
        lines = report.splitlines()
        assert lines[2].split() == ["0", "0.83", "1.00", "0.91", "0.5"]
        assert lines[3].split() == ["1", "1.00", "0.91", "0.95", "1.1"]
        assert lines[-1].split()[-1] == "1.6"

    def test_bad(self):
        with pytest.raises(ValueError, match="target_names has 2 names but there are 3"):
            classification_report([0, 1, 2], [0, 1, 2], target_names=["a", "b"])
        with pytest.raises(TypeError, match="target_names"):
            classification_report([0, 1], [0, 1], target_names="ab")
        with pytest.raises(ValueError, match="digits"):
            classification_report([0, 1], [0, 1], digits=-1)


# =============================================================================== bad input
BAD_INPUTS = [
    # (call, exception, message fragment)
    (lambda: confusion_matrix([0, 1, 2], [0, 1]), ValueError,
     r"same number of samples, received 3 .* and 2"),
    (lambda: confusion_matrix([0, 3], [0, 1], num_classes=3), ValueError,
     r"y_true labels must be in \[0, 3\) .* \[0, 3\]"),
    (lambda: confusion_matrix([0, 1], [0, -1]), ValueError, r"y_pred labels must be in"),
    (lambda: confusion_matrix([0, 1], [[0.5, 0.5], [0.1, 0.9]], num_classes=3), ValueError,
     "num_classes=3"),
    (lambda: confusion_matrix(one_hot([0, 1], 2), [[0.2, 0.3, 0.5]] * 2), ValueError,
     "y_true implies 2 classes but y_pred implies 3"),
    (lambda: confusion_matrix(np.zeros((2, 2, 2)), [0, 1]), ValueError,
     r"y_true must be integer labels .* received shape \(2, 2, 2\)"),
    (lambda: confusion_matrix([0, 1], np.zeros((2, 3, 1))), ValueError,
     r"y_pred must be .* received shape"),
    (lambda: confusion_matrix(0, [0]), ValueError, "y_true must have a batch dimension"),
    (lambda: confusion_matrix(["a", "b"], [0, 1]), TypeError, "y_true must be numeric"),
    (lambda: confusion_matrix([0, 1], ["a", "b"]), TypeError, "y_pred must be numeric"),
    (lambda: confusion_matrix([0.5, 1], [0, 1]), ValueError,
     "y_true must hold integer class labels, received the non-integer value 0.5"),
    (lambda: confusion_matrix([0, 1], [1.5, 0.2]), ValueError,
     "y_pred must hold integer class labels"),
    (lambda: confusion_matrix([[0, 1], [1, 1]], [0, 1]), ValueError, "must be one-hot"),
    (lambda: confusion_matrix([0, 1], [0, 1], num_classes=2.0), TypeError, "num_classes"),
    (lambda: confusion_matrix([0, 1], [0, 1], sample_weight=[1, 2, 3]), ValueError,
     r"sample_weight must hold one weight per sample, shape \(2,\)"),
    (lambda: confusion_matrix([0, 1], [0, 1], sample_weight=["a", "b"]), TypeError,
     "sample_weight must be numeric"),
    (lambda: confusion_matrix([[0, 1], [1]], [0, 1]), ValueError, "y_true must be a rect"),
    (lambda: precision_recall_f1([0, 1], [0, 1, 1]), ValueError, "same number of samples"),
    (lambda: classification_report([0, 5], [0, 1], num_classes=2), ValueError,
     r"y_true labels must be in \[0, 2\)"),
    (lambda: BinaryAccuracy()([1, 0, 1], [0.5, 0.2]), ValueError, "same number of samples"),
    (lambda: BinaryAccuracy()([[1, 0]], [[0.5, 0.2, 0.1]]), ValueError,
     r"same shape, received y_true shape \(1, 2\) and y_pred shape \(1, 3\)"),
    (lambda: BinaryAccuracy()(["x"], [0.5]), TypeError, "y_true must be numeric"),
    (lambda: BinaryAccuracy(threshold="0.5"), TypeError, "threshold"),
    (lambda: CategoricalAccuracy()([0, 1], [[0.5, 0.5], [0.2, 0.8]]), ValueError,
     "use sparse_categorical_accuracy"),
    (lambda: CategoricalAccuracy()([0, 1], [0.5, 0.2]), ValueError, "class axis"),
    (lambda: SparseCategoricalAccuracy()([0, 3], [[0.5, 0.5], [0.2, 0.8]]), ValueError,
     r"y_true labels must be in \[0, 2\)"),
    (lambda: SparseCategoricalAccuracy()([0.5, 1], [[0.5, 0.5], [0.2, 0.8]]), ValueError,
     "non-integer"),
    (lambda: SparseCategoricalAccuracy()(one_hot([0, 1], 2), np.eye(2)), ValueError,
     "use categorical_accuracy"),
    (lambda: SparseCategoricalAccuracy()([0, 1], [[0.5, 0.5]]), ValueError,
     "same number of samples"),
    (lambda: Precision(thresholds=1.5), ValueError, r"thresholds must be numbers in \[0, 1\]"),
    (lambda: Precision(thresholds=[]), ValueError, "thresholds must not be empty"),
    (lambda: Recall(class_id=-1), ValueError, "class_id"),
    (lambda: Precision(class_id=3)(np.eye(3)[:2], np.eye(3)[:2]), ValueError,
     "class_id=3 is out of range"),
    (lambda: Precision(class_id=0)([1, 0], [0.4, 0.6]), ValueError, "class axis"),
    (lambda: Recall()([0, 4], [[0.1, 0.9], [0.5, 0.5]]), ValueError, r"labels must be in"),
    (lambda: Precision()([1, 0], [0.5, 0.5], sample_weight=[[1, 2, 3]]), ValueError,
     "sample_weight"),
    (lambda: F1Score(average="binary"), ValueError, "average must be one of"),
    (lambda: F1Score(threshold=0.0), ValueError, "0 < threshold <= 1"),
    (lambda: F1Score(threshold="x"), TypeError, "threshold"),
    (lambda: F1Score()([0, 1], [0.3, 0.7]), ValueError, r"y_pred of shape \(N, C\)"),
    (lambda: F1Score()(np.eye(3), np.eye(2)), ValueError, "same number of samples"),
    (lambda: F1Score()(np.ones((2, 3)), np.eye(2)), ValueError, "F1Score expects y_true"),
    (lambda: Mean().update_state(["a"]), TypeError, "values must be numeric"),
    (lambda: Mean().update_state([1.0, 2.0], sample_weight=[1.0, 2.0, 3.0]), ValueError,
     "sample_weight"),
    (lambda: MeanSquaredError()([[1.0, 2.0]], [[1.0, 2.0, 3.0]]), ValueError, "same shape"),
    (lambda: MeanMetricWrapper(3), TypeError, "fn must be callable"),
    (lambda: Mean(name=3), TypeError, "name must be a string"),
    (lambda: metrics.get("accuracy").update_state(1, [1]), ValueError,
     "y_true must have a batch dimension"),
]


@pytest.mark.parametrize("call, exc, match", BAD_INPUTS,
                         ids=[f"bad{i}" for i in range(len(BAD_INPUTS))])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_failed_update_leaves_state_unchanged():
    m = SparseCategoricalAccuracy()
    m.update_state([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError):
        m.update_state([0, 7], [[0.9, 0.1], [0.2, 0.8]])
    assert m.result() == 1.0
    p = Precision()
    p.update_state([1, 0], [0.9, 0.1])
    with pytest.raises(ValueError):
        p.update_state([1, 0, 1], [0.9, 0.1])
    assert p.result() == 1.0


# =============================================================================== sklearn
def test_against_sklearn(rng):
    skm = pytest.importorskip("sklearn.metrics")
    k = 5
    y = rng.integers(0, k, 300)
    probs = rng.random((300, k)) + np.eye(k)[y] * 0.4
    pred = np.argmax(probs, 1)
    w = rng.random(300)
    labels = list(range(k))
    np.testing.assert_array_equal(confusion_matrix(y, probs),
                                  skm.confusion_matrix(y, pred, labels=labels))
    np.testing.assert_allclose(confusion_matrix(y, probs, sample_weight=w),
                               skm.confusion_matrix(y, pred, labels=labels, sample_weight=w))
    for average in (None, "micro", "macro", "weighted"):
        ours = precision_recall_f1(y, probs, average=average, sample_weight=w)
        theirs = skm.precision_recall_fscore_support(y, pred, labels=labels, average=average,
                                                     sample_weight=w, zero_division=0)
        for a, b in zip(ours[:3], theirs[:3]):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    names = [f"c{i}" for i in range(k)]
    assert classification_report(y, probs, target_names=names, digits=3) == \
        skm.classification_report(y, pred, labels=labels, target_names=names, digits=3,
                                  zero_division=0)


def test_precision_recall_top_k_as_keras():
    """Keras's top_k: along the last axis, only the k largest predictions can be positive;
    without thresholds they all are (Keras's documented examples first)."""
    for k, want in ((2, 0.0), (4, 0.5)):
        m = metrics.Precision(top_k=k)
        m.update_state([0, 0, 1, 1], [1, 1, 1, 1])
        assert m.result() == want
    y_true = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    y_pred = np.array([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.45, 0.05, 0.5]])
    # a naive loop: positives are the top-k entries of each row (ties: lower index)
    for k in (1, 2, 3):
        for thr in (None, 0.4):
            tp = fp = fn = 0
            for t_row, p_row in zip(y_true, y_pred):
                top = sorted(range(3), key=lambda j: (-p_row[j], j))[:k]
                for j in range(3):
                    pos = j in top and (thr is None or p_row[j] > thr)
                    tp += pos and t_row[j] == 1
                    fp += pos and t_row[j] == 0
                    fn += (not pos) and t_row[j] == 1
            p = metrics.Precision(thresholds=thr, top_k=k)
            r = metrics.Recall(thresholds=thr, top_k=k)
            p.update_state(y_true, y_pred)
            r.update_state(y_true, y_pred)
            assert p.result() == pytest.approx(tp / (tp + fp) if tp + fp else 0.0), (k, thr)
            assert r.result() == pytest.approx(tp / (tp + fn) if tp + fn else 0.0), (k, thr)
    # class_id scores one column after the top-k filter
    m = metrics.Precision(top_k=1, class_id=1)
    m.update_state(y_true, y_pred)
    assert m.result() == 0.5
    cfg = metrics.Recall(top_k=2, class_id=0).get_config()
    assert cfg["top_k"] == 2 and metrics.Recall(**cfg).get_config() == cfg
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            metrics.Precision(top_k=bad)


def test_top_k_categorical_accuracy_as_keras():
    """Keras's TopKCategoricalAccuracy / SparseTopKCategoricalAccuracy (k = 5 by default):
    the documented Keras examples, a naive rank count on random scores with ties (a tie
    counts for the true class, as in_top_k) and a NaN score at the label (counted as
    -inf), weights, configs and the compile names."""
    assert metrics.TopKCategoricalAccuracy(k=1)([[0, 0, 1], [0, 1, 0]],
                                          [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]) == 0.5
    assert metrics.SparseTopKCategoricalAccuracy(k=1)([2, 1],
                                                [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]) == 0.5
    rng = np.random.default_rng(0)
    p = rng.integers(0, 4, (200, 7)).astype(np.float64)      # many ties
    p[3, 2] = np.nan
    labels = rng.integers(0, 7, 200)
    labels[3] = 2
    for k in (1, 2, 3, 7):
        naive = []
        for row, lab in zip(p, labels):
            at = -np.inf if np.isnan(row[lab]) else row[lab]
            naive.append(float(1 + sum(v > at for v in row) <= k))
        np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(labels, p, k=k),
                                      naive)
        np.testing.assert_array_equal(
            metrics.top_k_categorical_accuracy(np.eye(7)[labels], p, k=k), naive)
        w = rng.random(200)
        m = metrics.SparseTopKCategoricalAccuracy(k=k)
        m.update_state(labels[:120], p[:120], sample_weight=w[:120])
        m.update_state(labels[120:, None], p[120:], sample_weight=w[120:])
        assert m.result() == pytest.approx(np.sum(w * naive) / np.sum(w))
    assert metrics.get("top_k_categorical_accuracy").k == 5
    again = metrics.get(metrics.serialize(metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")))
    assert type(again) is metrics.SparseTopKCategoricalAccuracy and again.k == 3
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.TopKCategoricalAccuracy(k=0)
    with pytest.raises(ValueError, match="integer labels: use sparse_top_k"):
        metrics.top_k_categorical_accuracy([1, 2], [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
