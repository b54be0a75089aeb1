"""fastnn.metrics: stateful metrics, the compile-time resolver, and evaluation reports.

Expected values are hand-computed (several are the examples of the Keras and scikit-learn
documentation) or counted directly with NumPy loops; scikit-learn, when installed, is a
further cross-check (skipped otherwise, never required).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from fastnn import losses, metrics
from fastnn.metrics import (AUC, Accuracy, BinaryAccuracy, CategoricalAccuracy,
                            ConfusionMatrix, F1Score, FBetaScore, Mean, MeanAbsoluteError,
                            MeanMetricWrapper, MeanSquaredError, Metric, Precision, Recall,
                            SparseCategoricalAccuracy, classification_report,
                            confusion_matrix, precision_recall_f1)
from conftest import run_steps_calls


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

    def test_regression_metrics_take_per_timestep_and_element_weights(self):
        """Weights of shape (N, T) for outputs (N, T, F) weigh each timestep's mean over F,
        as Keras 3.15 (0.24976378893312726 for these inputs, 0.3970931834083278 for MAE:
        computed there); (N,) and (N, T, F) weights as before. Before: a ValueError."""
        rng = np.random.default_rng(0)
        t, p, w = rng.random((4, 3, 2)), rng.random((4, 3, 2)), rng.random((4, 3))
        for cls, err, keras_value in ((MeanSquaredError, np.square(p - t), 0.24976378893312726),
                                      (MeanAbsoluteError, np.abs(p - t), 0.3970931834083278)):
            m = cls()
            m.update_state(t, p, sample_weight=w)
            per_step = err.mean(axis=-1)
            assert m.result() == pytest.approx((per_step * w).sum() / w.sum(), rel=1e-14)
            assert m.result() == pytest.approx(keras_value, rel=1e-14)
            m = cls()
            m.update_state(t, p, sample_weight=w[:, :1])  # (N, 1): per sample
            expected = (err.mean(axis=(1, 2)) * w[:, 0]).sum() / w[:, 0].sum()
            assert m.result() == pytest.approx(expected, rel=1e-14)
            m = cls()
            m.update_state(t, p, sample_weight=np.broadcast_to(w[..., None], t.shape))
            assert m.result() == pytest.approx((err * w[..., None]).sum() / (2 * w.sum()),
                                               rel=1e-14)
            m = cls()
            m.update_state(t, p)
            assert m.result() == pytest.approx(err.mean(), rel=1e-14)
            with pytest.raises(ValueError, match="sample_weight"):
                cls().update_state(t, p, sample_weight=w[:, :2])

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

    def test_per_timestep_weights(self, rng):
        """Outputs (N, T, K) take weights (N, T), (N, T, 1) or (N, 1, 1), padded with
        trailing axes and broadcast as Keras does (they were refused: "one weight per
        sample"); each equals the per-element weights it stands for. Keras 3.15 on these
        forms: equal values (Precision 0.5948 with (N, 1, 1))."""
        t = rng.integers(0, 2, (6, 2, 3))
        p = rng.random((6, 2, 3))
        w = rng.random((6, 2))
        for cls in (Precision, Recall, lambda: AUC(num_thresholds=9)):
            full = cls()(t, p, np.repeat(w[..., None], 3, axis=2))
            assert cls()(t, p, w) == full
            assert cls()(t, p, w[..., None]) == full
            assert cls()(t, p, w[:, :1, None]) == cls()(t, p, w[:, 0])
            with pytest.raises(ValueError, match=r"shape \(6, 3\) does not broadcast to "
                                                 r"y_pred's shape \(6, 2, 3\)"):
                cls()(t, p, rng.random((6, 3)))

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
    yi = rng.integers(0, 3, (n, 3))
    pi = np.where(rng.random((n, 3)) < 0.6, yi, rng.integers(0, 3, (n, 3)))
    return [
        (lambda: Accuracy(), yi, pi),
        (lambda: Accuracy(), yi[:, 0], pi[:, :1]),
        (lambda: FBetaScore(beta=2.0), one_hot(ys, 4), ps),
        (lambda: FBetaScore("weighted", beta=0.5, threshold=0.4), ym, pm),
        (lambda: FBetaScore("micro", beta=3), ys, ps),
        (lambda: AUC(), yb, pb),
        (lambda: AUC(num_thresholds=7, curve="PR"), ym, pm),
        (lambda: AUC(curve="pr", summation_method="Minoring", label_weights=[1, 0.5, 2]),
         ym, pm),
        (lambda: AUC(multi_label=True, summation_method="majoring"), ym, pm),
        (lambda: AUC(multi_label=True, num_labels=3, label_weights=[2, 0, 1],
                     thresholds=[0.2, 0.7, 0.4]), ym, pm),
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
    counts for the true class, as in_top_k) and non-finite scores (a sample with any NaN
    or +-inf score is a miss, as TensorFlow's in_top_k: checked against Keras 3.15.1),
    weights, configs and the compile names."""
    assert metrics.TopKCategoricalAccuracy(k=1)([[0, 0, 1], [0, 1, 0]],
                                          [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]) == 0.5
    assert metrics.SparseTopKCategoricalAccuracy(k=1)([2, 1],
                                                [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]) == 0.5
    rng = np.random.default_rng(0)
    p = rng.integers(0, 4, (200, 7)).astype(np.float64)      # many ties
    p[3, 2] = np.nan
    p[5, 0], p[6, 1] = np.inf, -np.inf
    labels = rng.integers(0, 7, 200)
    labels[3], labels[5] = 2, 0
    for k in (1, 2, 3, 7):
        naive = []
        for row, lab in zip(p, labels):
            naive.append(float(1 + sum(v > row[lab] for v in row) <= k
                               and np.isfinite(row).all()))
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


# =============================================================================== Accuracy
def naive_accuracy(y, p, w=None):
    """Keras's accuracy by loops: per sample, the fraction of equal elements; then the
    weighted mean over samples."""
    y, p = np.asarray(y), np.asarray(p)
    scores = []
    for yi, pi in zip(y, p):
        yi, pi = np.ravel(yi), np.ravel(pi)
        scores.append(sum(float(a == b) for a, b in zip(yi, pi)) / len(yi))
    w = np.ones(len(scores)) if w is None else np.asarray(w, float)
    return sum(s * wi for s, wi in zip(scores, w)) / sum(w)


class TestAccuracy:
    def test_keras_examples(self):
        m = Accuracy()
        m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]])
        assert m.result() == 0.75
        m.reset_state()
        m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]], sample_weight=[1, 1, 0, 0])
        assert m.result() == 0.5
        assert Accuracy().name == "accuracy"

    def test_keras_cross_check(self):
        # value from keras 3.15.1 (TensorFlow 2.21 CPU): two updates, the second weighted
        m = Accuracy()
        m.update_state([[1, 2, 3], [4, 5, 6]], [[1, 0, 3], [4, 5, 6]])
        m.update_state([[1, 2, 3], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]], sample_weight=[2.0, 0.5])
        assert m.result() == pytest.approx(0.4444444477558136, rel=1e-6)
        assert m.result() == approx((2 / 3 + 1 + 0 + 0.5 * 2 / 3) / 4.5)

    @pytest.mark.parametrize("shape", [(40,), (40, 1), (40, 3), (40, 2, 3)])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_against_loops(self, rng, shape, weighted):
        y = rng.integers(0, 3, shape)
        p = np.where(rng.random(shape) < 0.5, y, rng.integers(0, 3, shape)).astype(float)
        w = rng.random(40) * 2 if weighted else None
        m = Accuracy()
        m.update_state(y[:15], p[:15], None if w is None else w[:15])
        m.update_state(y[15:], p[15:], None if w is None else w[15:])
        assert m.result() == approx(naive_accuracy(y, p, w))
        np.testing.assert_allclose(metrics.accuracy(y, p),
                                   [naive_accuracy(y[i:i + 1], p[i:i + 1]) for i in range(40)])

    def test_compared_in_the_dtype_of_y_pred(self):
        # Keras casts y_true to y_pred's dtype: float32(0.1) equals the float64 label 0.1
        assert Accuracy()([[0.1], [0.2]], np.array([[0.1], [0.3]], np.float32)) == 0.5
        # an integer y_pred is compared exactly (a label 1.5 is not the prediction 1)
        assert Accuracy()([[1.5], [2.0]], np.array([[1], [2]])) == 0.5

    def test_trailing_axis_of_one(self):
        assert Accuracy()([1, 2, 3], [[1], [0], [3]]) == approx(2 / 3)

    def test_not_the_accuracy_string(self):
        """"accuracy" keeps its automatic choice (here binary, thresholded at 0.5), in any
        case, as Keras 3's compile lower-cases it ("Accuracy" too); the class, the class
        given to get() and the dict form compare exactly."""
        y, p = [[1], [0]], [[0.9], [0.2]]
        for name in ("accuracy", "Accuracy", "ACC"):
            auto = metrics.get(name, loss="binary_crossentropy")
            assert type(auto) is BinaryAccuracy and auto(y, p) == 1.0
            assert auto.name == name                          # named as written
        for exact in (metrics.get(Accuracy), metrics.get(Accuracy()),
                      metrics.get({"class_name": "Accuracy", "config": {"name": "exact"}})):
            assert type(exact) is Accuracy
            assert exact(y, p) == 0.0
            assert exact([[1], [0]], [[1.0], [0.0]]) == 0.5   # accumulates: 2 of 4

    def test_dtype_and_config(self):
        m = Accuracy(dtype="float32")
        m.update_state([[1], [2], [3]], [[1], [0], [0]])
        assert m.result() == float(np.float32(1 / 3)) and m.result() != 1 / 3
        assert m.get_config() == {"name": "accuracy", "dtype": "float32"}
        assert Accuracy(name="eq").get_config() == {"name": "eq"}
        again = metrics.get(json.loads(json.dumps(metrics.serialize(m))))
        assert type(again) is Accuracy and again.get_config() == m.get_config()


