"""The built-in task suite: programmatic tasks with exact-match answers and known ingredients.

This is the app's embedded default data (no files, no network). It follows heads_method.md §4:
basic skills, control skills that no composite uses, and composites whose ingredients are
declared in code, so a regression of head patterns or a data selector can be checked against a
known ground truth.

Suite (``TASKS``, the one registry)::

    basic      add            multi-digit addition                 "Add 37 and 85. ..."     -> "122"
    basic      reverse        reverse a spaced letter sequence     "... k q t a m. ..."     -> "m a t q k"
    basic      sort           sort spaced digits ascending         "... 7 2 9 4. ..."       -> "2 4 7 9"
    basic      lookup         value of a key in an in-context table "Table: b=34, ..."      -> "34"
    control    upper          uppercase a word or two               'Write "red cup" ...'   -> "RED CUP"
    control    count_letter   count a letter in a word              '... "a" ... "banana"?' -> "3"
    composite  add_reverse    add, then reverse the sum's digits    (add, reverse)          -> "221"
    composite  lookup_add     look up two values and add them       (lookup, add)
    composite  sort_desc      sort descending = reverse(sort)       (sort, reverse)

Sequences are space separated because the default 135M model's BPE merges letter runs into
arbitrary pieces; spaced letters and digits are one token each, so the skill is the reversal or
the sort, not spelling out tokens.

Splits. A prompt belongs to exactly one split, fixed by a hash of (task, prompt) that does not
depend on the seed (train 80 %, dev 10 %, test 10 %). Each split draws from its own RNG stream
(derived from seed, task and split with sha256) and keeps only prompts that hash to it, so splits
are disjoint for every pair of seeds, and the pool (train) never contains a target (dev) prompt.

Relevance rule (:meth:`Pool.relevance`). For a composite target C, a pool record r gets
  2 if r.task == C                     (the composite's own training data),
  1 if r.task is one of C's ingredients (the basic skills it is built from),
  0 otherwise: other basics, controls, other composites (even ones sharing an ingredient) and
    distractors.
It is computed from ``record.task`` and the registry alone.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .records import Record, simple

SOURCE = "builtin"
KINDS = ("basic", "control", "composite")
SPLITS: dict[str, float] = {"train": 0.8, "dev": 0.1, "test": 0.1}
DISTRACTOR_TASK = "distractor"

Sampler = Callable[[random.Random], "tuple[str, str]"]


@dataclass(frozen=True)
class Task:
    """One task: a deterministic sampler plus what is needed to score and explain it."""

    name: str
    kind: str                                  # "basic" | "control" | "composite" | "distractor"
    description: str                           # one sentence for the app
    generate: Sampler = field(repr=False)      # rng -> (prompt, answer); uses only rng
    ingredients: tuple[str, ...] = ()          # basic task names a composite is made of; () otherwise
    answer_format: str = "text"                # "number" | "sequence" | "text": how extract_answer normalises
    case_sensitive: bool = False               # True only where case is the skill (upper)

    def sample(self, rng: random.Random) -> tuple[str, str]:
        """One (prompt, answer) pair drawn with ``rng`` only."""
        return self.generate(rng)


TASKS: dict[str, Task] = {}
DISTRACTORS: dict[str, Task] = {}   # generic instructions unrelated to every task; pool filler


def _register(task: Task, registry: dict[str, Task] = TASKS) -> Task:
    if task.name in registry:
        raise ValueError(f"task {task.name!r} is registered twice")
    registry[task.name] = task
    return task


# ------------------------------------------------------------------ embedded vocabulary

_LETTERS = "abcdefghijklmnopqrstuvwxyz"

_NOUNS = (
    "apple banana table window garden letter coffee button pepper rabbit mirror pillow kitten "
    "balloon bottle carrot dinner doctor engine forest guitar hammer island jacket kettle ladder "
    "market needle orange pencil puzzle rocket saddle teacher tunnel wallet yellow zipper bridge "
    "candle basket dragon flower ginger honey marble noodle parrot pocket river salad summer "
    "tomato turtle valley wizard cherry cotton paper spoon stone cloud"
).split()
_ADJECTIVES = (
    "red green blue happy quiet little tall small bright dark warm cold soft loud sweet fresh "
    "old young brave lazy funny sunny rainy gentle silver golden heavy empty clever calm"
).split()

_CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Greece", "Athens"), ("Turkey", "Ankara"), ("Ireland", "Dublin"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("the Czech Republic", "Prague"),
    ("Belgium", "Brussels"), ("Australia", "Canberra"), ("New Zealand", "Wellington"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Morocco", "Rabat"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Ethiopia", "Addis Ababa"), ("Cuba", "Havana"), ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"), ("the Philippines", "Manila"), ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Iceland", "Reykjavik"),
    ("the United Kingdom", "London"),
)
_OPPOSITES = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("open", "closed"), ("early", "late"), ("full", "empty"), ("hard", "soft"), ("high", "low"),
    ("long", "short"), ("rich", "poor"), ("young", "old"), ("wet", "dry"), ("strong", "weak"),
    ("thick", "thin"), ("loud", "quiet"), ("heavy", "light"), ("push", "pull"), ("win", "lose"),
    ("buy", "sell"), ("love", "hate"), ("day", "night"), ("north", "south"), ("east", "west"),
    ("inside", "outside"), ("above", "below"), ("before", "after"), ("first", "last"),
    ("true", "false"), ("clean", "dirty"), ("cheap", "expensive"), ("friend", "enemy"),
    ("question", "answer"), ("wide", "narrow"), ("safe", "dangerous"), ("sweet", "sour"),
    ("smooth", "rough"), ("deep", "shallow"), ("remember", "forget"), ("accept", "reject"),
    ("increase", "decrease"), ("asleep", "awake"), ("always", "never"), ("entrance", "exit"),
    ("minimum", "maximum"), ("ancient", "modern"), ("arrive", "depart"), ("victory", "defeat"),
)
_PLURALS = (
    ("mouse", "mice"), ("child", "children"), ("man", "men"), ("woman", "women"), ("tooth", "teeth"),
    ("foot", "feet"), ("goose", "geese"), ("person", "people"), ("ox", "oxen"), ("leaf", "leaves"),
    ("knife", "knives"), ("wife", "wives"), ("wolf", "wolves"), ("half", "halves"), ("shelf", "shelves"),
    ("life", "lives"), ("loaf", "loaves"), ("box", "boxes"), ("fox", "foxes"), ("bus", "buses"),
    ("church", "churches"), ("dish", "dishes"), ("city", "cities"), ("baby", "babies"),
    ("party", "parties"), ("story", "stories"), ("lady", "ladies"), ("hero", "heroes"),
    ("potato", "potatoes"), ("tomato", "tomatoes"), ("sheep", "sheep"), ("deer", "deer"),
    ("moose", "moose"), ("series", "series"), ("crisis", "crises"), ("thesis", "theses"),
    ("phenomenon", "phenomena"), ("criterion", "criteria"), ("cat", "cats"), ("dog", "dogs"),
    ("book", "books"), ("tree", "trees"), ("key", "keys"), ("toy", "toys"), ("glass", "glasses"),
    ("watch", "watches"), ("class", "classes"), ("brush", "brushes"), ("family", "families"),
)
_FRENCH = (
    ("cat", "chat"), ("dog", "chien"), ("house", "maison"), ("water", "eau"), ("bread", "pain"),
    ("apple", "pomme"), ("book", "livre"), ("car", "voiture"), ("sun", "soleil"), ("moon", "lune"),
    ("tree", "arbre"), ("flower", "fleur"), ("red", "rouge"), ("green", "vert"), ("blue", "bleu"),
    ("black", "noir"), ("white", "blanc"), ("night", "nuit"), ("hand", "main"), ("door", "porte"),
    ("milk", "lait"), ("cheese", "fromage"), ("sea", "mer"), ("mountain", "montagne"),
    ("city", "ville"), ("chair", "chaise"), ("hello", "bonjour"), ("thank you", "merci"),
    ("yes", "oui"), ("no", "non"), ("bird", "oiseau"), ("horse", "cheval"), ("fish", "poisson"),
    ("rain", "pluie"), ("snow", "neige"), ("man", "homme"), ("woman", "femme"), ("child", "enfant"),
    ("boy", "garçon"), ("girl", "fille"), ("mother", "mère"), ("father", "père"), ("window", "fenêtre"),
    ("head", "tête"), ("school", "école"), ("friend", "ami"), ("key", "clé"), ("wine", "vin"),
)
_SUBJECTS = (
    "The farmer", "My sister", "The old man", "Our teacher", "The little girl", "A tired doctor",
    "The young pilot", "His brother", "The quiet student", "Her uncle",
)
_VERB_PHRASES = (
    ("walks to the market", "walked to the market"), ("opens the window", "opened the window"),
    ("writes a letter", "wrote a letter"), ("sings a song", "sang a song"),
    ("buys some bread", "bought some bread"), ("reads the newspaper", "read the newspaper"),
    ("drinks a cup of tea", "drank a cup of tea"), ("feeds the cat", "fed the cat"),
    ("paints the fence", "painted the fence"), ("catches the bus", "caught the bus"),
    ("cleans the kitchen", "cleaned the kitchen"), ("finds a coin", "found a coin"),
    ("closes the door", "closed the door"), ("waters the plants", "watered the plants"),
    ("builds a birdhouse", "built a birdhouse"), ("drives to work", "drove to work"),
    ("teaches a class", "taught a class"), ("eats an orange", "ate an orange"),
    ("plays the piano", "played the piano"), ("sends an email", "sent an email"),
)


# ------------------------------------------------------------------ samplers (rng only)

def _operand(rng: random.Random) -> int:
    """A 2- or 3-digit number, each length equally likely (keeps sums learnable for a 135M model)."""
    return rng.randint(10, 99) if rng.random() < 0.5 else rng.randint(100, 999)


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = _operand(rng), _operand(rng)
    return f"Add {a} and {b}. Answer with the number only.", str(a + b)


def _letters(rng: random.Random) -> list[str]:
    return [rng.choice(_LETTERS) for _ in range(rng.randint(4, 6))]


def _reverse(rng: random.Random) -> tuple[str, str]:
    xs = _letters(rng)
    return (f"Reverse the order of these letters: {' '.join(xs)}. Answer with the letters separated by spaces.",
            " ".join(reversed(xs)))


def _digits(rng: random.Random) -> list[int]:
    return [rng.randint(0, 9) for _ in range(rng.randint(4, 6))]


def _sort(rng: random.Random) -> tuple[str, str]:
    xs = _digits(rng)
    return (f"Sort these digits in ascending order: {' '.join(map(str, xs))}. "
            "Answer with the digits separated by spaces.", " ".join(map(str, sorted(xs))))


def _table(rng: random.Random) -> tuple[str, dict[str, int]]:
    keys = rng.sample(_LETTERS, 4)
    table = {k: rng.randint(10, 99) for k in keys}
    return "Table: " + ", ".join(f"{k}={v}" for k, v in table.items()) + ".", table


def _lookup(rng: random.Random) -> tuple[str, str]:
    text, table = _table(rng)
    k = rng.choice(list(table))
    return f"{text} What is the value of {k}? Answer with the number only.", str(table[k])


def _phrase(rng: random.Random) -> str:
    return rng.choice(_NOUNS) if rng.random() < 0.5 else f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"


def _upper(rng: random.Random) -> tuple[str, str]:
    p = _phrase(rng)
    return f'Write "{p}" in capital letters. Answer with the text only.', p.upper()


def _count_letter(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(_NOUNS + _ADJECTIVES)
    absent = [c for c in _LETTERS if c not in word]
    # Mostly a letter of the word (counts 1-3), sometimes one it lacks (count 0).
    letter = rng.choice(word) if rng.random() < 0.85 else rng.choice(absent)
    return (f'How many times does the letter "{letter}" appear in "{word}"? Answer with the number only.',
            str(word.count(letter)))


def _add_reverse(rng: random.Random) -> tuple[str, str]:
    while True:
        a, b = _operand(rng), _operand(rng)
        if (a + b) % 10:   # a sum ending in 0 would reverse to a leading zero: ambiguous, redraw
            break
    return (f"Add {a} and {b}, then reverse the digits of the sum. Answer with the digits only.",
            str(a + b)[::-1])


def _lookup_add(rng: random.Random) -> tuple[str, str]:
    text, table = _table(rng)
    k1, k2 = rng.sample(list(table), 2)
    return f"{text} Add the values of {k1} and {k2}. Answer with the number only.", str(table[k1] + table[k2])


def _sort_desc(rng: random.Random) -> tuple[str, str]:
    xs = _digits(rng)
    return (f"Sort these digits in descending order: {' '.join(map(str, xs))}. "
            "Answer with the digits separated by spaces.", " ".join(map(str, sorted(xs, reverse=True))))


def _words(rng: random.Random) -> list[str]:
    return rng.sample(_NOUNS, rng.randint(3, 5))


def _first(rng: random.Random) -> tuple[str, str]:
    ws = _words(rng)
    return f"Write the first word of this list: {' '.join(ws)}. Answer with the word only.", ws[0]


def _last(rng: random.Random) -> tuple[str, str]:
    ws = _words(rng)
    return f"Write the last word of this list: {' '.join(ws)}. Answer with the word only.", ws[-1]


def _first_last(rng: random.Random) -> tuple[str, str]:
    ws = _words(rng)
    return f"Write the first and last word of this list: {' '.join(ws)}. Answer with the two words.", f"{ws[0]} {ws[-1]}"


def _templated(pairs: tuple[tuple[str, str], ...], templates: tuple[str, ...]) -> Sampler:
    def sample(rng: random.Random) -> tuple[str, str]:
        x, y = rng.choice(pairs)
        return rng.choice(templates).format(x=x), y
    return sample


def _past_tense(rng: random.Random) -> tuple[str, str]:
    subj = rng.choice(_SUBJECTS)
    now, past = rng.choice(_VERB_PHRASES)
    tmpl = rng.choice(("Rewrite this sentence in the past tense: {s}.",
                       "Change the sentence to the past tense: {s}."))
    return tmpl.format(s=f"{subj} {now}"), f"{subj} {past}."


# ------------------------------------------------------------------ the registry

_register(Task("add", "basic", "Add two 2- or 3-digit numbers.", _add, answer_format="number"))
_register(Task("reverse", "basic", "Reverse a sequence of 4-6 space-separated letters.", _reverse,
               answer_format="sequence"))
_register(Task("sort", "basic", "Sort 4-6 space-separated digits in ascending order.", _sort,
               answer_format="sequence"))
_register(Task("lookup", "basic", "Read the value of one key from a 4-entry table given in the prompt.",
               _lookup, answer_format="number"))
_register(Task("upper", "control", "Write a word or two in capital letters (a control: no composite uses it).",
               _upper, answer_format="text", case_sensitive=True))
_register(Task("count_letter", "control", "Count how often a letter occurs in a word (a control: no composite uses it).",
               _count_letter, answer_format="number"))
_register(Task("add_reverse", "composite", "Add two numbers, then write the digits of the sum in reverse order.",
               _add_reverse, ingredients=("add", "reverse"), answer_format="number"))
_register(Task("lookup_add", "composite", "Look up two values in an in-context table and add them.",
               _lookup_add, ingredients=("lookup", "add"), answer_format="number"))
_register(Task("sort_desc", "composite", "Sort digits in descending order (sort, then reverse).",
               _sort_desc, ingredients=("sort", "reverse"), answer_format="sequence"))

# Copy skills (added after the first nine): the default model answers them in a sentence ("The first word of
# the list is ..."), so exact match starts near 0 and one short LoRA run on a few dozen examples moves it well
# above (docs/benchmarks.md "Tasks where accuracy moves"); the arithmetic composites above stay out of its reach.
_register(Task("first", "basic", "Write the first word of a list of 3-5 nouns.", _first, answer_format="text"))
_register(Task("last", "basic", "Write the last word of a list of 3-5 nouns.", _last, answer_format="text"))
_register(Task("first_last", "composite", "Write the first and the last word of a list (first, then last).",
               _first_last, ingredients=("first", "last"), answer_format="sequence"))

# The suite as first published. The defaults that draw "every task" (make_pool, make_targets, the default head
# study) draw these nine, so every figure in docs/ made from a default keeps its data; later tasks are named.
SUITE_V1: tuple[str, ...] = ("add", "reverse", "sort", "lookup", "upper", "count_letter", "add_reverse",
                             "lookup_add", "sort_desc")

_register(Task("capital", "distractor", "Name the capital city of a country.", _templated(_CAPITALS, (
    "What is the capital of {x}? Answer with the city name only.",
    "Name the capital city of {x}.",
    "Which city is the capital of {x}?"))), DISTRACTORS)
_register(Task("opposite", "distractor", "Give the opposite of a word.", _templated(_OPPOSITES, (
    'What is the opposite of "{x}"? Answer with one word.',
    "Give the antonym of {x}.",
    "Write a word that means the opposite of {x}."))), DISTRACTORS)
_register(Task("plural", "distractor", "Give the plural of a noun.", _templated(_PLURALS, (
    'What is the plural of "{x}"? Answer with one word.',
    "Write the plural form of {x}.",
    "Give the plural of the noun {x}."))), DISTRACTORS)
_register(Task("translate_fr", "distractor", "Translate an English word into French.", _templated(_FRENCH, (
    'Translate "{x}" into French. Answer with the French word only.',
    "What is the French word for {x}?",
    "How do you say {x} in French?"))), DISTRACTORS)
_register(Task("past_tense", "distractor", "Rewrite a short sentence in the past tense.", _past_tense),
          DISTRACTORS)


def _check_registry() -> None:
    """Composites name only basic tasks; controls stay out of every composite (the ground truth)."""
    for t in TASKS.values():
        if t.kind not in KINDS:
            raise ValueError(f"task {t.name!r} has kind {t.kind!r}; expected one of {KINDS}")
        if t.kind == "composite":
            bad = [i for i in t.ingredients if i not in TASKS or TASKS[i].kind != "basic"]
            if bad or len(t.ingredients) < 2:
                raise ValueError(f"composite {t.name!r} has ingredients {t.ingredients}; each must be a basic task")
        elif t.ingredients:
            raise ValueError(f"{t.kind} task {t.name!r} declares ingredients; only composites may")


_check_registry()


def task_names(kind: str | None = None) -> tuple[str, ...]:
    """Registered task names (of one kind if given), in registry order."""
    return tuple(n for n, t in TASKS.items() if kind is None or t.kind == kind)


def get_task(task: str | Task) -> Task:
    """The registered task (a distractor name works too)."""
    if isinstance(task, Task):
        return task
    if task in TASKS:
        return TASKS[task]
    if task in DISTRACTORS:
        return DISTRACTORS[task]
    raise KeyError(f"unknown built-in task {task!r}; choose one of {', '.join(TASKS)}")


# ------------------------------------------------------------------ deterministic streams and splits

def _derive_seed(*parts: Any) -> int:
    """A 64-bit seed from the parts, stable across processes and Python versions (unlike hash())."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")


