"""Natural datasets of [A] from local files (popdyn.tasks.corpus), the embedding model, and a corpus run end to
end — on small files the tests write in each dataset's usual layout."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import store
from popdyn.model import Model
from popdyn.population import HParams
from popdyn.tasks import TaskError, make_task
from popdyn.tasks.corpus import build_vocabulary, encode, load_corpus, tokenize
from popdyn.train import GroupTrainer, TrainSettings, accuracy, train_one
from tests.test_sweep import run_script

TOPICS = {  # AG News-like: each class has its own words; filler words are shared
    "1": ["election", "minister", "treaty", "embassy", "war"],
    "2": ["goal", "match", "coach", "league", "score"],
    "3": ["stocks", "profit", "market", "shares", "bank"],
    "4": ["software", "chip", "internet", "robot", "data"],
}
FILLER = ["the", "a", "of", "on", "said", "new", "today", "reports", "after", "in"]


def _documents(rng: np.random.Generator, n: int, classes: list[str]) -> list[tuple[str, str]]:
    docs = []
    for i in range(n):
        c = classes[i % len(classes)]
        words = list(rng.choice(TOPICS[c], rng.integers(2, 5))) + list(
            rng.choice(FILLER, rng.integers(4, 11))
        )
        rng.shuffle(words)
        docs.append((c, " ".join(words).capitalize() + "."))
    return docs


def write_zhang(folder: Path, dataset: str, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    """``train.csv`` / ``test.csv`` in the layout of Zhang et al. (2015) for ``dataset``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = {"ag_news": 4, "dbpedia": 4, "yelp": 4, "amazon": 4}[dataset]
    classes = list(TOPICS)[:n_classes]
    for split, n in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f, quoting=csv.QUOTE_ALL)
            for c, text in _documents(rng, n, classes):
                title = f"Title {rng.integers(1000)}"
                w.writerow([c, text] if dataset == "yelp" else [c, title, text])
    return folder


