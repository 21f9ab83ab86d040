"""
One-time data preparation for the CPU autoresearch target.
Generates a deterministic text corpus offline (no download) and pins its validation split.

Usage:
    uv run prepare.py          # build (or verify) the cached corpus

The corpus is stored in ~/.cache/autoresearch-cpu/ (or $AUTORESEARCH_CACHE_DIR).
train.py imports the constants, the tokenizer, the data and evaluate_bpb from here.
This file is fixed: do not modify it.
"""

import bisect
import hashlib
import math
import os
import random
import sys
import tempfile

# One BLAS thread (train.py sets the same before its own numpy import): the budget counts CPU
# time, which a pool of BLAS threads inflates by spinning while they wait for work.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


def _steady_malloc():
    """glibc: arrays up to 32 MiB come from the heap (mmap threshold) and freed memory stays
    there (trim threshold 1 GiB), so each step's temporaries reuse the same pages. Left
    adaptive, glibc's thresholds put some processes, depending on how their heap happened to
    grow (the command that started them, whether they built the corpus), into a mode that
    faults in fresh zeroed pages every step (60 a step here), which changes what a step costs
    for the whole run. True when both were set."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # not glibc (macOS, musl): nothing to do
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)) and \
        bool(mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024))


STEADY_MALLOC = _steady_malloc()

# ---------------------------------------------------------------------------
# Constants (fixed, do not modify)
# ---------------------------------------------------------------------------

MAX_SEQ_LEN = 64         # bytes of context the evaluator hands the model
TIME_BUDGET = 15         # training time budget in seconds
# The clock TIME_BUDGET is measured on: "process" = this process's own CPU time
# (time.process_time). Upstream measures wall-clock time (time.time) on a dedicated GPU; a CPU
# target shares its cores with other work, so its budget is the CPU time the run itself got:
# a busy machine makes a run take longer, not train less. (With BLAS at one thread, CPU time
# and wall time agree on an idle machine.)
TIME_BUDGET_CLOCK = "process"
EVAL_TOKENS = 65536      # number of validation bytes scored by evaluate_bpb

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

CORPUS_VERSION = "v1"
CACHE_DIR = os.environ.get("AUTORESEARCH_CACHE_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "autoresearch-cpu")
DATA_DIR = os.path.join(CACHE_DIR, f"corpus-{CORPUS_VERSION}")
VOCAB_SIZE = 256         # byte-level: one token per byte
TRAIN_BYTES = 2 * 1024 * 1024
VAL_BYTES = MAX_SEQ_LEN + EVAL_TOKENS
TRAIN_SEED = 20240601
VAL_SEED = 20240602      # the validation split comes from its own seed: pinned, disjoint stream

# SHA-256 of each split. The generator draws only from random.Random.random(), whose
# sequence Python guarantees across versions, so every machine builds the same bytes.
TRAIN_SHA256 = "466042ce6cf622430de7628bf5c87ec4e9a2198990997a5b2af152f4d41166da"
VAL_SHA256 = "5a11b38595d9430f80f4a36f2676a61e4aafb09dd82a57331ff4ec297a39ec19"

# ---------------------------------------------------------------------------
# Corpus generation: a seeded procedural grammar
# ---------------------------------------------------------------------------
# The text has structure at several scales, so a model that reads more context
# (or learns better) scores lower: word spelling, a Zipfian vocabulary, sentence
# templates, per-paragraph topics and protagonists, quoted phrases that are
# repeated later in the same sentence, counting and small sums.

_ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m",
           "n", "p", "pl", "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou", "ie"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng"]
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve"]
_PREPS = ["over", "under", "near", "with", "behind", "into", "past", "beside"]


_HARMONIC = {}


class _Draw:
    """Deterministic choices built on random.Random.random() alone."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def below(self, n):
        return min(int(self.rng.random() * n), n - 1)

    def pick(self, items):
        return items[self.below(len(items))]

    def zipf(self, items):
        # P(i) proportional to 1 / (i + 1); only exact IEEE + and / and comparisons, no libm
        n = len(items)
        if n not in _HARMONIC:
            total, cdf = 0.0, []
            for i in range(n):
                total += 1.0 / (i + 1)
                cdf.append(total)
            _HARMONIC[n] = cdf
        cdf = _HARMONIC[n]
        return items[min(bisect.bisect_right(cdf, self.rng.random() * cdf[-1]), n - 1)]

    def chance(self, p):
        return self.rng.random() < p


def _make_words(draw, count, syllables):
    words, seen = [], set()
    while len(words) < count:
        n = 1 + draw.below(syllables)
        word = "".join(draw.pick(_ONSETS) + draw.pick(_VOWELS) for _ in range(n))
        word += draw.pick(_CODAS)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _lexicon():
    """The same lexicon for both splits (seeded on its own)."""
    draw = _Draw(7)
    return {
        "noun": _make_words(draw, 400, 3),
        "verb": _make_words(draw, 120, 2),
        "adj": _make_words(draw, 90, 2),
        "name": [w.capitalize() for w in _make_words(draw, 60, 2)],
    }