def split_of(task: str, prompt: str) -> str:
    """The split a prompt belongs to, from a seed-independent hash of (task, prompt)."""
    u = _derive_seed("split", task, prompt) / 2.0 ** 64
    acc = 0.0
    for name, frac in SPLITS.items():
        acc += frac
        if u < acc:
            return name
    return name


def _draw(task: Task, n: int, seed: int, split: str, at_most: bool = False) -> list[tuple[str, str]]:
    """n distinct (prompt, answer) pairs of ``split`` from that split's own RNG stream.

    A task whose split holds fewer than n distinct prompts (a small vocabulary, such as ``upper``) raises,
    unless ``at_most``: then the pairs found before the draw budget ran out (the same ones for the same seed,
    a prefix of any larger draw)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    rng = random.Random(_derive_seed(seed, task.name, split))
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    budget = 200 * n + 2000
    while len(out) < n:
        if budget == 0:
            if at_most:
                return out
            raise ValueError(f"task {task.name!r} has fewer than {n} distinct {split} prompts; "
                             f"ask for fewer (got {len(out)})")
        budget -= 1
        prompt, answer = task.sample(rng)
        if prompt in seen or split_of(task.name, prompt) != split:
            continue
        seen.add(prompt)
        out.append((prompt, answer))
    return out


# ------------------------------------------------------------------ records

def make_task_records(task: str | Task, n: int, seed: int = 0, split: str = "train",
                      at_most: bool = False) -> list[Record]:
    """n records of one task (``at_most``: up to n, where the split has fewer distinct prompts): ids
    "builtin:<task>:<split>:<i>", the assistant turn is the answer.

    Same (task, n, seed, split) gives the same records; a larger n extends a smaller one (prefix).
    """
    t = get_task(task)
    if t.kind == "distractor":
        raise ValueError(f"{t.name!r} is a distractor; use make_distractor_records")
    return [simple(f"{SOURCE}:{t.name}:{split}:{i}", prompt, answer, source=SOURCE, task=t.name,
                   subtask=None, answer=answer,
                   metadata={"kind": t.kind, "ingredients": list(t.ingredients), "seed": seed, "split": split})
            for i, (prompt, answer) in enumerate(_draw(t, n, seed, split, at_most))]


def make_distractor_records(n: int, seed: int = 0, split: str = "train") -> list[Record]:
    """n generic instructions unrelated to every task (task "distractor", subtask = the generator).

    Generators take turns (capital, opposite, plural, translate_fr, past_tense, ...).
    """
    gens = list(DISTRACTORS.values())
    counts = [n // len(gens) + (k < n % len(gens)) for k in range(len(gens))]
    per_gen = [iter(_draw(g, c, seed, split)) for g, c in zip(gens, counts)]
    out: list[Record] = []
    for i in range(n):
        k = i % len(gens)
        prompt, answer = next(per_gen[k])
        out.append(simple(f"{SOURCE}:{DISTRACTOR_TASK}:{split}:{i}", prompt, answer, source=SOURCE,
                          task=DISTRACTOR_TASK, subtask=gens[k].name, answer=answer,
                          metadata={"kind": "distractor", "ingredients": [], "seed": seed, "split": split}))
    return out


# ------------------------------------------------------------------ scoring

_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"
_TRAILING = ".,;:!?"


def extract_answer(task: str | Task, text: str | None) -> str:
    """The normalised answer in a model output, for exact match.

    Rules: first non-empty line; drop an "Answer:" / "The answer is" prefix; strip quotes and
    trailing punctuation; collapse whitespace. Then per task format: "number" drops thousands
    separators (1,234 -> 1234); "sequence" treats commas as separators ("2, 4" -> "2 4"). Case is
    folded to lower unless the task is case-sensitive (upper, where case is the skill).
    Unknown task names (e.g. "distractor") get the generic rules, case-insensitive.
    """
    try:
        t: Task | None = get_task(task)
    except KeyError:
        t = None
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    s = lines[0] if lines else ""
    s = _PREFIX.sub("", s)
    for _ in range(2):   # quotes may sit inside or outside trailing punctuation: "122". / "122."
        s = s.strip().strip(_QUOTES).rstrip(_TRAILING)
    s = " ".join(s.split())
    fmt = t.answer_format if t else "text"
    if fmt == "number":
        s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    elif fmt == "sequence":
        s = " ".join(s.replace(",", " ").split())
    if not (t and t.case_sensitive):
        s = s.lower()
    return s


def is_correct(task: str | Task, prediction: str | None, answer: str) -> bool:
    """Exact match after :func:`extract_answer` on both sides."""
    return extract_answer(task, prediction) == extract_answer(task, answer)


# ------------------------------------------------------------------ the mixed candidate pool

@dataclass(frozen=True)
class Pool:
    """A mixed candidate pool with ground-truth relevance for each composite target.

    ``records``: basic, control and composite task records (train split) plus distractors, in a
    seeded shuffled order. Relevance of record r to composite C (see the module docstring):
    2 if r.task == C, 1 if r.task is an ingredient of C, else 0.
    """

    records: tuple[Record, ...]
    seed: int

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def targets(self) -> tuple[str, ...]:
        """Composite tasks this pool can be scored against."""
        return task_names("composite")

    def counts(self) -> dict[str, int]:
        """Records per task name (distractors under "distractor")."""
        out: dict[str, int] = {}
        for r in self.records:
            out[r.task] = out.get(r.task, 0) + 1
        return out

    def relevance(self, target: str) -> dict[str, int]:
        """record id -> 2 (the target's own task), 1 (an ingredient of it) or 0, for every record."""
        t = get_task(target) if target in TASKS else None
        if t is None or t.kind != "composite":
            raise ValueError(f"{target!r} is not a composite task; choose one of {', '.join(self.targets)}")
        ing = set(t.ingredients)
        return {r.id: 2 if r.task == t.name else 1 if r.task in ing else 0 for r in self.records}

    def relevant_ids(self, target: str) -> set[str]:
        """Ids with relevance > 0 for ``target``."""
        return {k for k, v in self.relevance(target).items() if v > 0}


def make_pool(seed: int = 0, per_task: int = 120, distractors: int = 360, *,
              tasks: Iterable[str] | None = None, per_composite: int | None = None) -> Pool:
    """The default candidate pool: ``per_task`` train records of every task of :data:`SUITE_V1` (or of
    ``tasks``) plus distractors.

    Defaults give 9 x 120 + 360 = 1440 records. ``per_composite`` overrides the count for
    composites (e.g. small, to mimic scarce target data); ``tasks`` restricts which tasks go in.
    """
    names = list(tasks) if tasks is not None else list(SUITE_V1)
    recs: list[Record] = []
    for name in names:
        t = get_task(name)
        k = per_composite if (t.kind == "composite" and per_composite is not None) else per_task
        recs.extend(make_task_records(t, k, seed, "train"))
    recs.extend(make_distractor_records(distractors, seed, "train"))
    random.Random(_derive_seed(seed, "pool-order")).shuffle(recs)
    return Pool(records=tuple(recs), seed=seed)


def make_targets(seed: int = 0, n_per_target: int = 24, split: str = "dev",
                 tasks: Iterable[str] | None = None) -> dict[str, list[Record]]:
    """Target records for every composite of :data:`SUITE_V1` (or for ``tasks``), from the dev split
    (disjoint from any pool); a later composite is a target by name (``builtin:targets:first_last``)."""
    if split == "train":
        raise ValueError("targets come from the dev or test split; the train split is the pool's")
    names = list(tasks) if tasks is not None else [n for n in task_names("composite") if n in SUITE_V1]
    return {name: make_task_records(name, n_per_target, seed, split) for name in names}


def describe_suite(seed: int = 0) -> list[dict[str, Any]]:
    """One row per task for display: name, kind, ingredients, description, an example."""
    rows = []
    for t in TASKS.values():
        prompt, answer = t.sample(random.Random(_derive_seed(seed, t.name, "example")))
        rows.append({"name": t.name, "kind": t.kind, "ingredients": list(t.ingredients),
                     "description": t.description, "example_prompt": prompt, "example_answer": answer})
    return rows
