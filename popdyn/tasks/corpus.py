"""The natural text-classification datasets of [A] (Aitken et al. 2020, App. B–C), read from local files:
the task ``corpus``.

Nothing is downloaded: point ``path`` at a folder holding a dataset in its usual layout.

- ``ag_news``, ``dbpedia``, ``yelp``, ``amazon`` — the CSVs of Zhang et al. (2015): ``train.csv`` and
  ``test.csv`` without a header, the class (1 … C) first, then the text fields: ``ag_news`` (class,
  title, description), ``dbpedia`` (class, title, abstract), ``yelp`` (stars, review), ``amazon``
  (stars, title, review).  [A] reads the description (AG News) and the abstract (DBPedia) only; for the
  reviews, the review text.  An optional ``classes.txt`` (one name per line) names the classes.
- ``goemotions`` — the TSVs of Demszky et al. (2020): ``train.tsv`` and ``test.tsv``, no header, columns
  text, comma-separated emotion ids, comment id; ``emotions.txt`` names the ids (28, "neutral" last).
  Multi-label: a comment may carry several of the kept emotions.

Classes: ``classes`` keeps a subset, by name or by the number in the file (``[1, 3, 5]``: [A]'s 3-class
reviews), relabelled in the order given; by default every class (goemotions: ``admiration, approval``,
[A] §3.3).  Documents without a kept class are dropped.  ``balance`` resamples the training split so that
every class (every label combination for goemotions: [A] §3.3) has as many documents as the rarest.

Tokens: lowercase words and numbers (``[a-z0-9]+``, with an apostrophe part: "don't"); [A] used
TF.Text's WordPiece tokenizer, which popdyn does not depend on.  The vocabulary is the ``vocab_size − 2``
most common tokens of the training split (ties alphabetically) after ``<pad>`` (id 0) and ``<unk>``
(id 1).  Each document is its first ``L`` tokens, left-padded with ``<pad>`` to length ``L`` so that the
last step reads the last token; the network holds ``h0 = 0`` over the padding (``Model`` masks it).

As a task: inputs are token ids ``[batch, L]`` (embedded by the model, ``embedding`` dims), targets
``[batch, C]``, cross-entropy of the final state (softmax; sigmoid per label for goemotions). A batch is
drawn from the training split with replacement; validation and probes are test-split documents (probes:
``n_probe`` of them from ``probe_seed``); fixed points at x = 0 of the embedded input.
"""

from __future__ import annotations

import csv
import functools
import numbers
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from popdyn.tasks import Task, TaskError, TaskSpec, positive_int, register

DATASETS = ("ag_news", "dbpedia", "yelp", "amazon", "goemotions")
PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")

# the text columns [A] reads, after the class column (Zhang et al.'s CSVs)
_TEXT_COLUMNS = {"ag_news": (2,), "dbpedia": (2,), "yelp": (1,), "amazon": (2,)}
_DEFAULT_CLASSES = {"goemotions": ("admiration", "approval")}
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class CorpusError(ValueError):
    """A dataset folder, file or setting that popdyn cannot read a corpus from."""


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised dataset: ids ``[docs, L]`` (int32, left-padded) and targets ``[docs, C]`` (float32,
    one-hot, or 0/1 per label for goemotions) of both splits, the vocabulary (id order) and class names."""

    train_ids: np.ndarray
    train_targets: np.ndarray
    test_ids: np.ndarray
    test_targets: np.ndarray
    vocabulary: tuple[str, ...]
    classes: tuple[str, ...]
    multilabel: bool


def tokenize(text: str) -> list[str]:
    """Lowercase word and number tokens of ``text`` (Zhang et al.'s ``\\n`` escapes are spaces)."""
    return _TOKEN.findall(text.replace("\\n", " ").lower())


def build_vocabulary(documents: list[list[str]], size: int) -> tuple[str, ...]:
    """``<pad>``, ``<unk>``, then the ``size − 2`` most common tokens (ties alphabetically)."""
    counts = Counter(t for doc in documents for t in doc)
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(size - len(SPECIALS), 0)]
    return SPECIALS + tuple(w for w, _ in common)


def encode(documents: list[list[str]], vocabulary: tuple[str, ...], length: int) -> np.ndarray:
    """Token ids ``[docs, length]``: each document's first ``length`` tokens, left-padded with ``<pad>``."""
    index = {w: i for i, w in enumerate(vocabulary)}
    out = np.full((len(documents), length), PAD, np.int32)
    for row, doc in zip(out, documents):
        ids = [index.get(t, UNK) for t in doc[:length]]
        if ids:
            row[-len(ids) :] = ids
    return out


