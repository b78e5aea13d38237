#!/usr/bin/env python3
"""
Tokenize text into the token shards that train_llama reads (docs/FORMATS.md, "Data shard"),
and write the tokenizer.bin that tokenizer.h reads. See docs/DATA.md.

Examples (from the repository root):
    # offline, a local text file (TinyShakespeare from shared/), the LLaMA-2 tokenizer
    python dev/data/prepare.py --input ../shared/data/tinyshakespeare.txt --name tinyshakespeare
    # on a machine with internet
    python dev/data/prepare.py --dataset tinyshakespeare
    python dev/data/prepare.py --dataset tinystories --max-tokens 100000000
    python dev/data/prepare.py --dataset c4 --hf-tokenizer t5-base --max-tokens 1000000000
    # only tokenizer.bin
    python dev/data/prepare.py --tokenizer-only --out-dir data/tinyshakespeare
    # the King James Bible (Debian package bible-kjv) with a 4096-token BPE tokenizer trained
    # on its training split: the study corpora of scripts/compare_optimizers.sh
    python dev/data/prepare.py --dataset kjv --out-dir data/study/kjv --train-tokenizer 4096

Documents. A local file (--input, --dataset tinyshakespeare or kjv) is cut into documents at every
--doc-sep (default a blank line, "\\n\\n"); the separator stays at the end of the document it
ends, so that the documents concatenated are the file again. A dataset (tinystories, c4,
fineweb) gives one document per record (its "text" field). Every document is encoded without
special tokens and written preceded by BOS (id 1 for LLaMA-2).

Validation split (deterministic, no randomness):
  * local file: the FIRST ceil(val_fraction * n_docs) documents are val, the rest train (at
    least one of each when there are two or more documents);
  * streamed dataset (total unknown): document i (0-based) is val when
    floor((i + 1) * f) > floor(i * f), i.e. every (1/f)-th document (i = 9, 19, 29, ... for f = 0.1).
--max-tokens caps the tokens written (val + train); the document that reaches it is cut.

--dataset kjv runs the `bible` program (Debian package bible-kjv) and turns its output into
one document per chapter: the heading line ("Genesis 1"), then one line per verse, verse
numbers removed, wrapped lines joined, runs of spaces made one; chapters end with a blank line.
The text is cached as <out-dir>/kjv.txt (which --input reads back into the same documents).

--train-tokenizer V trains a SentencePiece BPE model of exactly V pieces (LLaMA-2's settings:
byte fallback, identity normalizer, dummy prefix, split digits; one thread, fixed seed) on the
TRAINING documents only, saves it as <out-dir>/tokenizer.model and tokenizes with it. The
documents and the split are made from the text before any tokenizer is involved, so val is the
same text whichever tokenizer is used.

Output, in --out-dir (default data/<name> under the repository root):
  <name>_val_000000.bin, ...    val shards, at most --shard-tokens tokens each
  <name>_train_000000.bin, ...  train shards
  tokenizer.bin                 the vocabulary, for decoding samples in C
  tokenizer.model               with --train-tokenizer: the trained SentencePiece model
  tinyshakespeare.txt, kjv.txt  with --dataset tinyshakespeare / kjv: the cached text
Tokens are uint16 when the vocabulary has <= 65535 entries, else uint32. A document may
continue from one shard into the next. Shards are full except the last two of a split, which
share their tokens evenly when the tail would be under half a shard (so no shard of a split
with several shards is smaller than --shard-tokens / 2).
"""
import argparse
import io
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from export_tokenizer import export_tokenizer  # noqa: E402

