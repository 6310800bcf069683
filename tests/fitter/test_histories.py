"""Which loss history the cbs law reads from MLflow."""

from types import SimpleNamespace

from fitter.mlflow_io import load_histories


class FakeClient:
    """The one MLflow call load_histories makes: run → metric → (step, value) pairs."""

    def __init__(self, metrics: dict[str, dict[str, list[tuple[int, float]]]]):
        self.metrics = metrics

    def get_metric_history(self, run_id: str, key: str):
        return [SimpleNamespace(step=s, value=v)
                for s, v in self.metrics[run_id].get(key, [])]


def _train(n: int) -> list[tuple[int, float]]:
    return [(4 * i, 3.0 - 0.01 * i) for i in range(n)]


def test_every_run_takes_the_train_loss_when_some_have_only_a_coarse_eval_history():
    # A sweep's long runs logged eval/loss 4 times, its short runs once: eval for the long runs
    # and train for the short ones put two metrics (train loss runs lower) into one law.
    client = FakeClient({
        "long": {"eval/loss": [(64, 2.5), (128, 2.2), (192, 2.1), (256, 2.0)],
                 "train/loss": _train(64)},
        "short": {"eval/loss": [(64, 2.4)], "train/loss": _train(16)},
    })
    histories = load_histories(client, ["long", "short"])
    assert set(histories) == {"long", "short"}
    assert len(histories["long"]) == 64 and len(histories["short"]) == 16


def test_a_dense_eval_history_of_every_run_is_preferred():
    evals = [(4 * i, 2.5 - 0.01 * i) for i in range(10)]
    client = FakeClient({r: {"eval/loss": evals, "train/loss": _train(40)} for r in "ab"})
    histories = load_histories(client, ["a", "b"])
    assert histories["a"][0, 1] == 2.5 and len(histories["b"]) == 10
