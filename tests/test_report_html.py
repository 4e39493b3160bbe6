"""report.html: escaping, offline, extension sections, no matplotlib state leaks; the CLI and the study hook."""
import re

import matplotlib
import pytest

from regulab.cli import main
from regulab.report import build_report, write_report
from regulab.report import SECTIONS
from test_report_tables import STANDARD, arm, make_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("html"), STANDARD)


def _without_data_uris(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)


def test_arm_names_are_text_not_markup(study):
    html = build_report(study).html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_self_contained_and_offline(study):
    html = _without_data_uris(build_report(study).html)
    assert not re.search(r"https?:|//[a-z]|@import|url\(", html, re.I)
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", html)
    assert len(srcs) == 5 and all(s == "data:" for s in srcs)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for title in ("Test accuracy per arm", "Generalization gap per arm", "Learning curves: accuracy",
                  "Learning curves: loss", "Training noise per arm"):
        assert title in html


def test_setup_is_stated(study):
    html = build_report(study).html
    for text in ("digits", "mlp widths [8], relu, residual", "adam lr 0.01", "4 epochs, batch size 10",
                 "torch 2.x", "torch threads 1", "executor local", "Excluded runs"):
        assert text in html, text


def test_sections_extension_point(study):
    from matplotlib.figure import Figure

    def mc_section(results):
        fig = Figure(figsize=(3, 2))
        fig.add_subplot().plot([1, 2], [3, 4])
        return "MC dropout", f"<p id='mc'>{len(results.runs)} runs</p>", [("MC caption", fig)]

    def not_applicable(results):
        return None

    def broken(results):
        raise RuntimeError("boom")

    html = build_report(study, sections=[mc_section, not_applicable, broken]).html
    assert "<h2>MC dropout</h2>" in html and "<p id='mc'>12 runs</p>" in html and "MC caption" in html
    assert "not_applicable" not in html
    assert "This section could not be built: RuntimeError: boom" in html
    assert len(re.findall(r"<img ", html)) == 6
    # the module-level list is the default
    SECTIONS.append(mc_section)
    try:
        assert "<h2>MC dropout</h2>" in build_report(study).html
    finally:
        SECTIONS.remove(mc_section)


def test_no_global_matplotlib_state_leaks(study):
    import sys

    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    plt = sys.modules.get("matplotlib.pyplot")
    figs = plt.get_fignums() if plt else None
    write_report(study)
    assert dict(matplotlib.rcParams) == before and matplotlib.get_backend() == backend
    if plt is not None:
        assert plt.get_fignums() == figs


def test_rewrite_replaces_files(study):
    write_report(study)
    (study / "report.html").write_text("old")
    write_report(study)
    assert (study / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not list(study.glob(".*.tmp"))


def test_cli_report(study, capsys):
    assert main(["report", str(study)]) == 0
    out = capsys.readouterr().out
    assert "verdicts:" in out and f"report: {(study / 'report.html').resolve()}" in out
    assert "dropout p=0.3: +2.4 points test accuracy" in out


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regulab report: error: report: DIR must be a study folder, got ")
    assert main(["report", str(tmp_path)]) == 2
    assert "must contain study.sqlite" in capsys.readouterr().err


def test_one_seed_report_renders(tmp_path):
    d = make_study(tmp_path / "s", [arm("baseline", [0.6]), arm("dropout", [0.65], cfg={"p": 0.5})])
    html = write_report(d).read_text()
    assert "no CI (1 seed)" in html and "1 seed: no confidence interval or p-value" in html


@pytest.mark.slow
def test_regulab_study_writes_the_report(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "tiny"\nseeds = 2\nepochs = 2\n[dataset]\nname = "digits"\nn_train = 200\n'
                    '[model]\nwidths = [8]\n[arms.baseline]\n[arms.dropout]\np = 0.2\n')
    out = tmp_path / "out"
    assert main(["study", str(spec), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "verdicts:" in text and "dropout: " in text and f"report: {(out / 'report.html').resolve()}" in text
    for name in ("report.html", "results.csv", "results.json"):
        assert (out / name).is_file()