SHARD_MAGIC = 20261101
SHARD_VERSION = 1
HEADER_INT64S = 8
HEADER_BYTES = 8 * HEADER_INT64S

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
HF_DATASETS = {
    # name: (hub path, config, split, text field)
    "tinystories": ("roneneldan/TinyStories", None, "train", "text"),
    "c4": ("allenai/c4", "en", "train", "text"),
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT", "train", "text"),
}
# the King James Bible: the `bible` program of the Debian package bible-kjv (public domain text)
KJV_PACKAGE = "bible-kjv"
KJV_RANGE = "gen1:1-rev22:21"
KJV_CHAPTERS, KJV_VERSES = 1189, 31102
LOCAL_DATASETS = ["tinyshakespeare", "kjv"]
DEFAULT_TOKENIZER_CANDIDATES = [
    REPO.parent / "shared" / "data" / "llama2_tokenizer.model",
    REPO / "data" / "llama2_tokenizer.model",
]


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def progress(**kw):
    """tqdm when installed, else a no-op stand-in"""
    try:
        from tqdm import tqdm
        return tqdm(**kw)
    except ImportError:
        class _Null:
            def update(self, n=1): pass
            def close(self): pass
        return _Null()


# ----------------------------------------------------------------------------------------
# shards

def shard_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65535 else np.uint32


def write_shard(path, tokens, vocab_size):
    """Writes one shard (header + tokens) atomically. tokens: 1-D integer array."""
    dtype = shard_dtype(vocab_size)
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        die(f"token ids outside [0, {vocab_size}) while writing {path}")
    header = np.zeros(HEADER_INT64S, dtype="<i8")
    header[0] = SHARD_MAGIC
    header[1] = SHARD_VERSION
    header[2] = np.dtype(dtype).itemsize
    header[3] = tokens.size
    header[4] = vocab_size
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.dtype(dtype).newbyteorder("<"), copy=False).tobytes())
    os.replace(tmp, path)


def read_shard(path):
    """Reads a shard back, checking its header and size; returns (tokens, vocab_size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i8")
        if header.size != HEADER_INT64S or header[0] != SHARD_MAGIC:
            die(f"{path}: not a data shard (bad magic)")
        if header[1] != SHARD_VERSION:
            die(f"{path}: shard version {header[1]}, expected {SHARD_VERSION}")
        bpt, n, vocab = int(header[2]), int(header[3]), int(header[4])
        if bpt not in (2, 4) or size != HEADER_BYTES + n * bpt:
            die(f"{path}: size {size} does not match header ({n} tokens of {bpt} bytes)")
        tokens = np.frombuffer(f.read(), dtype="<u2" if bpt == 2 else "<u4")
    return tokens, vocab


class ShardWriter:
    """Accumulates the tokens of one split and writes <name>_<split>_NNNNNN.bin shards."""

    def __init__(self, out_dir, name, split, shard_tokens, vocab_size):
        self.out_dir, self.name, self.split = Path(out_dir), name, split
        self.shard_tokens, self.vocab_size = shard_tokens, vocab_size
        self.buf = np.empty(shard_tokens, dtype=shard_dtype(vocab_size))
        self.n = 0
        self.files = []
        self.tokens = 0
        self.docs = 0

    def add(self, ids):
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.vocab_size):
            die(f"tokenizer produced ids outside [0, {self.vocab_size})")
        pos = 0
        while pos < arr.size:
            take = min(self.shard_tokens - self.n, arr.size - pos)
            self.buf[self.n:self.n + take] = arr[pos:pos + take]
            self.n += take
            pos += take
            if self.n == self.shard_tokens:
                self._flush()
        self.tokens += arr.size

    def _flush(self):
        if self.n == 0:
            return
        path = self.out_dir / f"{self.name}_{self.split}_{len(self.files):06d}.bin"
        write_shard(path, self.buf[:self.n], self.vocab_size)
        self.files.append(path)
        self.n = 0

    def close(self):
        """Writes the last shard. A short tail (under half a shard) is balanced with the shard
        before it, so that every shard of a split with several shards has at least
        shard_tokens // 2 tokens (the trainer's loader needs T+1 tokens in every shard)."""
        if self.n and self.files and self.n < self.shard_tokens // 2:
            prev, vocab = read_shard(self.files[-1])
            both = np.concatenate([prev.astype(np.int64), self.buf[:self.n].astype(np.int64)])
            first = (both.size + 1) // 2
            write_shard(self.files[-1], both[:first], self.vocab_size)
            self.buf[:both.size - first] = both[first:]
            self.n = both.size - first
        self._flush()
        return self.files