# =============================================================================== FBetaScore
def naive_fbeta(y_true, pred, beta, average=None, w=None):
    """F-beta from 0/1 label and prediction matrices (N, C) by loops and the textbook
    formula (1 + b^2) P R / (b^2 P + R), 0 where undefined."""
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    n, k = y_true.shape
    w = np.ones(n) if w is None else np.asarray(w, float)
    tp, fp, fn, sup = ([0.0] * k for _ in range(4))
    for i in range(n):
        for j in range(k):
            if pred[i, j] and y_true[i, j]:
                tp[j] += w[i]
            elif pred[i, j]:
                fp[j] += w[i]
            elif y_true[i, j]:
                fn[j] += w[i]
            sup[j] += w[i] * y_true[i, j]

    def score(tp_, fp_, fn_):
        prec = tp_ / (tp_ + fp_) if tp_ + fp_ else 0.0
        rec = tp_ / (tp_ + fn_) if tp_ + fn_ else 0.0
        den = beta ** 2 * prec + rec
        return (1 + beta ** 2) * prec * rec / den if den else 0.0

    if average == "micro":
        return score(sum(tp), sum(fp), sum(fn))
    per = [score(tp[j], fp[j], fn[j]) for j in range(k)]
    if average == "macro":
        return sum(per) / k
    if average == "weighted":
        return sum(f * s for f, s in zip(per, sup)) / sum(sup)
    return per


