"""`python -m trainer.coord_check`: verdicts, figure and data, and its one-sentence errors."""

import json

import pytest

from trainer.coord_check import main, shown_layers, verdict


@pytest.mark.parametrize("slope, word", [(0.0, "flat"), (0.14, "flat"), (-0.14, "flat"),
                                         (0.5, "grows"), (2.2, "grows"), (-0.5, "shrinks")])
def test_verdict(slope, word):
    assert verdict(slope) == word


def test_deep_models_show_first_middle_and_last_block():
    layers = ["embed", *[f"block{i}" for i in range(12)], "logits"]
    assert shown_layers(layers) == ["embed", "block0", "block6", "block11", "logits"]


@pytest.mark.slow
def test_command_flat_under_mup_and_growing_under_sp(tmp_path, capsys):
    # at the default LR (3e-3): at 1e-2 muP's hidden layers seemed to shrink with width
    code = main(["model=tiny", "--widths", "64,128,256", "--steps", "3", "--out", str(tmp_path)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    verdicts = {tuple(line.split()[:2]): line.split()[-1] for line in lines
                if line.startswith(("mup ", "sp "))}
    assert verdicts[("mup", "block1")] == "flat" and verdicts[("mup", "embed")] == "flat"
    assert verdicts[("sp", "block1")] == "grows" and verdicts[("sp", "logits")] == "grows"
    doc = json.loads((tmp_path / "coord_check.json").read_text())
    assert doc["mup"]["widths"] == [64, 128, 256]
    assert doc["sp"]["slopes"]["block1"][3] > 1.0
    assert (tmp_path / "coord_check.png").stat().st_size > 10_000


@pytest.mark.parametrize("widths", ["64", "64,100", "a,b"])
def test_bad_widths_are_one_sentence(widths, tmp_path, capsys):
    assert main(["model=tiny", "--widths", widths, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --widths") and "\n" not in err


def test_one_width_given_twice_is_said_as_such(tmp_path, capsys):
    # (it read "needs 2 or more positive multiples of model.head_dim=16", which 64 is)
    assert main(["model=tiny", "--widths", "64,64", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --widths '64,64' gives one width twice: the check compares 2 or more different "
        "widths, e.g. --widths 64,128")


def test_a_panel_within_one_decade_still_labels_its_y_axis():
    """A flat muP layer spans less than a decade: no power of ten falls on its y axis, so its
    values are read off labelled minor ticks (minorticks_off() left such panels unlabelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.coord_check import log_axes

    fig, ax = plt.subplots()
    widths = [64, 128, 256, 512]
    ax.plot(widths, [0.31, 0.33, 0.32, 0.30])
    log_axes(ax, widths)
    fig.canvas.draw()
    low, high = ax.get_ylim()
    labels = [t.label1.get_text() for t in ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
              if low <= t.get_loc() <= high and t.label1.get_text()]
    assert len(labels) >= 2, labels
    assert [t.get_text() for t in ax.xaxis.get_ticklabels()] == ["64", "128", "256", "512"]
    assert not ax.xaxis.get_ticklabels(minor=True)
    plt.close(fig)


@pytest.mark.parametrize(("args", "said"), [
    (["model.base_width=0"], "error: model.base_width=0 must be a positive integer"),
    (["model.output_mult=0"], "error: model.output_mult=0.0 must be > 0 and finite"),
    (["model.input_mult=nan"], "error: model.input_mult=nan must be > 0 and finite"),
    (["--steps", "0"], "error: --steps 0: give a whole number of Adam steps >= 1"),
    (["--lr", "inf"], "error: --lr inf: give a finite learning rate > 0"),
])
def test_a_model_or_option_a_run_would_refuse_is_one_sentence_before_any_work(args, said,
                                                                              tmp_path, capsys):
    # A zero base width raised ZeroDivisionError; output_mult=0 wrote NaN slopes and a
    # verdict; a NaN multiplier failed in matplotlib.
    assert main(["--widths", "32,64", "--out", str(tmp_path / "cc"), *args]) == 2
    assert capsys.readouterr().err.strip() == said
    assert not (tmp_path / "cc").exists()


def test_an_out_that_cannot_be_written_is_said_before_the_models_train(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["--widths", "32,64", "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {tmp_path / 'file'}: ") and err.endswith(
        "; give a folder for coord_check.png and coord_check.json")
