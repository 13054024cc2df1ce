"""CheckList-style behavioural tests of a sentiment model: templates, perturbed real reviews."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from storage.records import BehaviourResult
from trainer.errors import DataError, ModelError
from trainer.metrics import wilson_interval

KINDS = ("MFT", "INV", "DIR")  # minimum functionality, invariance, directional (Ribeiro et al.)
LABELS = ("negative", "positive")
DIRECTIONS = ("up", "down")
CASES_PER_TEST = 100  # a MiniLM on 2 CPU cores scores all six tests in seconds
EXAMPLES = 3  # failing cases kept per test, the most wrong first
DIR_TOLERANCE = 0.02  # a directional change may move p_positive this far the wrong way
TYPO_SHARE = 0.05  # of a review's words of 4+ letters, at least one
# Real reviews this short (about 120 tokens) fit the CPU default window of 128 tokens, so a
# model sees the appended sentence and every typo; they are also quick to score.
MAX_REVIEW_CHARS = 500
BATCH = 256  # texts per predict_proba call
EXAMPLE_CHARS = 2000  # a stored example's text is cut here

NEGATED_POSITIVE = "negation: not good → negative"
NEGATED_NEGATIVE = "negation: not bad → not negative"
INTENSIFIERS = "intensifiers: very good / very bad"
TYPOS = "typos and character noise"
NAMES = "names and titles swapped"
NEUTRAL = "neutral sentence appended"
BUILT_IN = (NEGATED_POSITIVE, NEGATED_NEGATIVE, INTENSIFIERS, TYPOS, NAMES, NEUTRAL)

POSITIVE_WORDS = ("good", "great", "funny", "enjoyable", "brilliant", "entertaining",
                  "wonderful", "memorable", "moving", "beautiful")
NEGATIVE_WORDS = ("bad", "boring", "awful", "terrible", "dull", "disappointing", "predictable",
                  "stupid", "painful", "forgettable")
NOUNS = ("movie", "film", "acting", "plot", "story", "ending", "cast", "script", "soundtrack",
         "direction")
NEGATION_TEMPLATES = ("The {noun} was not {adj}.", "This {noun} is not {adj} at all.",
                      "I did not find the {noun} {adj}.", "I can't say the {noun} was {adj}.",
                      "The {noun} wasn't {adj}.")
STATEMENT_TEMPLATES = ("The {noun} was {adj}.", "This {noun} is {adj}.",
                       "I found the {noun} {adj}.")
INTENSIFIER_WORDS = ("very", "really", "absolutely", "extremely", "incredibly")
# Common first names that are not also common English words ("Will", "Grace", "Frank").
FIRST_NAMES = ("John", "Michael", "David", "James", "Robert", "Paul", "Peter", "Richard",
               "Thomas", "George", "Steven", "Kevin", "Brian", "Daniel", "Anthony", "Mary",
               "Susan", "Sarah", "Karen", "Linda", "Jennifer", "Elizabeth", "Julia", "Laura",
               "Emma", "Anna", "Helen", "Nicole", "Rachel", "Jessica")
TITLES = ("Casablanca", "Vertigo", "Jaws", "Titanic", "Psycho", "Rocky", "Fargo", "Memento",
          "Chinatown", "Amadeus")
NAME_TEMPLATES = ("{name} was {adj} in this {noun}.", "The {noun} of {title} was {adj}.",
                  "I watched {title} with {name} and the {noun} was {adj}.")
NEUTRAL_SENTENCES = ("I watched it on a Tuesday.", "I saw it with a friend.",
                     "I watched it at home on DVD.", "It was on television last week.",
                     "I saw it at a cinema downtown.")
_NAME = re.compile(r"\b(" + "|".join(FIRST_NAMES) + r")\b")
_LONG_WORD = re.compile(r"[A-Za-z]{4,}")
_REQUIRED = {"MFT": ("test", "kind", "text", "expected"),
             "INV": ("test", "kind", "text", "variant"),
             "DIR": ("test", "kind", "text", "variant", "direction")}


@dataclass(frozen=True)
class Case:
    """One behavioural test case.

    MFT: `text` must be predicted `expected` ("positive", "negative", or "not negative").
    INV: `variant` (the changed `text`) must keep the predicted label of `text`.
    DIR: `variant` must not move p_positive against `direction` ("up" | "down") by more than
    the tolerance.
    """

    test: str
    kind: str
    text: str
    expected: str | None = None
    variant: str | None = None
    direction: str | None = None


def behaviour_results(predict_proba: Callable[[list[str]], np.ndarray], *, model: str,
                      run_id: int | None, texts: Sequence[str], seed: int,
                      extra_cases: Sequence[dict] = ()) -> list[BehaviourResult]:
    """Run the built-in behavioural tests, and the user's, on one model.

    Args:
        predict_proba: the model: positive-class probabilities of a list of texts.
        model: its readable name (`run_label` for a stored run).
        run_id: the stored run whose model this is, or None.
        texts: real reviews (test split) that the typo, name and neutral-sentence tests perturb.
        seed: seeds every choice, so the same inputs give the same cases and results.
        extra_cases: user cases (`read_behaviour_file`), grouped into tests by "test".

    Returns:
        One result per test that has cases: the built-in ones in `BUILT_IN` order (a test
        without cases, e.g. typos when `texts` is empty, is left out), then the user's.

    Raises:
        DataError: a user case is malformed.
        ModelError: predict_proba returned something other than one probability per text.
    """
    user = [_case(c, f"user case {i}") for i, c in enumerate(extra_cases, 1)]
    _check_one_kind_per_test(user)
    cases = built_in_cases(texts, seed) + user
    probs = _score(predict_proba, [t for c in cases for t in (c.text, c.variant) if t])
    results = []
    for test, members in _grouped(cases).items():
        results.append(_result(test, members, probs, model=model, run_id=run_id))
    return results


def built_in_cases(texts: Sequence[str], seed: int) -> list[Case]:
    """The cases of the six built-in tests, seeded (each test draws from its own stream; the
    typo and neutral-sentence tests change the same sample of real reviews).

    Args:
        texts: real reviews to perturb; the shortest ones are used (see MAX_REVIEW_CHARS).
        seed: a non-negative integer.

    Returns:
        At most CASES_PER_TEST cases per test, in `BUILT_IN` order.
    """
    def rng(test: str | None) -> np.random.Generator:
        return np.random.default_rng([abs(int(seed)), BUILT_IN.index(test) if test else 99])

    pool = _short_reviews(texts)
    originals = _sample(pool, rng(None))  # typos and the neutral sentence change the same ones
    return [*_negation(NEGATED_POSITIVE, POSITIVE_WORDS, "negative", rng(NEGATED_POSITIVE)),
            *_negation(NEGATED_NEGATIVE, NEGATIVE_WORDS, "not negative", rng(NEGATED_NEGATIVE)),
            *_intensifiers(rng(INTENSIFIERS)), *_typos(originals, rng(TYPOS)),
            *_names(pool, rng(NAMES)), *_neutral(originals, rng(NEUTRAL))]


def read_behaviour_file(path: str) -> list[dict]:
    """Read user behaviour cases, one JSON object per line (blank lines are skipped).

    {"test": name, "kind": "MFT", "text": …, "expected": "positive" | "negative"},
    {"test": name, "kind": "INV", "text": …, "variant": …} or
    {"test": name, "kind": "DIR", "text": …, "variant": …, "direction": "up" | "down"}.

    Args:
        path: the JSONL file.

    Returns:
        The cases as dicts holding exactly the keys of their kind.

    Raises:
        DataError: the file cannot be read, or a line (named) is not valid JSON, misses a key,
            has an unknown kind or value, reuses a built-in test's name, or gives a test a
            second kind.
    """
    lines = _read_text(path).splitlines()
    cases, kinds = [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not valid JSON ({e.msg}); write one JSON object "
                            "per line.") from None
        case = _case(obj, where)
        _check_kind(case, kinds, where)
        cases.append({k: v for k, v in asdict(case).items() if v is not None})
    return cases


# --- the built-in tests ---------------------------------------------------------------------


def _sample(items: Sequence[Any], rng: np.random.Generator, k: int = CASES_PER_TEST) -> list:
    """Up to k of `items`, drawn without replacement, in the order drawn."""
    chosen = rng.choice(len(items), size=min(k, len(items)), replace=False)
    return [items[int(i)] for i in chosen]


def _negation(test: str, words: Sequence[str], expected: str,
              rng: np.random.Generator) -> list[Case]:
    combos = list(product(NEGATION_TEMPLATES, words, NOUNS))
    return [Case(test, "MFT", template.format(noun=noun, adj=adj), expected=expected)
            for template, adj, noun in _sample(combos, rng)]


def _intensifiers(rng: np.random.Generator) -> list[Case]:
    words = [(w, "up") for w in POSITIVE_WORDS] + [(w, "down") for w in NEGATIVE_WORDS]
    combos = list(product(STATEMENT_TEMPLATES, words, NOUNS, INTENSIFIER_WORDS))
    return [Case(INTENSIFIERS, "DIR", t.format(noun=noun, adj=adj),
                 variant=t.format(noun=noun, adj=f"{very} {adj}"), direction=direction)
            for t, (adj, direction), noun, very in _sample(combos, rng)]


def _short_reviews(texts: Sequence[str]) -> list[str]:
    """The distinct non-empty reviews of at most MAX_REVIEW_CHARS, else the shortest ones."""
    distinct = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    short = [t for t in distinct if len(t) <= MAX_REVIEW_CHARS]
    if len(short) >= CASES_PER_TEST:
        return short
    return sorted(distinct, key=len)[:CASES_PER_TEST]


def _typos(originals: Sequence[str], rng: np.random.Generator) -> list[Case]:
    cases = []
    for text in originals:
        variant = add_typos(text, rng)
        if variant != text:
            cases.append(Case(TYPOS, "INV", text, variant=variant))
    return cases


def add_typos(text: str, rng: np.random.Generator, share: float = TYPO_SHARE) -> str:
    """Swap, drop or double one letter in each of a few words (of 4+ letters) of `text`.

    Args:
        text: a review.
        rng: chooses the words, the operation and the letter.
        share: of the eligible words, this share (at least one) gets a typo.

    Returns:
        The changed text (unchanged when it has no word of 4+ letters).
    """
    spans = [m.span() for m in _LONG_WORD.finditer(text)]
    if not spans:
        return text
    k = min(len(spans), max(1, round(share * len(spans))))
    chosen = sorted(int(i) for i in rng.choice(len(spans), size=k, replace=False))
    parts, last = [], 0
    for i in chosen:
        start, end = spans[i]
        parts += [text[last:start], _typo(text[start:end], rng)]
        last = end
    return "".join(parts) + text[last:]


def _typo(word: str, rng: np.random.Generator) -> str:
    i, operation = int(rng.integers(len(word) - 1)), int(rng.integers(3))
    if operation == 0 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if operation == 2:
        return word[:i + 1] + word[i:]
    return word[:i] + word[i + 1:]


def _names(pool: Sequence[str], rng: np.random.Generator) -> list[Case]:
    """Names in real reviews replaced by others; templates with names and titles fill up."""
    cases = []
    for text in _sample([t for t in pool if _NAME.search(t)], rng):
        found = list(dict.fromkeys(_NAME.findall(text)))
        others = rng.permutation([n for n in FIRST_NAMES if n not in found]).tolist()
        swap = {name: others[i % len(others)] for i, name in enumerate(found)}
        cases.append(Case(NAMES, "INV", text,
                          variant=_NAME.sub(lambda m: swap[m.group(1)], text)))
    words = POSITIVE_WORDS + NEGATIVE_WORDS
    while len(cases) < CASES_PER_TEST:
        template = NAME_TEMPLATES[int(rng.integers(len(NAME_TEMPLATES)))]
        names, titles = _sample(FIRST_NAMES, rng, 2), _sample(TITLES, rng, 2)
        fill = {"adj": words[int(rng.integers(len(words)))],
                "noun": NOUNS[int(rng.integers(len(NOUNS)))]}
        cases.append(Case(NAMES, "INV", template.format(name=names[0], title=titles[0], **fill),
                          variant=template.format(name=names[1], title=titles[1], **fill)))
    return cases


def _neutral(originals: Sequence[str], rng: np.random.Generator) -> list[Case]:
    return [Case(NEUTRAL, "INV", text, variant=f"{text.rstrip()} "
                 f"{NEUTRAL_SENTENCES[int(rng.integers(len(NEUTRAL_SENTENCES)))]}")
            for text in originals]


# --- scoring --------------------------------------------------------------------------------


def _score(predict_proba: Callable[[list[str]], np.ndarray],
           texts: Iterable[str]) -> dict[str, float]:
    """p_positive of each distinct text, in batches of BATCH."""
    unique = list(dict.fromkeys(texts))
    probs: dict[str, float] = {}
    for start in range(0, len(unique), BATCH):
        batch = unique[start:start + BATCH]
        out = np.asarray(predict_proba(batch), dtype=float).reshape(-1)
        if len(out) != len(batch) or not np.all((out >= 0) & (out <= 1)):
            raise ModelError(f"The model returned {len(out)} values for {len(batch)} texts, "
                             "expected one probability in [0, 1] per text; check that it is "
                             "a binary sentiment model.")
        probs.update(zip(batch, out.tolist()))
    return probs


def _grouped(cases: Sequence[Case]) -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.test, []).append(case)
    return groups


def _label(p: float) -> str:
    return LABELS[int(p >= 0.5)]


def _severity(case: Case, probs: Mapping[str, float]) -> tuple[bool, float]:
    """(failed, how far wrong) of one case; larger is more wrong."""
    p = probs[case.variant or case.text]
    if case.kind == "MFT":
        wrong = p - 0.5 if case.expected == "negative" else 0.5 - p
        return (p >= 0.5 if case.expected == "negative" else p < 0.5), wrong
    before = probs[case.text]
    if case.kind == "INV":
        return _label(p) != _label(before), abs(p - before)
    against = before - p if case.direction == "up" else p - before
    return against > DIR_TOLERANCE, against


def _expected(case: Case, probs: Mapping[str, float]) -> str:
    if case.kind == "MFT":
        return str(case.expected)
    before = probs[case.text]
    if case.kind == "INV":
        return f"{_label(before)}, as without the change"
    if case.direction == "up":
        return f"p_positive ≥ {before - DIR_TOLERANCE:.3f} (up from {before:.3f})"
    return f"p_positive ≤ {before + DIR_TOLERANCE:.3f} (down from {before:.3f})"


def _example(case: Case, probs: Mapping[str, float]) -> dict[str, Any]:
    shown = case.variant or case.text
    example = {"text": shown[:EXAMPLE_CHARS], "expected": _expected(case, probs),
               "prob_positive": probs[shown]}
    if case.variant:
        example |= {"original": case.text[:EXAMPLE_CHARS], "prob_original": probs[case.text]}
    return example


def _result(test: str, cases: Sequence[Case], probs: Mapping[str, float], *, model: str,
            run_id: int | None) -> BehaviourResult:
    judged = [(case, *_severity(case, probs)) for case in cases]
    failing = sorted((j for j in judged if j[1]), key=lambda j: -j[2])
    low, high = wilson_interval(len(failing), len(cases))
    return BehaviourResult(run_id=run_id, model=model, test=test, kind=cases[0].kind,
                           n=len(cases), failures=len(failing), ci_low=low, ci_high=high,
                           examples=tuple(_example(c, probs) for c, _, _ in failing[:EXAMPLES]))


# --- user cases -----------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"There is no behaviour file at {path}; pass --behaviour a JSONL file "
                        "with one test case per line.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 JSON lines.") from None
    except OSError as e:
        raise DataError(f"Could not read {path} ({e.strerror}); check the path and that the "
                        "file is readable.") from None


def _case(obj: Any, where: str) -> Case:
    """A user case from its JSON object, or a DataError naming `where`."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with test, kind and text, found "
                        f"{type(obj).__name__}; write one object per line.")
    kind = obj.get("kind")
    if "kind" in obj and kind not in KINDS:
        raise DataError(f"{where}: unknown kind {kind!r}; use MFT, INV or DIR.")
    needed = _REQUIRED.get(kind, ("test", "kind", "text"))
    missing = [key for key in needed if key not in obj]
    if missing:
        raise DataError(f"{where}: a {kind or 'test'} case needs the keys {list(needed)}, "
                        f"missing {missing}; add them.")
    for key in needed:
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise DataError(f"{where}: {key} must be a non-empty string, found "
                            f"{obj[key]!r}; fix that value.")
    _check_value(obj, "expected", LABELS, where)
    _check_value(obj, "direction", DIRECTIONS, where)
    if obj["test"] in BUILT_IN:
        raise DataError(f"{where}: {obj['test']!r} is the name of a built-in test; give your "
                        "test another name.")
    return Case(**{key: obj[key] for key in needed})


def _check_value(obj: Mapping[str, Any], key: str, allowed: Sequence[str], where: str) -> None:
    if key in _REQUIRED[obj["kind"]] and obj[key] not in allowed:
        raise DataError(f"{where}: {key} must be {' or '.join(map(repr, allowed))}, found "
                        f"{obj[key]!r}; use one of those.")


def _check_kind(case: Case, kinds: dict[str, str], where: str) -> None:
    first = kinds.setdefault(case.test, case.kind)
    if first != case.kind:
        raise DataError(f"{where}: test {case.test!r} already has {first} cases, this one is "
                        f"{case.kind}; give each kind its own test name.")


def _check_one_kind_per_test(cases: Sequence[Case]) -> None:
    kinds: dict[str, str] = {}
    for i, case in enumerate(cases, 1):
        _check_kind(case, kinds, f"user case {i}")