def _read_rows(path: Path, delimiter: str) -> list[list[str]]:
    if not path.is_file():
        raise CorpusError(f"{path} not found: the dataset's files must be on disk (nothing is downloaded)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [row for row in csv.reader(f, delimiter=delimiter) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CorpusError(f"{path} is unreadable ({e})") from None


def _split(dataset: str, folder: Path, split: str) -> tuple[list[list[str]], list[list[str]]]:
    """(token lists, label lists as strings) of one split."""
    if dataset == "goemotions":
        rows = _read_rows(folder / f"{split}.tsv", "\t")
        if any(len(r) < 2 for r in rows):
            raise CorpusError(f"{folder / f'{split}.tsv'}: expected columns text, emotion ids, id")
        return [tokenize(r[0]) for r in rows], [r[1].split(",") for r in rows]
    rows = _read_rows(folder / f"{split}.csv", ",")
    cols = _TEXT_COLUMNS[dataset]
    need = max(cols) + 1
    bad = next((i for i, r in enumerate(rows) if len(r) < need or not r[0].strip().isdigit()), None)
    if bad is not None:
        raise CorpusError(
            f"{folder / f'{split}.csv'} line {bad + 1}: expected a class number and {need - 1} text "
            f"field(s) ({dataset} layout of Zhang et al. 2015), got {rows[bad][:need]!r}"
        )
    return [tokenize(" ".join(r[c] for c in cols)) for r in rows], [[r[0].strip()] for r in rows]


def _class_names(dataset: str, folder: Path, labels: list[list[str]]) -> dict[str, str]:
    """Label as written in the files → class name (``classes.txt`` / ``emotions.txt``, else the label)."""
    names_file = folder / ("emotions.txt" if dataset == "goemotions" else "classes.txt")
    if names_file.is_file():
        names = [n.strip() for n in names_file.read_text(encoding="utf-8").splitlines() if n.strip()]
        first = 0 if dataset == "goemotions" else 1  # emotion ids count from 0, Zhang's classes from 1
        return {str(i + first): n for i, n in enumerate(names)}
    found = sorted({label for row in labels for label in row}, key=lambda s: (len(s), s))
    return {label: label for label in found}


def _targets(labels: list[list[str]], kept: list[str], multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """``[docs, C]`` targets over the kept labels and which documents carry at least one of them."""
    column = {label: j for j, label in enumerate(kept)}
    t = np.zeros((len(labels), len(kept)), np.float32)
    for i, row in enumerate(labels):
        for label in row:
            if label in column:
                t[i, column[label]] = 1.0
    keep = t.sum(1) > 0
    if not multilabel:
        keep &= t.sum(1) == 1
    return t, keep


def _balanced(targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices resampling the documents so that every distinct target row is equally frequent."""
    _, group = np.unique(targets, axis=0, return_inverse=True)
    group = group.ravel()
    size = np.bincount(group).min()
    picks = [rng.choice(np.flatnonzero(group == g), size, replace=False) for g in np.unique(group)]
    return np.sort(np.concatenate(picks))


@functools.lru_cache(maxsize=4)
def load_corpus(
    dataset: str,
    path: str,
    classes: tuple = (),
    vocab_size: int = 32768,
    L: int = 100,
    balance: bool = False,
    max_docs: int = 0,
    seed: int = 0,
) -> Corpus:
    """Read, tokenise and encode a dataset (module docstring); ``max_docs`` > 0 keeps that many training
    documents drawn at random (after balancing); ``seed`` drives that draw and the balancing."""
    if dataset not in DATASETS:
        raise CorpusError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    folder = Path(path)
    if not folder.is_dir():
        raise CorpusError(f"dataset folder {str(folder)!r} does not exist")
    multilabel = dataset == "goemotions"
    train_docs, train_labels = _split(dataset, folder, "train")
    test_docs, test_labels = _split(dataset, folder, "test")
    names = _class_names(dataset, folder, train_labels + test_labels)
    by_name = {n: label for label, n in names.items()}
    wanted = [str(c) for c in (classes or _DEFAULT_CLASSES.get(dataset, tuple(names)))]
    kept = []
    for c in wanted:
        label = c if c in names else by_name.get(c)
        if label is None:
            raise CorpusError(f"{dataset}: unknown class {c!r}; allowed: {', '.join(names.values())}")
        kept.append(label)
    if len(set(kept)) < 2:
        raise CorpusError(f"{dataset}: keep at least 2 distinct classes, got {wanted}")
    rng = np.random.default_rng(seed)
    train_t, train_keep = _targets(train_labels, kept, multilabel)
    test_t, test_keep = _targets(test_labels, kept, multilabel)
    train_idx = np.flatnonzero(train_keep & np.array([len(d) > 0 for d in train_docs], bool))
    test_idx = np.flatnonzero(test_keep & np.array([len(d) > 0 for d in test_docs], bool))
    if balance:
        train_idx = train_idx[_balanced(train_t[train_idx], rng)]
    if max_docs and len(train_idx) > max_docs:
        train_idx = np.sort(rng.choice(train_idx, max_docs, replace=False))
    if not len(train_idx) or not len(test_idx):
        raise CorpusError(f"{dataset} in {folder}: no documents of classes {wanted} in train or test")
    train_docs = [train_docs[i] for i in train_idx]
    vocabulary = build_vocabulary(train_docs, vocab_size)
    return Corpus(
        train_ids=encode(train_docs, vocabulary, L),
        train_targets=train_t[train_idx],
        test_ids=encode([test_docs[i] for i in test_idx], vocabulary, L),
        test_targets=test_t[test_idx],
        vocabulary=vocabulary,
        classes=tuple(names[k] for k in kept),
        multilabel=multilabel,
    )


class CorpusTask(TaskSpec):
    names = ("corpus",)
    # L = tokens kept per document (not given in [A]), n_words = the most common words the per-word
    # analyses report
    defaults = {
        "corpus": {
            "dataset": "ag_news", "path": "", "classes": (), "vocab_size": 32768, "L": 100, "embedding": 128,
            "balance": False, "max_docs": 0, "n_words": 256, "n_probe": 512, "probe_seed": 0,
        },
    }  # fmt: skip

    def build(self, name, values):
        if values["dataset"] not in DATASETS:
            raise TaskError(f"corpus: unknown dataset {values['dataset']!r}; allowed: {', '.join(DATASETS)}")
        if not isinstance(values["path"], str) or not values["path"]:
            raise TaskError("corpus: set task.path to the folder holding the dataset's files")
        classes = values["classes"]
        if isinstance(classes, (str, int)) or not isinstance(classes, (list, tuple)):
            raise TaskError(f"corpus: classes must be a list of class names or numbers, got {classes!r}")
        values["classes"] = tuple(str(c) for c in classes)
        for key in ("vocab_size", "embedding", "n_words"):
            values[key] = positive_int("corpus", key, values[key])
        if values["vocab_size"] < 3:
            raise TaskError(
                f"corpus: vocab_size must be at least 3 (<pad>, <unk> and a word), got {values['vocab_size']}"
            )
        if (
            isinstance(values["max_docs"], bool)
            or not isinstance(values["max_docs"], numbers.Integral)
            or values["max_docs"] < 0
        ):
            raise TaskError(
                f"corpus: max_docs must be 0 (all) or a positive integer, got {values['max_docs']!r}"
            )
        if not isinstance(values["balance"], bool):
            raise TaskError(f"corpus: balance must be true or false, got {values['balance']!r}")
        task = Task("corpus", values["embedding"], 0, values["L"], tuple(sorted(values.items())))
        try:
            n_out = len(self.corpus(task).classes)
        except CorpusError as e:
            raise TaskError(f"corpus: {e}") from None
        return values["embedding"], n_out, values["L"]

    def default_loss(self, name: str) -> str:
        return "softmax"

    def loss(self, task: Task) -> str:
        return "sigmoid" if task.param("dataset") == "goemotions" else "softmax"

    def corpus(self, task: Task) -> Corpus:
        """The tokenised dataset (read once per process and kept)."""
        p = dict(task.params)
        keys = ("dataset", "path", "classes", "vocab_size", "L", "balance", "max_docs")
        return load_corpus(*(p[k] for k in keys), seed=p["probe_seed"])

    def words(self, task: Task) -> tuple[str, ...]:
        return self.corpus(task).vocabulary

    def vocab(self, task: Task) -> int:
        return len(self.corpus(task).vocabulary)

    def data(self, task: Task) -> dict[str, Array]:
        c = self.corpus(task)
        return {"ids": c.train_ids, "targets": c.train_targets}

    def sample(self, task: Task, key, batch, data=None):
        data = task.data if data is None else data
        idx = jax.random.randint(key, (batch,), 0, data["ids"].shape[0])
        return jnp.asarray(data["ids"])[idx], jnp.asarray(data["targets"])[idx]

    def validation(self, task: Task, key, batch):
        return _test_documents(task, np.random.default_rng(np.asarray(jax.random.key_data(key))), batch)

    def probes(self, task: Task):  # n_probe documents of the test split, drawn from probe_seed
        return _test_documents(task, np.random.default_rng(task.param("probe_seed")), task.param("n_probe"))

    def probe_condition(self, task: Task):
        return np.zeros(min(task.param("n_probe"), len(self.corpus(task).test_ids)), np.int32)


def _test_documents(task: Task, rng: np.random.Generator, batch: int) -> tuple[Array, Array]:
    """``batch`` documents of a corpus's test split drawn without replacement (all if fewer), in order;
    host NumPy, so that probes read inside a trace stay constants."""
    c = task.corpus
    n = len(c.test_ids)
    idx = np.sort(rng.choice(n, min(batch, n), replace=False))
    return jnp.asarray(c.test_ids[idx]), jnp.asarray(c.test_targets[idx])


register(CorpusTask())