def _sentence(draw, lex, topic, hero):
    def noun():
        return draw.pick(topic) if draw.chance(0.6) else draw.zipf(lex["noun"])

    kind = draw.below(7)
    if kind == 0:
        return f"the {draw.zipf(lex['adj'])} {noun()} {draw.zipf(lex['verb'])}s " \
               f"{draw.pick(_PREPS)} the {noun()}."
    if kind == 1:
        n = 2 + draw.below(11)
        return f"{hero} {draw.zipf(lex['verb'])}ed {_NUMBERS[n]} {noun()}s."
    if kind == 2:
        a, b = draw.below(50), draw.below(50)
        return f"{hero} knows that {a} plus {b} is {a + b}."
    if kind == 3:
        phrase = f"{draw.zipf(lex['adj'])} {noun()}"
        other = draw.pick(lex["name"])
        return f'{hero} said "{phrase}", and {other} said "{phrase}" too.'
    if kind == 4:
        start = draw.below(8)
        return "they counted " + ", ".join(_NUMBERS[start:start + 3 + draw.below(3)]) + "."
    if kind == 5:
        return f"{hero} is {draw.zipf(lex['adj'])} and the {noun()} is {draw.zipf(lex['adj'])}."
    return f"the {noun()} of {hero} {draw.zipf(lex['verb'])}s the {noun()}."


def _paragraph(draw, lex):
    topic = [draw.zipf(lex["noun"]) for _ in range(4)]
    hero = draw.pick(lex["name"])
    sentences = []
    for _ in range(3 + draw.below(6)):
        s = _sentence(draw, lex, topic, hero)
        sentences.append(s[0].upper() + s[1:])
    return " ".join(sentences) + "\n\n"


def generate_corpus(seed, nbytes):
    """Return exactly nbytes of deterministic ASCII text generated from seed."""
    draw, lex = _Draw(seed), _lexicon()
    parts, size = [], 0
    while size < nbytes:
        p = _paragraph(draw, lex)
        parts.append(p)
        size += len(p)
    return "".join(parts).encode("ascii")[:nbytes]

# ---------------------------------------------------------------------------
# Cache: build once, verify against the pinned hashes
# ---------------------------------------------------------------------------

SPLITS = {
    "train": (TRAIN_SEED, TRAIN_BYTES, TRAIN_SHA256),
    "val": (VAL_SEED, VAL_BYTES, VAL_SHA256),
}


def split_path(split):
    return os.path.join(DATA_DIR, f"{split}.bin")


def _write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_verified(split):
    """The cached split's bytes, or None when missing or not the pinned bytes."""
    try:
        with open(split_path(split), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return data if hashlib.sha256(data).hexdigest() == SPLITS[split][2] else None


def build_split(split):
    """Generate one split, check it against its pinned hash, cache it; returns its bytes."""
    seed, nbytes, expected = SPLITS[split]
    data = generate_corpus(seed, nbytes)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise RuntimeError(f"generated {split} split has sha256 {digest}, expected {expected}: "
                           "this Python generates a different corpus, so val_bpb would not be "
                           "comparable")
    _write_atomic(split_path(split), data)
    return data


def load_split(split):
    """The split as a uint8 numpy array (built and cached on first use)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {sorted(SPLITS)}")
    data = _read_verified(split)
    if data is None:
        print(f"prepare: building the {split} split in {DATA_DIR}", file=sys.stderr)
        data = build_split(split)
    return np.frombuffer(data, dtype=np.uint8)

# ---------------------------------------------------------------------------
# Runtime utilities (imported by train.py)
# ---------------------------------------------------------------------------

class Tokenizer:
    """Byte-level tokenizer: token ids are the UTF-8 bytes of the text."""

    def get_vocab_size(self):
        return VOCAB_SIZE

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")

# ---------------------------------------------------------------------------
# Evaluation (DO NOT CHANGE — this is the fixed metric)
# ---------------------------------------------------------------------------

def evaluate_bpb(model, batch_size=4096):
    """
    Bits per byte (BPB) over the pinned validation split, computed here, not by the model.
    The model is a callable: contexts (B, MAX_SEQ_LEN) int64 array of the preceding bytes
    -> logits (B, VOCAB_SIZE) for the next byte. It never sees the byte it predicts.
    Scores the EVAL_TOKENS bytes that follow the first MAX_SEQ_LEN bytes of the split,
    so every prediction has a full context. One byte per token, so bits/token = bits/byte.
    """
    val = load_split("val").astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(val, MAX_SEQ_LEN + 1)
    assert len(windows) == EVAL_TOKENS
    total_bits = 0.0
    for start in range(0, EVAL_TOKENS, batch_size):
        chunk = windows[start:start + batch_size]
        contexts, targets = np.ascontiguousarray(chunk[:, :-1]), chunk[:, -1]
        logits = np.asarray(model(contexts), dtype=np.float64)
        if logits.shape != (len(chunk), VOCAB_SIZE):
            raise ValueError(f"model returned shape {logits.shape}, "
                             f"expected {(len(chunk), VOCAB_SIZE)}")
        # -log2 softmax(logits)[target], stable: log2(sum 2^((l - max)/ln2)) - (l_t - max)/ln2
        shifted = (logits - logits.max(axis=1, keepdims=True)) / math.log(2)
        log2_norm = np.log2(np.exp2(shifted).sum(axis=1))
        bits = log2_norm - shifted[np.arange(len(chunk)), targets]
        total_bits += math.fsum(bits.tolist())
    return total_bits / EVAL_TOKENS

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

if __name__ == "__main__":
    print(f"Cache directory: {CACHE_DIR}")
    for name in SPLITS:
        arr = load_split(name)
        print(f"{name}: {len(arr):,} bytes, sha256 {SPLITS[name][2][:16]}...")
    print("Done! Ready to train.")