def write_goemotions(folder: Path, n: int = 400, seed: int = 0) -> Path:
    """``train.tsv`` / ``test.tsv`` / ``emotions.txt``: labels 0 (admiration) and 1 (approval) drawn
    independently, with admiration 3× as common; emotion 27 (neutral) otherwise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["admiration", "approval", *[f"emotion{i}" for i in range(2, 27)], "neutral"]
    (folder / "emotions.txt").write_text("\n".join(names) + "\n")
    for split in ("train", "test"):
        rows = []
        for i in range(n):
            labels = [j for j, p in ((0, 0.6), (1, 0.3)) if rng.random() < p] or [27]
            words = ["great", "love"] * (0 in labels) + ["agree", "yes"] * (1 in labels) + ["it", "is", "so"]
            rows.append(f"{' '.join(words)}\t{','.join(map(str, labels))}\tid{i}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def ag_news(tmp_path_factory) -> Path:
    folder = write_zhang(tmp_path_factory.mktemp("ag") / "ag_news_csv", "ag_news")
    (folder / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    return folder


def test_tokens_vocabulary_and_left_padded_ids():
    assert tokenize("Don't stop\\nthe Music, 2024!") == ["don't", "stop", "the", "music", "2024"]
    docs = [["b", "a", "c"], ["a", "b"], ["a"]]
    vocab = build_vocabulary(docs, 4)  # a: 3, b: 2, c: 1 -> two words fit after <pad>, <unk>
    assert vocab == ("<pad>", "<unk>", "a", "b")
    ids = encode([["b", "a", "c", "a"], ["z"], []], vocab, 3)
    np.testing.assert_array_equal(ids, [[3, 2, 1], [0, 0, 1], [0, 0, 0]])  # first 3 tokens, unknown -> 1


def test_ag_news_layout_reads_descriptions_and_class_names(ag_news):
    c = load_corpus("ag_news", str(ag_news), L=12)
    assert c.classes == ("World", "Sports", "Business", "Sci/Tech") and not c.multilabel
    assert c.train_ids.shape == (400, 12) and c.train_targets.shape == (400, 4)
    assert (c.train_targets.sum(1) == 1).all() and c.train_ids.dtype == np.int32
    assert "title" not in c.vocabulary  # [A] reads the description only
    # the topical words of class i occur only in documents of class i
    for i, words in enumerate(TOPICS.values()):
        ids = [c.vocabulary.index(w) for w in words if w in c.vocabulary]
        docs = np.isin(c.train_ids, ids).any(1)
        assert docs.any() and (c.train_targets[docs].argmax(1) == i).all()
    # a subset by name or number, relabelled in the order given
    sub = load_corpus("ag_news", str(ag_news), classes=("Business", "1", "Sports"), L=12)
    assert sub.classes == ("Business", "World", "Sports") and len(sub.train_ids) == 300


@pytest.mark.parametrize("dataset", ["dbpedia", "yelp", "amazon"])
def test_the_other_zhang_layouts(tmp_path, dataset):
    folder = write_zhang(tmp_path / dataset, dataset)
    c = load_corpus(dataset, str(folder), classes=("1", "3", "4") if dataset != "dbpedia" else (), L=16)
    assert c.classes == (("1", "3", "4") if dataset != "dbpedia" else ("1", "2", "3", "4"))
    assert "title" not in c.vocabulary and "election" in c.vocabulary
    # the vocabulary comes from the kept training documents: class 2's words are not in it without class 2
    assert ("goal" in c.vocabulary) == (dataset == "dbpedia")


def test_goemotions_is_multilabel_and_balances_label_combinations(tmp_path):
    folder = write_goemotions(tmp_path / "goemotions")
    c = load_corpus("goemotions", str(folder), L=8)
    assert c.classes == ("admiration", "approval") and c.multilabel
    assert (c.train_targets.sum(1) >= 1).all()  # comments with neither label are dropped
    combos = Counter(map(tuple, c.train_targets.astype(int)))
    assert len(set(combos.values())) > 1  # unbalanced as written
    b = load_corpus("goemotions", str(folder), L=8, balance=True)
    combos = Counter(map(tuple, b.train_targets.astype(int)))
    assert set(combos) == {(1, 0), (0, 1), (1, 1)} and len(set(combos.values())) == 1
    task = make_task("corpus", dataset="goemotions", path=str(folder), L=8, balance=True)
    assert task.loss == "sigmoid" and task.n_out == 2


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"dataset": "imdb"}, "unknown dataset 'imdb'"),
        ({"path": ""}, "set task.path"),
        ({"path": "/no/such/folder"}, "does not exist"),
        ({"classes": ("World", "Cooking")}, "unknown class 'Cooking'"),
        ({"classes": ("World",)}, "at least 2"),
        ({"vocab_size": 2}, "vocab_size"),
        ({"max_docs": -1}, "max_docs"),
    ],
)
def test_bad_corpus_settings_are_named(ag_news, params, named):
    with pytest.raises(TaskError, match=named):
        make_task("corpus", **{"dataset": "ag_news", "path": str(ag_news), **params})


def test_a_malformed_or_missing_file_is_named(tmp_path):
    folder = write_zhang(tmp_path / "bad", "ag_news")
    with open(folder / "test.csv", "a") as f:
        f.write('"x","only a title"\n')
    with pytest.raises(TaskError, match=r"test.csv line 101: expected a class number"):
        make_task("corpus", dataset="ag_news", path=str(folder))
    (folder / "train.csv").unlink()
    with pytest.raises(TaskError, match="train.csv not found"):
        make_task("corpus", dataset="ag_news", path=str(folder))


@pytest.mark.parametrize("arch", ["vanilla", "ugrnn", "gru", "lstm"])
@pytest.mark.parametrize("grad", ["hoisted", "autodiff"])
def test_left_padding_holds_h0_until_the_document_starts(arch, grad):
    """A document padded on the left ends in the same state, with the same gradient, as the document
    alone: the masked steps keep h = 0 (and their embedding gets no gradient)."""
    model = Model(arch, "tanh", 8, 4, 3, grad=grad, vocab=10)
    params = model.init(jax.random.key(0))
    doc = jnp.array([[3, 7, 2, 9]])
    padded = jnp.array([[0, 0, 0, 3, 7, 2, 9]])
    np.testing.assert_allclose(model.states(params, padded)[0, 3:], model.states(params, doc)[0], atol=1e-6)
    assert (model.states(params, padded)[0, :3] == 0).all()

    def loss(p, x):
        return jnp.sum(model(p, x)[:, -1] ** 2)

    g_doc, g_pad = jax.grad(loss)(params, doc), jax.grad(loss)(params, padded)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_doc, g_pad)
    assert (g_pad["embedding"]["embedding"][0] == 0).all()


def test_the_population_trains_on_a_corpus_as_each_network_alone(ag_news):
    """The corpus is an argument of the compiled program (replicated over devices): two members of a
    population equal each one trained alone."""
    task = make_task("corpus", dataset="ag_news", path=str(ag_news), L=12, embedding=8)
    model = Model.for_task("gru", "tanh", 16, task)
    assert model.vocab == task.vocab == len(task.words) and not model.readout_bias
    settings = TrainSettings(steps=20, batch=16, chunk=10, optimizer="adam", decay_steps=1)
    hp = HParams(*(jnp.full((2,), v, jnp.float32) for v in (0.01, 0.999, 0.0, 10.0, 1e-4)))
    keys = jax.random.split(jax.random.key(3), 2)
    trainer = GroupTrainer(model, task, settings, 2)
    hp_pad, k = trainer.pad(hp, keys)
    _, losses = trainer.run(hp_pad, trainer.init(hp_pad, k), np.full((trainer.size, settings.steps), np.nan))
    assert trainer.traces == 1
    for m in range(2):
        _, loss = train_one(model, task, settings, jax.tree.map(lambda a, m=m: a[m], hp), keys[m])
        np.testing.assert_allclose(losses[m], loss, rtol=2e-5)


@pytest.mark.slow
def test_a_gru_learns_a_corpus_and_the_grid_runs_end_to_end(ag_news, tmp_path):
    """``+grid=corpus`` on the written AG News-like files, shrunk: trained on the training split, validated
    on the test split, analysed (fixed points of the embedded input x = 0, word deflections, the corpus's
    LSA) and reloaded with the words named."""
    run_dir = tmp_path / "run"
    r = run_script(
        "+grid=corpus", f"task.path={ag_news}", "task.L=12", "task.embedding=16", "task.n_probe=64",
        "task.n_words=20", "grid.arch=[gru]", "grid.units=[32]", "grid.seeds=2", "train.steps=300",
        "train.chunk=100", "train.val_batch=100", "dynamics.n_initial=32", "dynamics.max_points=32",
        f"hydra.run.dir={run_dir}", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ds = store.load(run_dir)
    assert ds.attrs["task"] == "corpus" and (ds.val_accuracy > 0.9).all(), ds.val_accuracy.values
    assert ds.sizes["word"] == 20 and set(ds.word.values) >= {"the", "a"}
    # topical words move the state more than filler words do
    norms = np.linalg.norm(ds.word_deflection.values, axis=-1).mean(0)  # [word]
    topical = np.isin(ds.word.values, sum(TOPICS.values(), []))
    filler = np.isin(ds.word.values, FILLER)
    assert norms[topical].min() > norms[filler].max(), (norms[topical], norms[filler])
    # LSA: each class's most counted topical word is its own
    counts = ds.class_word_counts.sel(word=[w for w in ds.word.values if w in sum(TOPICS.values(), [])])
    owner = {w: i for i, ws in enumerate(TOPICS.values()) for w in ws}
    assert all(owner[w] == counts.sel(word=w).argmax("output").item() for w in counts.word.values)
    assert (run_dir / "figures" / "text_manifold.png").exists()
    task = make_task("corpus", dataset="ag_news", path=str(ag_news), L=12, embedding=16)
    params = store.load_params(run_dir)["gru-tanh-32"]
    x, y = task.validation(jax.random.key(0), 100)
    acc = accuracy(params.model, "softmax", jax.tree.map(lambda a: a[0], params.params), x, y)
    assert float(acc) > 0.9