# ----------------------------------------------------------------------------------------
# tokenizers

class SPTokenizer:
    def __init__(self, model_path):
        import sentencepiece as spm
        self.model_path = str(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_path)
        self.vocab_size = self.sp.vocab_size()
        self.bos_id = self.sp.bos_id()
        if self.bos_id < 0:
            die(f"SentencePiece model {model_path} has no BOS piece; documents need one")
        self.desc = f"SentencePiece {model_path}"

    def encode_batch(self, texts):
        return self.sp.encode(list(texts))

    def decode(self, ids):
        return self.sp.decode(list(ids))

    def write_tokenizer_bin(self, path):
        export_tokenizer(self.model_path, str(path))
        return True


class HFTokenizer:
    def __init__(self, name):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            die("--hf-tokenizer needs the 'transformers' library: pip install transformers sentencepiece")
        try:
            self.tok = AutoTokenizer.from_pretrained(name)
        except Exception as e:  # offline, unknown name, ...
            die(f"could not load the Hugging Face tokenizer '{name}' ({type(e).__name__}: {e}).\n"
                "  This needs internet the first time (or a local directory with the tokenizer files).")
        self.name = name
        self.vocab_size = len(self.tok)
        # T5 has no BOS: its EOS (</s>, also id 1) then separates documents
        self.bos_id = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        if self.bos_id is None:
            die(f"tokenizer '{name}' has neither a BOS nor an EOS token to separate documents")
        self.desc = f"Hugging Face {name} (document token id {self.bos_id})"

    def encode_batch(self, texts):
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids):
        return self.tok.decode(list(ids))

    def write_tokenizer_bin(self, path):
        vf = getattr(self.tok, "vocab_file", None)
        if vf and str(vf).endswith(".model") and os.path.isfile(vf):
            export_tokenizer(vf, str(path))
            return True
        print(f"warning: '{self.name}' has no SentencePiece .model file here "
              "(a 'fast' tokenizer?); tokenizer.bin not written", file=sys.stderr)
        return False


def find_default_tokenizer():
    for c in DEFAULT_TOKENIZER_CANDIDATES:
        if c.is_file():
            return c
    die("no SentencePiece tokenizer model given and none found at\n    "
        + "\n    ".join(str(c) for c in DEFAULT_TOKENIZER_CANDIDATES)
        + "\n  Get the LLaMA-2 tokenizer.model (e.g. from the meta-llama/Llama-2-7b-hf repository on\n"
          "  Hugging Face after accepting its license: huggingface-cli download meta-llama/Llama-2-7b-hf\n"
          "  tokenizer.model --local-dir data), save it as data/llama2_tokenizer.model, or pass\n"
          "  --tokenizer PATH.model (any SentencePiece model) or --hf-tokenizer NAME.")


# SentencePiece's trainer settings for --train-tokenizer: LLaMA-2's (so that tokenizer.h
# reproduces the model exactly, docs/DATA.md), one thread and a fixed seed (same text, same model)
TRAIN_TOKENIZER_SEED = 1
TRAIN_TOKENIZER_SETTINGS = dict(
    model_type="bpe", byte_fallback=True, split_digits=True, normalization_rule_name="identity",
    add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    character_coverage=0.99995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=1 << 16,
    num_threads=1, minloglevel=2)
MIN_TRAINED_VOCAB = 3 + 256 + 1  # <unk> <s> </s>, the 256 byte pieces, at least one merge


def train_tokenizer(docs, vocab_size, model_path):
    """Trains a SentencePiece BPE model of exactly vocab_size pieces on the lines of docs (the
    training documents) and writes it to model_path (atomically). Returns the seconds taken."""
    import sentencepiece as spm
    if vocab_size < MIN_TRAINED_VOCAB:
        die(f"--train-tokenizer {vocab_size}: a byte-fallback vocabulary needs at least "
            f"{MIN_TRAINED_VOCAB} pieces (3 special, 256 bytes, 1 merge)")
    # SentencePiece trains on sentences; a line of text is one (newlines become the byte
    # piece <0x0A> when encoding, as with LLaMA-2's model)
    lines = [line for d in docs for line in d.split("\n") if line]
    if not lines:
        die("--train-tokenizer: the training split has no text")
    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(TRAIN_TOKENIZER_SEED)
    t0 = time.time()
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                       vocab_size=vocab_size, **TRAIN_TOKENIZER_SETTINGS)
    except RuntimeError as e:
        die(f"--train-tokenizer {vocab_size}: SentencePiece could not train on the training split "
            f"({len(lines):,} lines): {e}\n  A small text cannot fill a large vocabulary: try a smaller V.")
    tmp = str(model_path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, model_path)
    return time.time() - t0