class TestFBetaScore:
    YF = [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    PF = [[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]]

    def test_keras_example(self):
        # Keras's documented result [0.3846154, 0.90909094, 0.8333334]: per class
        # tp [1, 2, 1], fp [0, 1, 1], fn [2, 0, 0] -> 5 tp / (5 tp + 4 fn + fp)
        m = FBetaScore(beta=2.0, threshold=0.5)
        m.update_state(self.YF, self.PF)
        np.testing.assert_allclose(m.result(), [5 / 13, 10 / 11, 5 / 6], rtol=1e-12)
        np.testing.assert_allclose(m.result(), [0.3846154, 0.90909094, 0.8333334], rtol=1e-6)

    @pytest.mark.parametrize("kwargs, y, p, w, expect", [
        # values from keras 3.15.1 (TensorFlow 2.21 CPU), float32 with its epsilon
        (dict(average="micro", beta=0.5, threshold=0.5), YF, PF, None, 0.666666567325592),
        (dict(average="macro", beta=3.0, threshold=0.5), YF, PF, None, 0.7395381927490234),
        (dict(average="weighted", beta=2.0), np.eye(3)[[0, 2, 1, 2, 0, 1, 2]],
         [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1], [0.1, 0.6, 0.3],
          [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
         [1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.25], 0.4825390577316284),
        (dict(beta=0.5), np.eye(3)[[0, 2, 1, 2, 0, 1, 2]],
         [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1], [0.1, 0.6, 0.3],
          [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
         [1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.25],
         [0.49999985098838806, 0.23255810141563416, 0.9183672070503235]),
    ])
    def test_keras_cross_check(self, kwargs, y, p, w, expect):
        np.testing.assert_allclose(FBetaScore(**kwargs)(y, p, w), expect, rtol=1e-6)

    @pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
    @pytest.mark.parametrize("beta", [0.5, 2.0, 1])
    @pytest.mark.parametrize("threshold", [None, 0.6])
    def test_against_loops(self, rng, average, beta, threshold):
        k = 4
        if threshold is None:     # single-label: the argmax is the prediction
            labels = rng.integers(0, k, 90)
            y = one_hot(labels, k)
            p = rng.random((90, k)) + 0.3 * y
            pred = one_hot(np.argmax(p, 1), k)
        else:                     # multi-label
            y = rng.integers(0, 2, (90, k))
            p = rng.random((90, k))
            pred = p > threshold
        w = rng.random(90) * 2
        m = FBetaScore(average, beta, threshold)
        m.update_state(y[:50], p[:50], w[:50])
        m.update_state(y[50:], p[50:], w[50:])
        np.testing.assert_allclose(m.result(), naive_fbeta(y, pred, beta, average, w),
                                   rtol=1e-12, atol=1e-12)

    def test_extreme_beta_tends_to_precision_and_recall(self):
        # per class: precision [1, 2/3, 1/2], recall [1/3, 1, 1]
        np.testing.assert_allclose(FBetaScore(beta=1e-4, threshold=0.5)(self.YF, self.PF),
                                   [1, 2 / 3, 1 / 2], rtol=1e-6)
        np.testing.assert_allclose(FBetaScore(beta=1e4, threshold=0.5)(self.YF, self.PF),
                                   [1 / 3, 1, 1], rtol=1e-6)

    def test_f1_score_is_fbeta_with_beta_one(self, rng):
        y = rng.integers(0, 2, (70, 3))
        p = rng.random((70, 3))
        w = rng.random(70)
        f1, fb = F1Score("weighted", 0.5), FBetaScore("weighted", 1.0, 0.5)
        assert isinstance(f1, FBetaScore) and f1.beta == 1.0 and f1.name == "f1_score"
        f1.update_state(y, p, w)
        fb.update_state(y, p, w)
        assert f1.result() == fb.result()
        # F1 stays 2 tp / (2 tp + fp + fn) to the bit
        f1 = F1Score()
        f1.update_state(y, p, w)
        tp, fp, fn = f1.true_positives, f1.false_positives, f1.false_negatives
        np.testing.assert_array_equal(f1.result(), 2 * tp / (2 * tp + fp + fn))

    def test_zero_division_gives_zero(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # class 1 never true nor predicted, class 2 never predicted
            m = FBetaScore(beta=2.0, threshold=0.5)
            m.update_state([[1, 0, 1], [1, 0, 0]], [[0.9, 0.1, 0.2], [0.8, 0.0, 0.1]])
            np.testing.assert_array_equal(m.result(), [1.0, 0.0, 0.0])
            assert FBetaScore("macro").result() == 0.0
            assert FBetaScore().result().shape == (0,)

    def test_config_and_names(self):
        m = FBetaScore("macro", 2, 0.3, name="f2")
        cfg = m.get_config()
        assert cfg == {"name": "f2", "average": "macro", "beta": 2.0, "threshold": 0.3}
        assert isinstance(cfg["beta"], float)
        again = metrics.get(json.loads(json.dumps(metrics.serialize(m))))
        assert type(again) is FBetaScore and again.get_config() == cfg
        assert FBetaScore().name == "fbeta_score"
        f1 = F1Score("micro", dtype="float32")
        assert f1.get_config() == {"name": "f1_score", "average": "micro", "threshold": None,
                                   "dtype": "float32"}
        again = F1Score.from_config(f1.get_config())
        assert type(again) is F1Score and again.get_config() == f1.get_config()
        for ident in ("fbeta_score", "FBetaScore", "fbeta-score"):
            g = metrics.get(ident, loss="categorical_crossentropy", output_shape=(None, 3))
            assert type(g) is FBetaScore and g.name == ident
            assert g.average == "macro" and g.threshold is None and g.beta == 1.0
        assert metrics.get("fbeta_score", loss="binary_crossentropy").threshold == 0.5

    def test_dtype(self):
        m = FBetaScore(beta=2.0, threshold=0.5, dtype="float32")
        m.update_state(self.YF, self.PF)
        assert m.result().dtype == np.float32
        np.testing.assert_array_equal(m.result(), np.float32([5 / 13, 10 / 11, 5 / 6]))
        m = FBetaScore("macro", dtype=np.float16)
        assert m.get_config()["dtype"] == "float16" and m.result() == 0.0


# =============================================================================== AUC
def keras_thresholds(num_thresholds):
    return ([-1e-7] + [i / (num_thresholds - 1) for i in range(1, num_thresholds - 1)]
            + [1 + 1e-7])


def naive_counts(y, p, thresholds, w=None):
    """tp, fp, tn, fn at each threshold by loops over thresholds and elements: an element
    is predicted positive when its score (clipped to [0, 1]) is above the threshold."""
    y, p = np.ravel(y), np.clip(np.ravel(np.asarray(p, float)), 0, 1)
    w = np.ones(len(y)) if w is None else np.ravel(w)
    out = np.zeros((4, len(thresholds)))
    for i, t in enumerate(thresholds):
        for yi, pi, wi in zip(y, p, w):
            out[(0 if yi else 1) if pi > t else (3 if yi else 2), i] += wi
    return out            # rows: tp, fp, tn, fn


def naive_area(counts, curve="ROC", method="interpolation"):
    """The area from per-threshold counts, written out: ROC is (fpr, tpr), PR is (recall,
    precision); each interval adds its width times the mean / min / max of its ends. PR
    interpolation integrates precision over recall numerically (midpoint rule) along the
    path where the true positives and the predicted positives vary linearly."""
    tp, fp, tn, fn = counts
    npos = tp[0] + fn[0]

    def rate(a, b):
        return a / (a + b) if a + b else 0.0

    area = 0.0
    for i in range(len(tp) - 1):
        if curve == "PR" and method == "interpolation":
            d_tp, d_p = tp[i] - tp[i + 1], (tp[i] + fp[i]) - (tp[i + 1] + fp[i + 1])
            if d_tp == 0:
                continue
            s = (np.arange(4000) + 0.5) / 4000
            precision = (tp[i + 1] + s * d_tp) / (tp[i + 1] + fp[i + 1] + s * d_p)
            area += precision.mean() * d_tp / npos
            continue
        if curve == "ROC":
            x0, x1 = rate(fp[i], tn[i]), rate(fp[i + 1], tn[i + 1])
            y0, y1 = rate(tp[i], fn[i]), rate(tp[i + 1], fn[i + 1])
        else:
            x0, x1 = rate(tp[i], fn[i]), rate(tp[i + 1], fn[i + 1])
            y0, y1 = rate(tp[i], fp[i]), rate(tp[i + 1], fp[i + 1])
        height = {"interpolation": (y0 + y1) / 2, "minoring": min(y0, y1),
                  "majoring": max(y0, y1)}[method]
        area += (x0 - x1) * height
    return area


def mann_whitney(y, p):
    """The exact ROC AUC: the probability that a positive outscores a negative, ties
    counting one half."""
    pos = [s for s, t in zip(p, y) if t]
    neg = [s for s, t in zip(p, y) if not t]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


class TestAUC:
    Y = [0, 0, 1, 1]
    P = [0, 0.5, 0.3, 0.9]

    @pytest.mark.parametrize("curve, method, expect", [
        # Keras's example: thresholds [-1e-7, 0.5, 1 + 1e-7], tp [2, 1, 0], fp [2, 0, 0],
        # tn [0, 2, 2], fn [0, 1, 2]: tpr [1, 0.5, 0], fpr [1, 0, 0]
        ("ROC", "interpolation", 0.75),     # 1 * (1 + 0.5) / 2
        ("ROC", "minoring", 0.5),           # 1 * min(1, 0.5)
        ("ROC", "majoring", 1.0),           # 1 * max(1, 0.5)
        # recall [1, 0.5, 0], precision [2/4, 1/1, 0 (no prediction)]
        ("PR", "minoring", 0.25),           # 0.5 * min(0.5, 1) + 0.5 * min(1, 0)
        ("PR", "majoring", 1.0),            # 0.5 * max(0.5, 1) + 0.5 * max(1, 0)
        # interval 1: TP 2 -> 1 while P 4 -> 1, TP = 2/3 + P/3: the integral of
        # (2/3 + P/3) / P * dP/3 over [1, 4], / 2 positives = (1 + 2/3 ln 4) / 6;
        # interval 2: TP = P from 1 to 0, precision 1 over recall 0.5 -> 0.5
        ("PR", "interpolation", 0.5 + (1 + 2 / 3 * np.log(4)) / 6),
    ])
    def test_hand_computed(self, curve, method, expect):
        m = AUC(num_thresholds=3, curve=curve, summation_method=method)
        m.update_state(self.Y, self.P)
        np.testing.assert_array_equal(m.true_positives, [2, 1, 0])
        np.testing.assert_array_equal(m.false_positives, [2, 0, 0])
        np.testing.assert_array_equal(m.true_negatives, [0, 2, 2])
        np.testing.assert_array_equal(m.false_negatives, [0, 1, 2])
        assert m.result() == approx(expect)

    def test_keras_weighted_example(self):
        assert AUC(num_thresholds=3)(self.Y, self.P, sample_weight=[1, 0, 0, 1]) == 1.0

    YA = [0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0]
    PA = [0.137, 0.912, 0.448, 0.263, 0.771, 0.594, 0.081, 0.356, 0.689, 0.427, 0.523, 0.808]
    WA = [1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 3.0, 1.0, 0.75, 2.0, 1.0, 0.5]
    ZA = [-2.1, 1.7, 0.3, -0.6, 2.4, 0.9, -3.0, -0.2, 1.1, -1.3, 0.05, 1.9]
    YB = [[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 1]]
    PB = [[0.83, 0.12, 0.64], [0.57, 0.38, 0.41], [0.56, 0.22, 0.19],
          [0.44, 0.66, 0.53], [0.31, 0.74, 0.48], [0.18, 0.53, 0.77]]
    YC = [0, 1, 0, 1, 1, 0]
    PC = [1.4, -0.3, 0.0, 1.0, 0.6, 0.35]      # out of [0, 1]: clipped
    KERAS = [
        # (kwargs, y, y_pred, sample_weight, value from keras 3.15.1 / TensorFlow 2.21 CPU)
        (dict(), YA, PA, None, 0.75),
        (dict(curve="PR"), YA, PA, None, 0.7134265899658203),
        (dict(num_thresholds=11, summation_method="minoring"), YA, PA, WA, 0.8084847927093506),
        (dict(num_thresholds=11, curve="PR", summation_method="majoring"), YA, PA, None,
         0.7500000596046448),
        (dict(num_thresholds=11, curve="PR"), YA, PA, WA, 0.7469601631164551),
        (dict(thresholds=[0.3, 0.5, 0.7], from_logits=True), YA, ZA, None, 0.7361111044883728),
        (dict(multi_label=True, label_weights=[1.0, 2.0, 0.5]), YB, PB, None,
         0.6190476417541504),
        (dict(multi_label=True, curve="PR", num_thresholds=7), YB, PB, None,
         0.6813459396362305),
        (dict(label_weights=[1.0, 2.0, 0.5]), YB, PB, None, 0.6553288102149963),
        (dict(num_thresholds=5), YC, PC, None, 0.5555555820465088),
        (dict(num_thresholds=5, curve="PR"), YC, PC, None, 0.531511664390564),
    ]

    @pytest.mark.parametrize("kwargs, y, p, w, expect", KERAS,
                             ids=[f"keras{i}" for i in range(len(KERAS))])
    def test_keras_cross_check(self, kwargs, y, p, w, expect):
        assert AUC(**kwargs)(y, p, w) == pytest.approx(expect, rel=1e-6, abs=1e-7)

    @pytest.mark.parametrize("curve", ["ROC", "PR"])
    @pytest.mark.parametrize("method", ["interpolation", "minoring", "majoring"])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_against_loops(self, rng, curve, method, weighted):
        y = rng.integers(0, 2, 70)
        p = np.clip(rng.random(70) * 0.8 + 0.35 * y, 0, 1)
        p[:3] = [0.0, 1.0, 0.5]                  # on the end points and on a threshold
        w = rng.random(70) * 2 if weighted else None
        m = AUC(num_thresholds=13, curve=curve, summation_method=method)
        m.update_state(y[:30], p[:30], None if w is None else w[:30])
        m.update_state(y[30:], p[30:], None if w is None else w[30:])
        counts = naive_counts(y, p, keras_thresholds(13), w)
        for got, want in zip((m.true_positives, m.false_positives, m.true_negatives,
                              m.false_negatives), counts):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert m.result() == pytest.approx(naive_area(counts, curve, method), abs=1e-9)

    def test_given_thresholds(self, rng):
        y = rng.integers(0, 2, 50)
        p = rng.random(50)
        m = AUC(thresholds=[0.8, 0.25, 0.5, 0.5], curve="PR")
        assert m.thresholds == [-1e-7, 0.25, 0.5, 0.5, 0.8, 1 + 1e-7]
        assert m.num_thresholds == 6
        counts = naive_counts(y, p, [-1e-7, 0.25, 0.5, 0.5, 0.8, 1 + 1e-7])
        assert m(y, p) == pytest.approx(naive_area(counts, "PR"), abs=1e-9)
        assert AUC(num_thresholds=4).thresholds == pytest.approx(keras_thresholds(4))

    def test_roc_approaches_mann_whitney(self, rng):
        y = rng.integers(0, 2, 400)
        p = rng.random(400) * 0.7 + 0.3 * y * rng.random(400)
        exact = mann_whitney(y, p)
        assert 0.6 < exact < 0.9
        assert AUC(num_thresholds=20001)(y, p) == pytest.approx(exact, abs=2e-4)
        assert abs(AUC(num_thresholds=3)(y, p) - exact) > 0.02   # coarse grids are not
        # scores spread one per threshold interval: the trapezoids are exact, ties too
        # (a positive and a negative in one interval count one half, as a tie)
        grid = rng.integers(0, 40, 120)
        scores = (grid + 0.5) / 40
        labels = rng.integers(0, 2, 120)
        assert AUC(num_thresholds=41)(labels, scores) == approx(mann_whitney(labels, scores))

    def test_multi_label_is_the_mean_of_label_curves(self, rng):
        y = rng.integers(0, 2, (60, 3))
        p = np.clip(rng.random((60, 3)) + 0.3 * y - 0.15, 0, 1)
        per = [AUC(num_thresholds=9, curve="PR")(y[:, j], p[:, j]) for j in range(3)]
        m = AUC(num_thresholds=9, curve="PR", multi_label=True)
        assert m(y, p) == approx(np.mean(per))
        assert m.true_positives.shape == (9, 3)
        weighted = AUC(num_thresholds=9, curve="PR", multi_label=True, label_weights=[1, 3, 0])
        assert weighted(y, p) == approx((per[0] + 3 * per[1]) / 4)
        assert AUC(multi_label=True, label_weights=[0, 0, 0])(y, p) == 0.0
        # multi_label=False flattens every label into one curve
        assert AUC(num_thresholds=9)(y, p) == approx(AUC(num_thresholds=9)(y.ravel(),
                                                                           p.ravel()))
        # ... where label weights weigh each element like a sample weight
        lw = np.array([0.5, 2.0, 1.0])
        flat = AUC(num_thresholds=9, label_weights=lw)(y, p)
        assert flat == approx(AUC(num_thresholds=9)(y.ravel(), p.ravel(),
                                                    np.tile(lw, 60)))

    def test_num_labels_fixes_the_label_count(self):
        m = AUC(multi_label=True, num_labels=2)
        assert m.true_positives.shape == (200, 2) and m.result() == 0.0
        with pytest.raises(ValueError, match="y_pred has 3 labels but this AUC counts 2"):
            m.update_state(np.eye(3), np.eye(3))
        m = AUC(multi_label=True)
        assert m.true_positives is None and m.result() == 0.0   # built by the first batch
        m.update_state([[0, 1, 1], [1, 0, 1]], [[0.2, 0.8, 0.4], [0.6, 0.3, 0.9]])
        assert m.true_positives.shape == (200, 3)
        m.reset_state()
        assert m.true_positives.shape == (200, 3) and not m.true_positives.any()

    def test_from_logits(self, rng):
        y = rng.integers(0, 2, (40, 2))
        z = rng.normal(size=(40, 2)) * 3
        z[0, 0], z[1, 1] = 800.0, -800.0        # no overflow
        probs = 1 / (1 + np.exp(-np.clip(z, -500, 500)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = AUC(num_thresholds=17, from_logits=True, multi_label=True)(y, z)
        assert got == approx(AUC(num_thresholds=17, multi_label=True)(y, probs))
        assert got != approx(AUC(num_thresholds=17, multi_label=True)(y, z))

    def test_clipping_and_labels(self):
        # clipped as Keras does: -0.3 counts as 0 (positive at -1e-7), 1.4 as 1
        m = AUC(num_thresholds=5)
        m.update_state(self.YC, self.PC)
        np.testing.assert_array_equal(m.true_positives, [3, 2, 2, 1, 0])
        np.testing.assert_array_equal(m.false_positives, [3, 2, 1, 1, 0])
        # any non-zero label in [0, 1] is a positive (Keras casts the labels to bool)
        assert AUC(num_thresholds=5)([0, 0.5, 0, 1, 1, 0], self.PC) == m.result()
        # a NaN prediction is above no threshold
        n = AUC(num_thresholds=3)
        n.update_state([1, 0], [np.nan, 0.7])
        np.testing.assert_array_equal(n.true_positives, [0, 0, 0])
        np.testing.assert_array_equal(n.false_positives, [1, 1, 0])

    def test_sample_weight_forms(self, rng):
        y = rng.integers(0, 2, (30, 2))
        p = rng.random((30, 2))
        w = rng.random(30)
        per_sample = AUC(num_thresholds=9)(y, p, w)
        assert AUC(num_thresholds=9)(y, p, w[:, None]) == per_sample
        assert AUC(num_thresholds=9)(y, p, np.repeat(w[:, None], 2, 1)) == approx(per_sample)
        assert AUC(num_thresholds=9)(y, p, 2.5) == approx(AUC(num_thresholds=9)(y, p))
        assert per_sample != approx(AUC(num_thresholds=9)(y, p))

    def test_counts_flag(self):
        """fit updates a counting metric once per run of batches: exact for integer
        counts; label weights on flattened labels make float sums, so not then."""
        assert AUC()._counts and AUC(multi_label=True, label_weights=[1, 2])._counts
        assert not AUC(label_weights=[0.3, 0.7])._counts
        assert FBetaScore()._counts and F1Score()._counts
        # a sample of 3 elements scores 0, 1/3, 2/3 or 1: the sums depend on the grouping
        assert not Accuracy()._counts
        y = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0],
                      [1, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]])
        p = np.array([[0, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1],
                      [0, 1, 1], [0, 0, 0], [0, 0, 0], [0, 1, 1]])
        whole, split = Accuracy(), Accuracy()
        whole.update_state(y, p)
        split.update_state(y[:3], p[:3])
        split.update_state(y[3:], p[3:])
        assert whole.total != split.total          # the state differs in its last bit
        assert whole.result() == approx(split.result()) == approx(17 / 30)

    def test_config_round_trip(self):
        for m in [AUC(), AUC(37, "pr", "MAJORING", name="a", dtype="float32",
                             thresholds=[0.7, 0.1], multi_label=True, num_labels=2,
                             label_weights=[1, 0.5], from_logits=True),
                  AUC(label_weights=np.array([2.0, 1.0]))]:
            cfg = m.get_config()
            again = metrics.get(json.loads(json.dumps(metrics.serialize(m))))
            assert type(again) is AUC and again.get_config() == cfg
            assert again.thresholds == m.thresholds
        cfg = AUC(37, "pr", "MAJORING", name="a", dtype="float32", thresholds=[0.7, 0.1],
                  multi_label=True, num_labels=2, label_weights=[1, 0.5]).get_config()
        assert cfg == {"name": "a", "num_thresholds": 4, "curve": "PR",
                       "summation_method": "majoring", "thresholds": [0.1, 0.7],
                       "multi_label": True, "num_labels": 2, "label_weights": [1.0, 0.5],
                       "from_logits": False, "dtype": "float32"}
        assert AUC().get_config()["thresholds"] is None and AUC().name == "auc"

    def test_dtype(self):
        m = AUC(num_thresholds=3, curve="PR", dtype="float32")
        m.update_state(self.Y, self.P)
        expect = 0.5 + (1 + 2 / 3 * np.log(4)) / 6
        assert m.result() == float(np.float32(expect)) and m.result() != expect

    def test_get_by_name(self):
        for ident in ("auc", "AUC", "Auc"):
            m = metrics.get(ident, loss="binary_crossentropy", output_shape=(None, 1))
            assert type(m) is AUC and m.name == ident
            assert m.curve == "ROC" and m.num_thresholds == 200
        assert metrics.get("auc") is not metrics.get("auc")
        m = metrics.get({"class_name": "AUC", "config": {"curve": "PR", "name": "pr_auc"}})
        assert type(m) is AUC and m.curve == "PR" and m.name == "pr_auc"
        assert type(metrics.get(AUC)) is AUC

    def test_failed_update_leaves_state_unchanged(self):
        m = AUC(num_thresholds=3)
        m.update_state(self.Y, self.P)
        before = m.result()
        with pytest.raises(ValueError, match="y_true must hold labels in"):
            m.update_state([0, 2], [0.1, 0.9])
        with pytest.raises(ValueError, match="sample_weight"):
            m.update_state([0, 1], [0.1, 0.9], sample_weight=[1, 2, 3])
        assert m.result() == before and m.true_positives.sum() == 3
        u = AUC(multi_label=True, label_weights=[1, 1])
        with pytest.raises(ValueError, match="label_weights holds 2 weights but y_pred has 3"):
            u.update_state(np.eye(3), np.eye(3))
        assert u.true_positives is None


NEW_BAD_ARGUMENTS = [
    (lambda: AUC(num_thresholds=1), ValueError, "num_thresholds must be an integer > 1, "
                                                "received num_thresholds=1"),
    (lambda: AUC(num_thresholds=2.5), TypeError, "num_thresholds must be an integer"),
    (lambda: AUC(num_thresholds=True), TypeError, "num_thresholds"),
    (lambda: AUC(curve="ROCK"), ValueError, r"curve must be one of \['ROC', 'PR'\] .*'ROCK'"),
    (lambda: AUC(curve=None), TypeError, "curve must be a string"),
    (lambda: AUC(summation_method="trapezoid"), ValueError,
     "summation_method must be one of .*'trapezoid'"),
    (lambda: AUC(thresholds=[0.2, 1.5]), ValueError, r"thresholds must be numbers in \[0, 1\]"),
    (lambda: AUC(thresholds=[]), ValueError, "thresholds must not be empty"),
    (lambda: AUC(multi_label="yes"), TypeError, "`multi_label` must be a bool"),
    (lambda: AUC(from_logits=1), TypeError, "`from_logits` must be a bool"),
    (lambda: AUC(num_labels=3), ValueError, "num_labels is for multi_label=True only"),
    (lambda: AUC(multi_label=True, num_labels=0), ValueError, "num_labels must be a positive"),
    (lambda: AUC(multi_label=True, num_labels=2.0), TypeError, "num_labels must be a positive"),
    (lambda: AUC(label_weights=[1, -1]), ValueError, "label_weights must be finite and non-neg"),
    (lambda: AUC(label_weights=[1, np.nan]), ValueError, "label_weights must be finite"),
    (lambda: AUC(label_weights=[[1, 2]]), ValueError, r"label_weights must be a non-empty 1-D"),
    (lambda: AUC(label_weights=["a"]), TypeError, "label_weights must be numbers"),
    (lambda: AUC(multi_label=True, num_labels=3, label_weights=[1, 2]), ValueError,
     "label_weights must hold num_labels=3 weights, received 2"),
    (lambda: AUC(label_weights=[1, 2])([[0, 1, 0]], [[0.2, 0.3, 0.4]]), ValueError,
     "label_weights holds 2 weights but y_pred has 3 labels"),
    (lambda: AUC()([0, -1], [0.1, 0.2]), ValueError,
     r"y_true must hold labels in \[0, 1\], received values in \[-1, 0\]"),
    (lambda: AUC()([0, np.nan], [0.1, 0.2]), ValueError, r"y_true must hold labels in \[0, 1\]"),
    (lambda: AUC(multi_label=True)([0, 1], [0.1, 0.2]), ValueError,
     r"multi_label=True\) expects y_pred of shape \(N, L\)"),
    (lambda: AUC()([0, 1], [0.1]), ValueError, "same number of samples"),
    (lambda: AUC()([[0, 1]], [[0.1, 0.2, 0.3]]), ValueError, "same shape"),
    (lambda: AUC()(["a"], [0.1]), TypeError, "y_true must be numeric"),
    (lambda: AUC(dtype="int32"), ValueError, "dtype must be a floating-point dtype .*'int32'"),
    (lambda: AUC(dtype="bogus"), TypeError, "dtype must be a floating-point dtype"),
    (lambda: AUC(name=1), TypeError, "name must be a string"),
    (lambda: FBetaScore(beta=0), ValueError, "`beta` must be > 0, received beta=0"),
    (lambda: FBetaScore(beta=-1.0), ValueError, "`beta` must be > 0"),
    (lambda: FBetaScore(beta=float("nan")), ValueError, "`beta` must be finite"),
    (lambda: FBetaScore(beta=float("inf")), ValueError, "`beta` must be finite"),
    (lambda: FBetaScore(beta=True), TypeError, "`beta` must be a float"),
    (lambda: FBetaScore(beta="2"), TypeError, "`beta` must be a float"),
    (lambda: FBetaScore(average="samples"), ValueError, "average must be one of"),
    (lambda: FBetaScore(threshold=1.5), ValueError, "0 < threshold <= 1, received 1.5"),
    (lambda: FBetaScore(dtype=int), ValueError, "dtype must be a floating-point"),
    (lambda: FBetaScore()([0, 1], [0.3, 0.7]), ValueError,
     r"FBetaScore expects y_pred of shape \(N, C\)"),
    (lambda: F1Score(dtype="int8"), ValueError, "dtype"),
    (lambda: Accuracy()([[1, 2]], [[1, 2, 3]]), ValueError,
     r"same shape, received y_true shape \(1, 2\) and y_pred shape \(1, 3\)"),
    (lambda: Accuracy()([1, 2], [1]), ValueError, "same number of samples"),
    (lambda: Accuracy()(["a"], [1]), TypeError, "y_true must be numeric"),
    (lambda: Accuracy(dtype="int64"), ValueError, "dtype must be a floating-point"),
    (lambda: Accuracy(name=3), TypeError, "name must be a string"),
]


@pytest.mark.parametrize("call, exc, match", NEW_BAD_ARGUMENTS,
                         ids=[f"new_bad{i}" for i in range(len(NEW_BAD_ARGUMENTS))])
def test_bad_arguments_of_accuracy_fbeta_auc(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# =============================================================================== in a model
def _tiny_model(metrics_list, seed=3):
    """Flatten -> Dense(6, relu) -> Dense(3, softmax), categorical cross-entropy: the
    model that fit may train in runs of batches (C backend)."""
    from fastnn.layers import Dense, Flatten
    from fastnn.models import Sequential
    from fastnn.utils import set_random_seed
    set_random_seed(seed)
    model = Sequential([Flatten(input_shape=(2, 2)), Dense(6, activation="relu"),
                        Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=metrics_list)
    return model


def _tiny_data(n=70):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(n, 2, 2)).astype(np.float32)
    y = np.eye(3)[np.argmax(x.reshape(n, 4)[:, :3] + 0.5 * rng.normal(size=(n, 3)), 1)]
    return x, y


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("metric", [lambda: BinaryAccuracy(threshold=0.3), Accuracy],
                         ids=["binary_accuracy", "Accuracy"])
def test_fit_runs_of_batches_with_per_sample_fractions(monkeypatch, k, metric):
    """BinaryAccuracy and Accuracy score a sample k / K: fit updates them once per run of
    compiled steps only for a power-of-2 K (then the sums are exact whatever the grouping)
    and the history is bit for bit that of one update per batch either way. (BinaryAccuracy
    on K = 3 outputs was updated per run, its last bits depending on the runs.)"""
    from fastnn.callbacks import LambdaCallback
    from fastnn.layers import Dense, Flatten
    from fastnn.models import Sequential
    from fastnn.utils import set_random_seed
    calls = run_steps_calls(monkeypatch, rows=48)              # runs of 3 batches of 16
    rng = np.random.default_rng(4)   # K = 3: one last bit differed, updated per run
    x = rng.normal(size=(70, 6)).astype(np.float32)
    y = np.eye(k)[rng.integers(0, k, 70)]
    histories = []
    for callbacks in ([], [LambdaCallback(on_train_batch_end=lambda b, logs: None)]):
        calls.clear()
        set_random_seed(5)
        model = Sequential([Flatten(input_shape=(6,)), Dense(5, activation="relu"),
                            Dense(k, activation="softmax")])
        model.compile("adam", "categorical_crossentropy",
                      metrics=[metric()])
        histories.append(model.fit(x, y, epochs=4, batch_size=16, verbose=0,
                                   callbacks=callbacks).history)
        assert (calls != []) == (k == 4 and not callbacks), calls
    assert histories[0] == histories[1]
    assert BinaryAccuracy()._counts_for((None, 3), y) is False
    assert BinaryAccuracy()._counts_for((None, 2, 4), y) is True
    assert Accuracy()._counts_for((None, 1), y) is True


def test_compile_fit_evaluate():
    x, y = _tiny_data()
    model = _tiny_model([AUC(), "auc", AUC(curve="PR", multi_label=True, name="pr"),
                         FBetaScore(beta=2.0, average="macro"), "fbeta_score", Accuracy(),
                         "Accuracy", "accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    names = ["auc", "auc_1", "pr", "fbeta_score", "fbeta_score_1", "accuracy", "Accuracy",
             "accuracy_1"]
    assert list(history) == ["loss"] + names
    for name in names:
        assert len(history[name]) == 2 and 0.0 <= history[name][-1] <= 1.0
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    probs = model.predict(x, batch_size=16, verbose=0)
    roc = naive_area(naive_counts(y, probs, keras_thresholds(200)))
    assert logs["auc"] == pytest.approx(roc, abs=1e-9) and logs["auc_1"] == logs["auc"]
    pr = np.mean([naive_area(naive_counts(y[:, j], probs[:, j], keras_thresholds(200)), "PR")
                  for j in range(3)])
    assert logs["pr"] == pytest.approx(pr, abs=1e-6)
    pred = probs >= probs.max(1, keepdims=True)
    assert logs["fbeta_score"] == approx(naive_fbeta(y, pred, 2.0, "macro"))
    assert logs["fbeta_score_1"] == approx(naive_fbeta(y, pred, 1.0, "macro"))
    assert logs["accuracy"] == 0.0                    # Accuracy(): probabilities != one-hot
    assert logs["accuracy_1"] == approx(np.mean(pred[np.arange(len(y)), y.argmax(1)]))
    assert logs["Accuracy"] == logs["accuracy_1"]     # the string: Keras 3's automatic one
    assert 0.3 < logs["auc"] < 1.0


def test_fit_in_runs_of_batches_leaves_the_history_of_one_update_per_batch(monkeypatch):
    """fit updates counting metrics once per run of compiled steps: the history is bit
    for bit that of one update per batch (a callback with batch hooks forces those). AUC
    with label weights on flattened labels and Accuracy do not count, and keep fit to one
    step at a time."""
    from fastnn.callbacks import LambdaCallback
    calls = run_steps_calls(monkeypatch, rows=32)              # runs of 2 batches of 16
    x, y = _tiny_data()

    def make(extra):
        return [AUC(num_thresholds=50), AUC(curve="PR", multi_label=True, name="pr"),
                FBetaScore(beta=0.5, average="weighted")] + extra()

    for extra, counting in ((list, True),
                            (lambda: [AUC(label_weights=[1.0, 0.3, 0.7], name="lw")], False),
                            (lambda: [Accuracy()], False)):
        histories = []
        for callbacks in ([], [LambdaCallback(on_train_batch_end=lambda b, logs: None)]):
            calls.clear()
            model = _tiny_model(make(extra))
            histories.append(model.fit(x, y, epochs=3, batch_size=16, verbose=0,
                                       callbacks=callbacks).history)
            assert (calls != []) == (counting and not callbacks), (extra(), calls)
        assert histories[0] == histories[1]


def test_fbeta_counts_in_fit_runs_only_for_zero_one_targets(monkeypatch):
    """F-beta adds the label values themselves: with soft labels (pre-smoothed one-hot)
    fit trains step by step and the history is bit for bit that of one update per batch
    (it took the runs and differed in the last bits); with 0/1 labels it takes the runs."""
    from fastnn.callbacks import LambdaCallback
    from fastnn.layers import Dense
    from fastnn.models import Sequential
    from fastnn.utils import set_random_seed
    calls = run_steps_calls(monkeypatch, rows=48)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    hard = np.eye(3)[rng.integers(0, 3, 300)]
    for y, runs in ((hard * 0.9 + 0.1 / 3, False), (hard, True)):
        histories = []
        for callbacks in ([], [LambdaCallback(on_train_batch_end=lambda b, logs: None)]):
            calls.clear()
            set_random_seed(5)
            model = Sequential([Dense(5, activation="relu", input_shape=(6,)),
                                Dense(3, activation="softmax")])
            model.compile("adam", "categorical_crossentropy",
                          metrics=[F1Score(average="micro"), FBetaScore(beta=2.0)])
            histories.append(model.fit(x, y, epochs=3, batch_size=16, verbose=0,
                                       callbacks=callbacks).history)
            assert (calls != []) == (runs and not callbacks), calls
        assert histories[0]["f1_score"] == histories[1]["f1_score"]


def test_fbeta_failed_first_update_leaves_no_state():
    m = FBetaScore()
    with pytest.raises(ValueError, match="sample_weight"):
        m.update_state([[1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], sample_weight=[1, 2, 3])
    assert m.num_classes is None and m.result().shape == (0,)
    m.update_state([[1, 0, 0]], [[0.9, 0.1, 0.0]])       # 3 classes: still accepted
    np.testing.assert_array_equal(m.result(), [1.0, 0.0, 0.0])


def test_thresholds_compare_in_float32():
    """float32 0.3 is not above the threshold 0.3 in float32, where Keras compares (it
    casts the predictions to float32): float64 predictions too."""
    t = np.array([[1, 0]])
    p32 = np.array([[0.3, 0.2]], np.float32)
    np.testing.assert_array_equal(FBetaScore(threshold=0.3)(t, p32), [0.0, 0.0])
    np.testing.assert_array_equal(FBetaScore(threshold=0.3)(t, p32.astype(np.float64)),
                                  [0.0, 0.0])
    assert Precision(thresholds=0.3)(t, p32) == 0.0
    assert Recall(thresholds=[0.3, 0.25])(t, p32).tolist() == [0.0, 1.0]
    assert Precision(thresholds=0.3)(t, p32.astype(np.float64)) == 0.0


def test_accuracy_takes_element_weights():
    m = Accuracy()
    m.update_state([[1, 2], [3, 4]], [[1, 0], [3, 4]], sample_weight=[[1, 0], [1, 1]])
    assert m.result() == 1.0                              # Keras 3: 1.0
    m = BinaryAccuracy()
    m.update_state([[1, 0], [1, 1]], [[0.9, 0.9], [0.2, 0.8]], sample_weight=[[1, 0], [1, 1]])
    assert m.result() == pytest.approx(2 / 3)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: Accuracy(dtype={"class_name": "DTypePolicy"}), TypeError,
     "dtype must be a floating-point dtype"),
    (lambda: AUC(dtype=[("a", "f4")]), TypeError, "dtype must be a floating-point dtype"),
    (lambda: FBetaScore(beta=1e200), ValueError, "`beta` must be <= 1e"),
])
def test_more_bad_metric_arguments(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_argmax_accuracies_pass_over_nan_as_keras():
    """Categorical and sparse categorical accuracy take the predicted class as
    TensorFlow's argmax does (Keras 3's default backend): NaN scores are passed over
    (checked against Keras 3.15.1: rows below give 1, 1, 0, 1, 0)."""
    p = np.array([[0.3, np.inf, 0.1], [0.3, 0.9, np.nan], [np.nan, 0.2, 0.1],
                  [0.1, 0.9, -np.inf], [1, 2, np.nan]], np.float32)
    labels = np.array([1, 1, 0, 1, 2])
    want = [1.0, 1.0, 0.0, 1.0, 0.0]
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy(labels, p), want)
    np.testing.assert_array_equal(metrics.categorical_accuracy(np.eye(3)[labels], p), want)
    # top-k: any non-finite score is a miss (Keras: 0 for every row, k = 1 and 3)
    np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(labels, p, k=3),
                                  np.zeros(5))


def test_keras_serialized_configs_with_dtype_load():
    """Keras 3 writes "dtype": "float32" into every metric config; the metrics without a
    dtype argument take float32 / float64 there (refused before) and nothing else."""
    for cls in (metrics.Mean, metrics.MeanSquaredError, metrics.BinaryAccuracy,
                metrics.CategoricalAccuracy, metrics.SparseCategoricalAccuracy,
                metrics.TopKCategoricalAccuracy, metrics.Precision, metrics.Recall):
        for dt in ("float32", "float64",
                   {"module": "keras", "class_name": "DTypePolicy",
                    "config": {"name": "float32"}}):
            m = metrics.get({"class_name": cls.__name__,
                             "config": {"name": "x", "dtype": dt}})
            assert type(m) is cls and m.name == "x"
        with pytest.raises(ValueError, match="dtype"):
            cls.from_config({"name": "x", "dtype": "int32"})


def test_thresholds_compare_in_float32_as_keras():
    """Keras casts the scores to float32 before comparing them with thresholds: float64
    0.30000001 is not above 0.3 (Keras 3.15.1: precision 0.5, F1 [0, 1])."""
    p = np.array([0.30000001, 0.3, 0.3000001, 0.7])
    m = metrics.Precision(thresholds=0.3)
    m.update_state([1, 1, 0, 1], p)
    assert m.result() == 0.5
    f1 = metrics.F1Score(threshold=0.3)
    f1.update_state(np.eye(2), np.array([[0.30000001, 0.2], [0.1, 0.9]]))
    np.testing.assert_array_equal(f1.result(), [0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auc_compares_predictions_in_float32_as_keras(dtype):
    """Keras casts the predictions to float32: a float32 0.3 is then not above the
    threshold 0.3 (in float64 it is, 0.30000001192...). Keras 3.15 gives 0.5 here (it was
    0.625); given thresholds compare in float32 too."""
    y, p = [0, 1, 0, 1], np.array([0.1, 0.3, 0.7, 0.6], dtype)
    m = AUC(num_thresholds=11)
    m.update_state(y, p)
    assert m.result() == pytest.approx(0.5, abs=1e-7)
    # at 0.3 (index 3 of -1e-7, 0.1, 0.2, 0.3, ...) only 0.7 and 0.6 are positive
    assert m.true_positives[3] == 1 and m.false_positives[3] == 1
    g = AUC(thresholds=[0.3, 0.6])
    g.update_state(y, p)
    assert list(g.true_positives) == [2, 1, 0, 0] and list(g.false_positives) == [2, 1, 1, 0]
    # given thresholds evenly spaced are placed as the default ones (Keras does too): a
    # float32 just above 0.9 is in 0.9's bucket, ceil(0.90000004 * 10) = 10, by both
    above = np.nextafter(np.float32(0.9), np.float32(1))
    for yy, pp in (([1, 0], np.array([above, 0.9], np.float32)), (y, p)):
        a, b = AUC(num_thresholds=11), AUC(thresholds=[i / 10 for i in range(1, 10)])
        a.update_state(yy, pp)
        b.update_state(yy, pp)
        assert b.result() == a.result()
        np.testing.assert_array_equal(b.true_positives, a.true_positives)


def test_the_other_losses_by_name_as_metrics():
    """compile(metrics=["hinge"]) and the other new losses' names, as Keras's metrics of
    those names: the weighted mean of the loss's per-sample values (they were "Unknown
    metric"; Keras 3.15 gives the same values to float32 rounding)."""
    rng = np.random.default_rng(0)
    t = np.eye(3)[rng.integers(0, 3, 8)]
    p = rng.uniform(0.05, 0.95, (8, 3))
    w = rng.uniform(0.2, 2.0, 8)
    for name, loss in (("huber", "huber"), ("log_cosh", "log_cosh"), ("msle", "msle"),
                       ("mape", "mape"), ("kld", "kl_divergence"), ("poisson", "poisson"),
                       ("hinge", "hinge"), ("squared_hinge", "squared_hinge"),
                       ("categorical_hinge", "categorical_hinge")):
        m = metrics.get(name)
        m.update_state(t, p, sample_weight=w)
        loss_obj = losses.get(loss)
        per = loss_obj.per_sample(*loss_obj._prepare(t, p))
        assert m.result() == pytest.approx(float(np.sum(per * w) / np.sum(w)), rel=1e-12)
        assert m.name == name
