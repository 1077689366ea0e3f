"""Each recipe of the docs ("Extending the project") followed through a toy extension in a scratch copy.

The copy is a git repository of the project's tracked files, so `git status` there lists exactly the
files a recipe had to write; each test asserts that list, then shows in a fresh interpreter (the copy's
own package) that the extension works: it plans, trains or is judged, and reaches the paper.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_checkout

pytestmark = pytest.mark.slow


@pytest.fixture
def copy(tmp_path) -> Path:
    """A scratch repository holding the project's tracked files, committed."""
    repo = copy_checkout(tmp_path / "project")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def written(repo: Path) -> set[str]:
    """The files the recipe changed or added."""
    out = subprocess.run(["git", "status", "--porcelain", "-uall"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout
    return {line[3:] for line in out.splitlines()}


def edit(repo: Path, path: str, old: str, new: str) -> None:
    text = (repo / path).read_text()
    assert text.count(old) == 1, f"{path}: the recipe's anchor {old!r} is not there once"
    (repo / path).write_text(text.replace(old, new))


def append(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    with open(repo / path, "a") as fh:
        fh.write(textwrap.dedent(text))


def python(repo: Path, code: str, env: dict | None = None, timeout: int = 600) -> str:
    """Run `code` with the copy's package (not this checkout's); its stdout, or the failure shown whole."""
    environ = {**os.environ, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{repo}", **(env or {})}
    environ.pop("DROPOUT_LAB_CONFIG_DIR", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=repo, env=environ, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# A driver that judges the claims of a synthetic smoke grid with the copy's code (the runs' numbers are the
# known answers of tests/test_paper_numbers.py) and writes the paper's LaTeX.
JUDGE = """
import csv, json, sys
from pathlib import Path
import numpy as np, yaml
from dropout_lab.analysis import aggregate, claims, facts, theory
from dropout_lab.paper import report
from dropout_lab.planning import checks, grid
from dropout_lab.settings.atomic import write_json
from tests.test_paper_numbers import metrics
work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("judged")
config = yaml.safe_load(Path("config/config.yaml").read_text())
config.update(scale="smoke", experiments=["mnist_mlp"])
config["theory"]["gradient"]["samples"] = [10, 100]
config["theory"]["regression"]["epochs"] = 5
checks.check_claims(config)
runs = grid.expand_runs(config)
rng = np.random.default_rng(0)
for run in runs:
    write_json(work / run.folder / "metrics.json", metrics(run, rng))
loaded = aggregate.load(grid.run_table(runs), root=work)
table, _, mc = aggregate.collect(loaded, config["failure"])
anchors = yaml.safe_load(Path("paper/anchors.yaml").read_text())["anchors"]
built = {"commit": {"commit": None, "dirty": None}, "versions": {}, "known_commits": {}}
doc = facts.claims_document(claims.evaluate_claims(table, config, mc), theory.run_checks(config["theory"]), table,
                            aggregate.provenance(loaded), config, anchors, built)
write_json(work / "claims.json", doc)
report.write_report(json.loads((work / "claims.json").read_text()), config, work / "generated")
print(json.dumps({"claims": doc["claims"], "verdicts": list(csv.reader((work / "generated/verdicts.csv").open()))}))
"""


def judge(repo: Path) -> dict:
    import json

    return json.loads(python(repo, JUDGE).splitlines()[-1])


def gate_source() -> str:
    """The recipe's gate: test_gates' Laplace gate kept to the contract, under a name of its own."""
    import inspect

    from tests.test_gates import LaplaceGate

    source = inspect.getsource(LaplaceGate).replace("LaplaceGate", "Laplace3Gate")
    return "\n\n@register\n" + source.replace('name = "laplace2"', 'name = "laplace3"')


def test_a_gate_is_its_class_and_its_yaml_and_trains_beside_bernoulli(copy, tmp_path):
    append(copy, "src/dropout_lab/training/gates.py", gate_source())
    append(copy, "config/gate/laplace3.yaml", """\
        # Laplace noise with the Bernoulli gate's mean and variance.
        name: laplace3
        convention: inverted
        """)
    assert written(copy) == {"src/dropout_lab/training/gates.py", "config/gate/laplace3.yaml"}
    # The generic gate tests cover it with no test written: moments, identity rows, eval mode, and a pack
    # beside Bernoulli in which every model trains as alone (no NaN for its packmates).
    out = python(copy, """
        import sys, pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-k", "laplace3 or registry or vocabulary",
                              "tests/test_gates.py", "tests/test_vocabulary.py"]))
        """)
    assert " failed" not in out and int(out.split(" passed")[0].split()[-1]) >= 8
    # The workflow plans it as a gate of the parity grid: schema, names and wildcards accept it.
    grids = tmp_path / "laplace.yaml"
    grids.write_text("grids: {mnist_mlp: {gate_parity: {gates: [bernoulli, laplace3]}}}\n")
    out = python(copy, f"""
        import subprocess, sys
        done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                               "results/runs/mnist_mlp/laplace3/input0_hidden0.5/seed0/metrics.json",
                               "--configfile", "{grids}", "--config", "scale=smoke", "experiments=[mnist_mlp]"],
                              capture_output=True, text=True)
        print(done.stdout[-2000:], done.stderr[-2000:], done.returncode)
        """)
    assert out.strip().endswith(" 0") and "rule train:" in out, out


SWEEP_CLAIM = """\
        # Claim 4 (a toy): claim 1a's statistic over the input rate at hidden rate 0.3.
        Claim("deep_input", "4", lambda c, r: f"best input rate {c['deep_input']['claimed_rate']:g}", "deep_input",
              "deep_input_sweep", "optimum"),
    )
"""


def test_a_rate_sweep_with_its_claim_is_three_files_and_reaches_the_verdict_table(copy):
    edit(copy, "src/dropout_lab/settings/experiments.py", "\n)\n\nBY_NAME",
         '\n    Sweep("deep_input_sweep"),  # claim 4: the input rate at hidden rate 0.3\n)\n\nBY_NAME')
    edit(copy, "src/dropout_lab/settings/claims.py", "\n)\n\n\ndef parity_gates", "\n" + SWEEP_CLAIM + "\n\ndef parity_gates")
    edit(copy, "config/config.yaml", "    model: mlp\n", "    model: mlp\n    # Claim 4: the input rate at hidden rate "
         "0.3.\n    deep_input_sweep: {vary: input, rates: [0.3, 0.4, 0.6], fixed: {hidden: 0.3}}\n")
    edit(copy, "config/config.yaml", "  bootstrap_samples: 2000\n", "  bootstrap_samples: 2000\n  # Claim 4 (a toy).\n"
         "  deep_input: {experiment: mnist_mlp, claimed_rate: 0.3, sharp_window: 0.1, margin: 0.001,\n"
         "               published_band: [0.1, 0.2]}\n")
    assert written(copy) == {"src/dropout_lab/settings/experiments.py", "src/dropout_lab/settings/claims.py",
                             "config/config.yaml"}
    judged = judge(copy)
    assert judged["claims"]["deep_input"]["best"] == 0.3  # the known answer: each input rate above 0.2 loses
    rows = {row[0]: row[2] for row in judged["verdicts"][1:]}
    assert rows["4: best input rate 0.3"] == judged["claims"]["deep_input"]["verdict"]
    # Its settings are documented where every key is: a row each in config/README.md, checked by a test.
    assert_documented(copy, ["grids.<experiment>.deep_input_sweep", "claims.deep_input", "claims.deep_input.experiment",
                             "claims.deep_input.claimed_rate", "claims.deep_input.sharp_window",
                             "claims.deep_input.margin", "claims.deep_input.published_band"])


def assert_documented(copy: Path, keys: list[str]) -> None:
    """Without the README rows the config's docs test fails naming the first new key; with them it passes."""
    docs = ["-q", "-p", "no:cacheprovider", "tests/test_config_docs.py"]
    code = f"import sys, pytest; sys.exit(pytest.main({docs!r}))"
    environ = {**os.environ, "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy}"}
    failing = subprocess.run([sys.executable, "-c", code], cwd=copy, env=environ, capture_output=True, text=True)
    assert failing.returncode != 0 and keys[0] in failing.stdout
    append(copy, "config/README.md", "".join(f"| `{key}` | (a toy extension) |\n" for key in keys))
    python(copy, code)


PRESETS_CLAIM = '''

def _preset_runs(runs, mc, experiment):
    """The runs of the placement presets."""
    return runs[(runs["experiment"] == experiment) & (runs["placement"] != "")]


def hidden_beats_none_claim(rows, settings, alpha):
    """Does hidden dropout alone beat no dropout? Preset hidden against preset none, one-sided Welch."""
    ok = ok_runs(rows)
    hidden, none = (ok.loc[ok["placement"] == p, "test_acc"].to_numpy(float) for p in ("hidden", "none"))
    p = welch_greater(hidden, none)
    verdict = SUPPORTED if p < alpha else INCONCLUSIVE
    return {"claim": "Hidden dropout beats no dropout", "estimate": float(hidden.mean() - none.mean()),
            "p": p, "verdict": verdict, "reason": f"one-sided Welch p = {p:.3g}"}


SELECTIONS["presets"] = _preset_runs
STATISTICS["hidden_beats_none"] = lambda rows, spec, s, alpha, n, claim: hidden_beats_none_claim(
    rows, s[claim.settings], alpha)
'''


def test_a_claim_that_is_not_a_sweep_is_three_files(copy):
    append(copy, "src/dropout_lab/analysis/claims.py", PRESETS_CLAIM)
    edit(copy, "src/dropout_lab/settings/claims.py", "\n)\n\n\ndef parity_gates",
         '\n    Claim("hidden_beats_none", "5", lambda c, r: "hidden dropout beats none", "hidden_beats_none",\n'
         '          "presets", "hidden_beats_none", estimate=lambda r: f"{100 * r[\'estimate\']:+.2f} points"),\n)'
         "\n\n\ndef parity_gates")
    edit(copy, "config/config.yaml", "  bootstrap_samples: 2000\n",
         "  bootstrap_samples: 2000\n  # Claim 5 (a toy): the placement presets hidden against none.\n"
         "  hidden_beats_none: {experiment: mnist_mlp}\n")
    assert written(copy) == {"src/dropout_lab/analysis/claims.py", "src/dropout_lab/settings/claims.py",
                             "config/config.yaml"}
    judged = judge(copy)
    result = judged["claims"]["hidden_beats_none"]
    assert result["verdict"] in ("supported", "inconclusive") and np.isfinite(result["estimate"])
    rows = {row[0]: row for row in judged["verdicts"][1:]}
    assert rows["5: hidden dropout beats none"][2] == result["verdict"]
    assert_documented(copy, ["claims.hidden_beats_none", "claims.hidden_beats_none.experiment"])


def _idx(path: Path, array: np.ndarray) -> str:
    """Write an IDX file (MNIST's format); its SHA-256."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_a_dataset_is_three_files_and_trains(copy, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    labels = {split: rng.integers(0, 4, n) for split, n in (("train", 600), ("test", 200))}
    images = {split: (rng.random((len(y), 8, 8)) * 20 + 60 * y[:, None, None]).astype(np.uint8)
              for split, y in labels.items()}  # each class a brightness: learnable
    digests = {"tiny-train-images": _idx(mirror / "tiny-train-images", images["train"]),
               "tiny-train-labels": _idx(mirror / "tiny-train-labels", labels["train"]),
               "tiny-test-images": _idx(mirror / "tiny-test-images", images["test"]),
               "tiny-test-labels": _idx(mirror / "tiny-test-labels", labels["test"])}
    spec = "\n\nTINY = DatasetSpec(\n    name=\"tiny\",\n    files={" + ", ".join(
        f'"{k}": "{v}"' for k, v in digests.items()) + "},\n    official_mirrors=(),\n    gzipped=False,\n" \
        '    mirror_env="DROPOUT_LAB_TINY_MIRROR",\n    classes=4,\n    image=(1, 8, 8),\n    train_images=600,\n' \
        "    test_images=200,\n)\n"
    edit(copy, "src/dropout_lab/settings/datasets.py", "\n\nSPECS = {spec.name: spec for spec in (MNIST, CIFAR10)}",
         spec + "\nSPECS = {spec.name: spec for spec in (MNIST, CIFAR10, TINY)}")
    append(copy, "config/dataset/tiny.yaml", """\
        # A toy: 600 training and 200 test images of 8x8, four classes.
        name: tiny
        mirror: ${oc.env:DROPOUT_LAB_TINY_MIRROR,null}
        checksums: null
        """)
    edit(copy, "config/config.yaml", "grids:\n", "grids:\n  tiny_mlp:  # a toy dataset's grid\n    dataset: tiny\n"
         "    model: mlp\n    hidden_sweep: {vary: hidden, rates: [0.0, 0.5], fixed: {input: 0.0}}\n")
    assert written(copy) == {"src/dropout_lab/settings/datasets.py", "config/dataset/tiny.yaml", "config/config.yaml"}
    out = python(copy, f"""
        import json, subprocess, sys, yaml
        from pathlib import Path
        from dropout_lab.planning import checks, grid
        config = yaml.safe_load(Path("config/config.yaml").read_text())
        config.update(scale="smoke", experiments=["tiny_mlp"])
        checks.check_names(config)
        runs = grid.expand_runs(config)
        assert {{r.dataset for r in runs}} == {{"tiny"}} and {{r.cell for r in runs}} >= {{"input0_hidden0", "input0_hidden0.5"}}
        done = subprocess.run([sys.executable, "-m", "dropout_lab.train", *runs[0].overrides(
            {{**grid.run_settings(config), "device": "cpu"}}), "dataset.validation=0", "dataset.train_fraction=1",
            "dataset.test_fraction=1", "train.epochs=10", "out={tmp_path / 'run'}", "data_dir={tmp_path / 'data'}"],
            capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        print(json.loads(Path("{tmp_path / 'run' / 'metrics.json'}").read_text())["final"]["test_acc"])
        """, env={"DROPOUT_LAB_TINY_MIRROR": str(mirror)})
    assert float(out.split()[-1]) > 0.5  # four brightness classes, well above the chance of 0.25


ARCHITECTURE = '''

@register
class WideArchitecture(Architecture):
    """in -> one hidden layer of width (ReLU) -> classes: the MLP of depth 1, as a kind of its own."""

    name = "wide"
    fields = ("width",)
    groups = (LayerGroup("hidden", "hidden layer", "layers"),)
    width_field = "width"

    @staticmethod
    def layer_count(model, group):
        return 1

    def check_values(self, model):
        positive_int("model.width", model["width"])

    def layer_shapes(self, model, image, classes):
        channels, side = image
        return [], _dense(channels * side * side, [model["width"]], classes)

    def describe(self, model):
        return f"wide {model['width']}"
'''

NETWORK = '''

@register
class Wide(MLP):
    """The MLP's network with the wide architecture's shapes (one hidden layer)."""

    architecture = ARCHITECTURES["wide"]
'''


def test_an_architecture_is_its_description_its_network_its_yaml_and_its_sizes(copy, tmp_path, mnist_data_dir):
    append(copy, "src/dropout_lab/settings/architectures.py", ARCHITECTURE)
    append(copy, "src/dropout_lab/training/models.py", NETWORK)
    append(copy, "config/model/wide.yaml", """\
        # 784 -> width (ReLU) -> 10.
        name: wide
        width: ${scale.wide.width}
        max_norm: null
        """)
    for scale in ("paper", "quick", "smoke"):
        text = (copy / "config" / "scale" / f"{scale}.yaml").read_text()
        mlp = text[text.index("mlp:"):text.index("cnn:")]
        append(copy, f"config/scale/{scale}.yaml", mlp.replace("mlp:", "wide:").replace("  depth: ", "  # depth: "))
    # Planning reads the description without torch, training the network: two modules, then its YAML and
    # its sizes at each scale.
    assert written(copy) == {"src/dropout_lab/settings/architectures.py", "src/dropout_lab/training/models.py",
                             "config/model/wide.yaml", "config/scale/paper.yaml", "config/scale/quick.yaml",
                             "config/scale/smoke.yaml"}
    out = python(copy, f"""
        import json, subprocess, sys
        from pathlib import Path
        done = subprocess.run([sys.executable, "-m", "dropout_lab.train", "model=wide", "scale=smoke",
                               "dropout.hidden=0.5", "out={tmp_path / 'run'}", "data_dir={mnist_data_dir}"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        metrics = json.loads(Path("{tmp_path / 'run' / 'metrics.json'}").read_text())
        print(metrics["config"]["model"], metrics["final"]["test_acc"])
        """)
    assert "'name': 'wide'" in out and float(out.split()[-1]) > 0.5