# ----------------------------------------------------------------------------------------
# sources

def split_documents(text, sep):
    """Cuts text at every sep; the separator stays with the document it ends. Joining the
    result gives text back. Empty pieces (only possible for an empty text) are dropped."""
    if not sep:
        return [text] if text else []
    parts = text.split(sep)
    docs = [p + sep for p in parts[:-1]] + [parts[-1]]
    return [d for d in docs if d]


def download_tinyshakespeare(out_dir):
    path = Path(out_dir) / "tinyshakespeare.txt"
    if path.is_file() and path.stat().st_size > 0:
        print(f"using the cached {path}")
        return path
    import urllib.request
    print(f"downloading {TINYSHAKESPEARE_URL}")
    try:
        with urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=30) as r:
            data = r.read()
    except Exception as e:
        die(f"could not download TinyShakespeare from {TINYSHAKESPEARE_URL} ({type(e).__name__}: {e}).\n"
            "  Without internet, pass a local copy instead: --input path/to/tinyshakespeare.txt")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def kjv_documents(raw):
    """The pretty-printed output of `bible` ("Genesis 1" heading lines between blank lines,
    verses as "  N text" with wrapped lines unindented) -> one document per chapter:
    "Genesis 1\n" + one line per verse (number removed, wrapped lines joined, runs of
    whitespace made one space) + "\n" (so chapters are separated by a blank line).
    Returns (documents, verse count); dies on output it does not recognise."""
    heading = re.compile(r"^((?:[1-3] )?[A-Z][A-Za-z ]*[a-z]) ([0-9]+)$")
    verse = re.compile(r"^\s+([0-9]+) (.*)$")
    lines = raw.split("\n")
    chapters = []  # [heading, [verse texts]]
    n_verses = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        before = lines[i - 1].strip() if i > 0 else ""
        after = lines[i + 1].strip() if i + 1 < len(lines) else ""
        m = verse.match(line)
        if not before and not after and heading.match(line):
            chapters.append([line.strip(), []])
        elif m and chapters:
            want = len(chapters[-1][1]) + 1
            if int(m.group(1)) != want:
                die(f"bible output line {i + 1}: verse {m.group(1)} of {chapters[-1][0]}, expected {want}: {line!r}")
            chapters[-1][1].append(m.group(2))
            n_verses += 1
        elif chapters and chapters[-1][1] and not line[0].isspace():
            chapters[-1][1][-1] += " " + line  # a wrapped line continues the verse
        else:
            die(f"bible output line {i + 1} is neither a chapter heading, a verse nor a wrapped line: {line!r}")
    docs = []
    for head, verses in chapters:
        if not verses:
            die(f"bible output: chapter '{head}' has no verses")
        docs.append(head + "\n" + "".join(" ".join(v.split()) + "\n" for v in verses) + "\n")
    return docs, n_verses


def fetch_kjv(out_dir):
    """<out-dir>/kjv.txt: cached, else made from the `bible` program's output."""
    path = Path(out_dir) / "kjv.txt"
    if path.is_file() and path.stat().st_size > 0:
        print(f"using the cached {path}")
        return path
    exe = shutil.which("bible")
    if exe is None:
        die(f"--dataset kjv runs the `bible` program of the Debian package {KJV_PACKAGE}, which is not "
            f"installed here:\n  sudo apt-get install {KJV_PACKAGE}\n"
            "  Or pass the text as a local file with --input FILE (e.g. a kjv.txt written by this "
            "script on another machine).")
    print(f"running {exe} {KJV_RANGE}")
    try:
        # COLUMNS only sets where `bible` wraps lines, which kjv_documents joins again
        r = subprocess.run([exe, KJV_RANGE], stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
                           env={**os.environ, "COLUMNS": "80"})
    except (OSError, subprocess.SubprocessError) as e:
        die(f"running '{exe} {KJV_RANGE}' failed ({type(e).__name__}: {e})")
    if r.returncode != 0 or not r.stdout.strip():
        die(f"'{exe} {KJV_RANGE}' exited with {r.returncode} and {len(r.stdout)} bytes of output: "
            f"{r.stderr.decode('utf-8', 'replace').strip()[:500]}")
    try:
        raw = r.stdout.decode("utf-8")
    except UnicodeDecodeError as e:
        die(f"the output of '{exe} {KJV_RANGE}' is not UTF-8 ({e})")
    docs, n_verses = kjv_documents(raw)
    if (len(docs), n_verses) != (KJV_CHAPTERS, KJV_VERSES):
        print(f"warning: {len(docs)} chapters and {n_verses} verses; the King James Bible has "
              f"{KJV_CHAPTERS} and {KJV_VERSES}", file=sys.stderr)
    print(f"bible: {len(raw.encode()):,} bytes of output -> {len(docs):,} chapters, {n_verses:,} verses")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = str(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("".join(docs))
    os.replace(tmp, path)
    return path


def stream_hf_dataset(name):
    """Opens a Hugging Face dataset for streaming (failing here, clearly, when the library is
    missing or the hub cannot be reached) and returns an iterator over its document texts."""
    try:
        import datasets
    except ImportError:
        die(f"--dataset {name} needs the Hugging Face 'datasets' library: pip install datasets\n"
            "  (or tokenize a local text file with --input FILE)")
    path, config, split, field = HF_DATASETS[name]
    try:
        ds = datasets.load_dataset(path, config, split=split, streaming=True)
        it = iter(ds)
        first = next(it)
    except Exception as e:
        die(f"could not open the dataset {path}{'/' + config if config else ''} from the Hugging Face hub "
            f"({type(e).__name__}: {e}).\n  This needs internet; offline, use --input FILE.")

    def texts():
        yield first[field]
        try:
            for rec in it:
                yield rec[field]
        except Exception as e:
            die(f"reading {path} failed part way ({type(e).__name__}: {e}); the shards written so far "
                "are complete files but the split is partial")
    return texts()


# ----------------------------------------------------------------------------------------

def parse_sep(s):
    if s.lower() == "none":
        return ""
    return s.encode("utf-8").decode("unicode_escape")


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Tokenize text into train/val token shards (docs/FORMATS.md) and write tokenizer.bin.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Validation split: local file -> the first ceil(f*docs) documents; streamed dataset -> "
               "every (1/f)-th document. See docs/DATA.md.")
    src = ap.add_argument_group("source (one of)")
    src.add_argument("--input", "-i", metavar="FILE", help="a local UTF-8 text file")
    src.add_argument("--dataset", "-d", metavar="NAME", choices=LOCAL_DATASETS + sorted(HF_DATASETS),
                     help="tinyshakespeare | kjv | tinystories | c4 | fineweb. tinyshakespeare (raw text, downloaded), "
                          "kjv (the King James Bible from the `bible` program, Debian package bible-kjv; one document "
                          "per chapter): cached in the output directory; "
                          "tinystories, c4, fineweb (streamed with the 'datasets' library)")
    tk = ap.add_argument_group("tokenizer")
    tk.add_argument("--tokenizer", "-t", metavar="PATH.model", help="SentencePiece .model (default: ../shared/data/llama2_tokenizer.model "
                                             "next to the repository, else data/llama2_tokenizer.model)")
    tk.add_argument("--hf-tokenizer", metavar="NAME", help="a Hugging Face tokenizer name instead, e.g. t5-base (needs transformers)")
    tk.add_argument("--tokenizer-only", action="store_true", help="only write <out-dir>/tokenizer.bin and exit")
    tk.add_argument("--train-tokenizer", metavar="V", type=int, default=None,
                    help="train a SentencePiece BPE model of V pieces (byte fallback, deterministic) on the training "
                         "split only, save it as <out-dir>/tokenizer.model and tokenize with it (local text only)")
    out = ap.add_argument_group("output")
    out.add_argument("--out-dir", "-o", metavar="DIR", help="output directory (default: data/<name> under the repository root)")
    out.add_argument("--name", "-n", metavar="NAME", help="shard name prefix (default: the dataset name or the input file's stem)")
    out.add_argument("--val-fraction", metavar="F", type=float, default=0.1, help="fraction of documents for val (default 0.1)")
    out.add_argument("--shard-tokens", metavar="N", type=int, default=100_000_000, help="max tokens per shard (default 100M)")
    out.add_argument("--max-tokens", metavar="N", type=int, default=None, help="stop after this many tokens in all (default: all)")
    out.add_argument("--doc-sep", metavar="SEP", default="\\n\\n",
                     help="document separator of a local file, with backslash escapes (default '\\n\\n'); "
                          "'none' keeps the file as one document")
    out.add_argument("--batch-docs", metavar="N", type=int, default=1024, help="documents encoded per batch (default 1024)")
    args = ap.parse_args(argv)

    if args.tokenizer and args.hf_tokenizer:
        die("give --tokenizer or --hf-tokenizer, not both")
    if not args.tokenizer_only and (args.input is None) == (args.dataset is None):
        die("give exactly one source: --input FILE or --dataset NAME (or --tokenizer-only)")
    if not (0.0 <= args.val_fraction < 1.0):
        die(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.shard_tokens <= 0:
        die("--shard-tokens must be positive")
    if args.max_tokens is not None and args.max_tokens <= 0:
        die("--max-tokens must be positive")
    local = args.input is not None or args.dataset in LOCAL_DATASETS
    if args.train_tokenizer is not None:
        if args.tokenizer or args.hf_tokenizer:
            die("--train-tokenizer makes the tokenizer: give it without --tokenizer / --hf-tokenizer")
        if args.tokenizer_only:
            die("--train-tokenizer trains on the text: it cannot be used with --tokenizer-only")
        if not local:
            die(f"--train-tokenizer needs the whole text first: use it with --input FILE or --dataset "
                f"{' or '.join(LOCAL_DATASETS)}, not with the streamed --dataset {args.dataset}")

    name = args.name or (args.dataset if args.dataset else (Path(args.input).stem if args.input else None))
    if args.out_dir:
        out_dir = Path(args.out_dir)
    elif name:
        out_dir = REPO / "data" / name
    else:
        out_dir = REPO / "data"
    out_dir.mkdir(parents=True, exist_ok=True)

    # a local text: its documents and split come first, from the text alone (the same whichever
    # tokenizer is used; --train-tokenizer trains on the train documents)
    if local and not args.tokenizer_only:
        if args.input:
            path = Path(args.input)
        elif args.dataset == "kjv":
            path = fetch_kjv(out_dir)
        else:
            path = download_tinyshakespeare(out_dir)
        if not path.is_file():
            die(f"input file '{path}' not found")
        try:
            text = path.read_bytes().decode("utf-8")  # bytes as they are: no newline translation
        except UnicodeDecodeError as e:
            die(f"input file '{path}' is not valid UTF-8 ({e})")
        docs = split_documents(text, parse_sep(args.doc_sep))
        if not docs:
            die(f"input file '{path}' is empty")
        n_val = math.ceil(args.val_fraction * len(docs)) if args.val_fraction > 0 else 0
        if len(docs) >= 2 and args.val_fraction > 0:
            n_val = min(max(n_val, 1), len(docs) - 1)
        elif len(docs) == 1 and n_val:
            print("warning: the input is a single document; it all goes to train and val is empty "
                  "(use --doc-sep to cut it into documents)", file=sys.stderr)
            n_val = 0
        print(f"{path}: {len(text):,} characters, {len(text.encode('utf-8')):,} bytes, "
              f"{len(docs):,} documents ({n_val:,} val)")

    # tokenizer
    if args.hf_tokenizer:
        tok = HFTokenizer(args.hf_tokenizer)
    elif args.train_tokenizer is not None:
        model = out_dir / "tokenizer.model"
        train_docs = docs[n_val:]
        dt = train_tokenizer(train_docs, args.train_tokenizer, model)
        print(f"trained a {args.train_tokenizer}-piece SentencePiece BPE model on the {len(train_docs):,} train "
              f"documents ({sum(len(d.encode('utf-8')) for d in train_docs):,} bytes) in {dt:.1f} s: {model}")
        tok = SPTokenizer(model)
    else:
        model = Path(args.tokenizer) if args.tokenizer else find_default_tokenizer()
        if not model.is_file():
            die(f"SentencePiece model '{model}' not found")
        tok = SPTokenizer(model)
    tok_bin = out_dir / "tokenizer.bin"
    wrote_tok = tok.write_tokenizer_bin(tok_bin)
    if args.tokenizer_only:
        return 0

    t0 = time.time()
    print(f"tokenizer: {tok.desc}, vocab {tok.vocab_size}, "
          f"tokens as {'uint16' if shard_dtype(tok.vocab_size) == np.uint16 else 'uint32'}")
    writers = {s: ShardWriter(out_dir, name, s, args.shard_tokens, tok.vocab_size) for s in ("val", "train")}
    total = 0
    cap = args.max_tokens if args.max_tokens is not None else float("inf")

    def emit(split, ids):
        """adds one document (BOS + ids) to a split; False once --max-tokens is reached"""
        nonlocal total
        doc = [tok.bos_id] + list(ids)
        if total + len(doc) > cap:
            doc = doc[:int(cap - total)]
        if doc:
            writers[split].add(doc)
            writers[split].docs += 1
            total += len(doc)
        return total < cap

    if local:
        bar = progress(total=len(docs), unit="doc", desc="tokenizing")
        going = True
        for b in range(0, len(docs), args.batch_docs):
            batch = docs[b:b + args.batch_docs]
            for k, ids in enumerate(tok.encode_batch(batch)):
                going = emit("val" if b + k < n_val else "train", ids)
                if not going:
                    break
            bar.update(len(batch))
            if not going:
                break
        bar.close()
    else:
        if args.max_tokens is None:
            print(f"note: no --max-tokens: the whole of {args.dataset} will be tokenized (this can be very long)")
        f = args.val_fraction
        stream = stream_hf_dataset(args.dataset)
        bar = progress(total=args.max_tokens, unit="tok", unit_scale=True, desc=f"tokenizing {args.dataset}")
        i = 0
        going = True
        while going:
            batch = []
            for text in stream:
                batch.append(text)
                if len(batch) == args.batch_docs:
                    break
            if not batch:
                break
            for ids in tok.encode_batch(batch):
                split = "val" if f > 0 and math.floor((i + 1) * f) > math.floor(i * f) else "train"
                before = total
                going = emit(split, ids)
                bar.update(total - before)
                i += 1
                if not going:
                    break
        bar.close()

    files = {s: w.close() for s, w in writers.items()}
    dt = time.time() - t0
    print(f"done in {dt:.1f} s")
    for s in ("val", "train"):
        w = writers[s]
        print(f"  {s:5s}: {w.docs:,} documents, {w.tokens:,} tokens, {len(files[s])} shard(s)")
        for p in files[s]:
            print(f"         {p}")
        if not files[s]:
            print(f"         (no {s} tokens: no {s} file written)")
    if local:
        vb = sum(len(d.encode("utf-8")) for d in docs[:n_val])
        tb = sum(len(d.encode("utf-8")) for d in docs[n_val:])
        print(f"  text : val {vb:,} bytes, train {tb:,} bytes "
              f"({tb / max(writers['train'].tokens, 1):.2f} bytes per train token, BOS included)")
    if wrote_tok:
        print(f"  tokenizer: {tok_bin}")
    if args.max_tokens is not None and total >= args.max_tokens:
        print(f"  stopped at --max-tokens {args.max_tokens:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
