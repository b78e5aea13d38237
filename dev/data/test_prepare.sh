#!/usr/bin/env bash
# dev/data/test_prepare.sh: checks dev/data/prepare.py offline, on text it writes itself.
#
#   bash dev/data/test_prepare.sh          (from anywhere; needs python3, numpy, sentencepiece)
#
# Trains a small SentencePiece BPE model on generated multi-document text, runs prepare.py
# with tiny shards, and checks, independently of prepare.py's code: shard names, headers
# (magic, version, bytes per token, count, vocab), file sizes, id ranges, shard sizes, the
# validation rule (first ceil(f * docs) documents), that every document is BOS + its
# sentencepiece encoding, and that the decoded documents of val then train concatenate to
# the input text exactly. Also: uint32 shards for vocabularies > 65535, --max-tokens,
# --val-fraction 0, --tokenizer-only, clear errors for bad arguments and for downloads when
# offline, and, when ../shared/data has them, the LLaMA-2 tokenizer on all of TinyShakespeare.
# --train-tokenizer: the model has exactly V pieces (tokenizer.bin's header too) and all 256
# byte pieces, saw only the train documents (letters used only in val have no piece), the
# train and val shards decode to their documents, two runs give identical files, val is the
# same text as with a given tokenizer, and bad uses fail clearly. --dataset kjv (when the
# `bible` program of the Debian package bible-kjv is installed; skipped otherwise): 1189
# chapter documents whose verses equal `bible -f`'s, the shards, the cached text; without
# `bible`, a clear error naming the package and --input.
# Ends with "test_prepare.sh: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
SHARED="$ROOT/../shared/data"
PREP="python3 dev/data/prepare.py"

passed=0
failed=0
skipped=0
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
pass() { passed=$((passed + 1)); }
skip() { skipped=$((skipped + 1)); echo "skipped: $*"; }  # counted by tests/run_all.sh
finish() {
    echo "test_prepare.sh: $passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
    [ "$failed" -eq 0 ] && exit 0 || exit 1
}
# run a command that must succeed
must() {  # label cmd...
    local label="$1"; shift
    if "$@" > "$TMP/last.log" 2>&1; then pass; else fail "$label (exit $?):"; tail -n 15 "$TMP/last.log"; fi
}
# run a command that must fail with a message matching a pattern
must_fail() {  # label pattern cmd...
    local label="$1" pat="$2"; shift 2
    "$@" > "$TMP/last.log" 2>&1
    local rc=$?
    if [ "$rc" -ne 0 ] && grep -qiE "$pat" "$TMP/last.log"; then pass
    else fail "$label: expected failure matching /$pat/, got exit $rc:"; tail -n 10 "$TMP/last.log"; fi
}

if ! python3 -c "import sentencepiece, numpy" 2>/dev/null; then
    fail "python3 with sentencepiece and numpy is needed (pip install sentencepiece numpy)"
    finish
fi

# ---------------------------------------------------------------------------------------
# text with documents separated by blank lines (also runs of 3+ newlines) and a small model
python3 - "$TMP" <<'PY' || { echo "FAIL: could not make the test text/model"; exit 1; }
import random, sys
import sentencepiece as spm
tmp = sys.argv[1]
rng = random.Random(3)
words = ("to be or not that is the question whether tis nobler in mind suffer slings and arrows "
         "of outrageous fortune take arms against a sea troubles by opposing end them die sleep "
         "no more café naïve über 東京 日本語 😀 🎉 42 1600 3.5").split()
docs = []
for d in range(60):
    lines = []
    for l in range(rng.randint(1, 5)):
        lines.append(rng.choice(["", "  ", "\t"]) * (rng.random() < 0.1) +
                     " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
    docs.append("\n".join(lines))
text = ""
for i, d in enumerate(docs):
    text += d
    if i + 1 < len(docs):
        text += rng.choice(["\n\n"] * 8 + ["\n\n\n", "\n\n\n\n"])
text += "\n"
open(f"{tmp}/tiny.txt", "w", encoding="utf-8", newline="").write(text)
spm.SentencePieceTrainer.train(
    input=f"{tmp}/tiny.txt", model_prefix=f"{tmp}/tiny", model_type="bpe", vocab_size=400,
    byte_fallback=True, split_digits=True, normalization_rule_name="identity",
    add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    character_coverage=0.995, hard_vocab_limit=False, num_threads=1, minloglevel=2)
PY

# checker: python3 check.py OUT_DIR NAME TEXT MODEL SHARD_TOKENS VAL_FRACTION [MAX_TOKENS|-] [stream]
# "stream": the documents are the text split at "\n\n" (what the fake dataset below yields)
# and val is every (1/f)-th of them; otherwise the local-file rules of prepare.py.
cat > "$TMP/check.py" <<'PY'
import glob, math, os, re, struct, sys
import numpy as np
import sentencepiece as spm
out_dir, name, text_path, model, shard_tokens, f = sys.argv[1:7]
max_tokens = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[7] != "-" else None
stream = len(sys.argv) > 8 and sys.argv[8] == "stream"
shard_tokens, f = int(shard_tokens), float(f)
sp = spm.SentencePieceProcessor(model_file=model)
V, BOS = sp.vocab_size(), sp.bos_id()
text = open(text_path, "rb").read().decode("utf-8")
# documents, computed here independently: each ends with its "\n\n" separator
docs = re.findall(r".*?\n\n|.+", text, re.S)
assert "".join(docs) == text
n_val = math.ceil(f * len(docs)) if f > 0 else 0
if f > 0:
    n_val = min(max(n_val, 1), len(docs) - 1)
order = list(range(len(docs)))  # document indices in the order val..., train...
if stream:
    docs = text.split("\n\n")
    is_val = [f > 0 and math.floor((i + 1) * f) > math.floor(i * f) for i in range(len(docs))]
    order = [i for i in range(len(docs)) if is_val[i]] + [i for i in range(len(docs)) if not is_val[i]]
    n_val = sum(is_val)
errors = []

def err(msg):
    errors.append(msg)
    print("  check failed:", msg)

def read_split(split):
    files = sorted(glob.glob(os.path.join(out_dir, f"{name}_{split}_*.bin")))
    want = [os.path.join(out_dir, f"{name}_{split}_{k:06d}.bin") for k in range(len(files))]
    if files != want:
        err(f"{split} shard names {files} are not {want}")
    parts = []
    for k, p in enumerate(files):
        raw = open(p, "rb").read()
        magic, ver, bpt, n, vocab, r0, r1, r2 = struct.unpack("<8q", raw[:64])
        want_bpt = 2 if V <= 65535 else 4
        if (magic, ver, bpt, vocab, r0, r1, r2) != (20261101, 1, want_bpt, V, 0, 0, 0):
            err(f"{p}: header {(magic, ver, bpt, n, vocab, r0, r1, r2)}")
        if len(raw) != 64 + n * bpt:
            err(f"{p}: size {len(raw)} != 64 + {n} * {bpt}")
        # full shards, except the last two, which are balanced when the tail is short
        if n > shard_tokens or (k + 2 < len(files) and n != shard_tokens) \
                or (len(files) > 1 and n < shard_tokens // 2):
            err(f"{p}: {n} tokens; shards hold {shard_tokens} (the last two at least half of that)")
        toks = np.frombuffer(raw[64:], dtype="<u2" if bpt == 2 else "<u4").astype(np.int64)
        if toks.size and toks.max() >= V:
            err(f"{p}: token {toks.max()} >= vocab {V}")
        parts.append(toks)
    return files, (np.concatenate(parts) if parts else np.zeros(0, np.int64))

def split_docs(toks, split):
    if toks.size == 0:
        return []
    if toks[0] != BOS:
        err(f"{split} does not start with BOS")
    starts = list(np.flatnonzero(toks == BOS)) + [toks.size]
    return [toks[starts[i] + 1:starts[i + 1]].tolist() for i in range(len(starts) - 1)]

vfiles, vt = read_split("val")
tfiles, tt = read_split("train")
vd, td = split_docs(vt, "val"), split_docs(tt, "train")
total = vt.size + tt.size
if max_tokens is None:
    if len(vd) != n_val:
        err(f"val has {len(vd)} documents, the rule gives ceil({f} * {len(docs)}) = {n_val}")
    if len(vd) + len(td) != len(docs):
        err(f"{len(vd)} + {len(td)} documents written, the text has {len(docs)}")
    for k, ids in enumerate(vd + td):
        if k < len(docs) and ids != sp.encode(docs[order[k]]):
            err(f"document {order[k]} is not BOS + sentencepiece's encoding of it")
            break
    decoded = "".join(sp.decode(ids) for ids in vd + td)
    if stream:  # val and train documents back in the original order
        back = [None] * len(docs)
        for k, ids in enumerate(vd + td):
            if k < len(order):
                back[order[k]] = sp.decode(ids)
        decoded = "\n\n".join(b or "" for b in back)
    if decoded != text:
        k = next((i for i, (a, b) in enumerate(zip(decoded, text)) if a != b), min(len(decoded), len(text)))
        err(f"decoded val+train differs from the text at character {k}: {decoded[k:k+30]!r} vs {text[k:k+30]!r}")
else:
    if total != max_tokens:
        err(f"--max-tokens {max_tokens}: wrote {total} tokens")
    # a prefix of the full token stream
    full = []
    for i, d in enumerate(docs):
        full += [BOS] + sp.encode(d)
    got = np.concatenate([vt, tt]).tolist()
    if got != full[:len(got)]:
        err("--max-tokens output is not a prefix of the full token stream")
print(f"  {os.path.basename(out_dir)}: {len(docs)} docs, val {len(vd)} docs / {vt.size} tokens in {len(vfiles)} shard(s), "
      f"train {len(td)} docs / {tt.size} tokens in {len(tfiles)} shard(s): {'OK' if not errors else 'FAILED'}")
sys.exit(1 if errors else 0)
PY

echo "== small model, tiny shards"
must "prepare.py on tiny.txt" $PREP --input "$TMP/tiny.txt" --tokenizer "$TMP/tiny.model" \
    --out-dir "$TMP/out1" --name tiny --shard-tokens 300 --val-fraction 0.1
cat "$TMP/last.log" | grep -E "val|train|documents" | head -n 8
must "shards of tiny.txt" python3 "$TMP/check.py" "$TMP/out1" tiny "$TMP/tiny.txt" "$TMP/tiny.model" 300 0.1
tail -n 1 "$TMP/last.log"
[ -f "$TMP/out1/tokenizer.bin" ] && pass || fail "tokenizer.bin not written by prepare.py"

# the C tokenizer loads what prepare.py wrote
mkdir -p tests/bin
if g++ -x c++ -O2 -Wall -I. tests/test_tokenizer.c -o tests/bin/test_tokenizer 2> "$TMP/build.log"; then
    must "C tokenizer_init on prepare.py's tokenizer.bin" tests/bin/test_tokenizer --load-only "$TMP/out1/tokenizer.bin"
else
    fail "build of tests/test_tokenizer.c"; cat "$TMP/build.log"
fi

echo "== options"
must "one big shard, val fraction 0.25" $PREP --input "$TMP/tiny.txt" --tokenizer "$TMP/tiny.model" \
    --out-dir "$TMP/out2" --name t2 --val-fraction 0.25
must "check val fraction 0.25" python3 "$TMP/check.py" "$TMP/out2" t2 "$TMP/tiny.txt" "$TMP/tiny.model" 100000000 0.25
must "val fraction 0" $PREP --input "$TMP/tiny.txt" --tokenizer "$TMP/tiny.model" \
    --out-dir "$TMP/out3" --name t3 --val-fraction 0 --shard-tokens 1000
must "check val fraction 0" python3 "$TMP/check.py" "$TMP/out3" t3 "$TMP/tiny.txt" "$TMP/tiny.model" 1000 0
must "max tokens" $PREP --input "$TMP/tiny.txt" --tokenizer "$TMP/tiny.model" \
    --out-dir "$TMP/out4" --name t4 --max-tokens 777 --shard-tokens 200
must "check max tokens" python3 "$TMP/check.py" "$TMP/out4" t4 "$TMP/tiny.txt" "$TMP/tiny.model" 200 0.1 777
must "tokenizer only" $PREP --tokenizer-only --tokenizer "$TMP/tiny.model" --out-dir "$TMP/out5"
if [ -f "$TMP/out5/tokenizer.bin" ] && [ -z "$(ls "$TMP/out5" | grep -v '^tokenizer.bin$')" ]; then pass
else fail "--tokenizer-only should write only tokenizer.bin: $(ls "$TMP/out5")"; fi

echo "== streamed dataset (a fake 'datasets' module yielding the documents of tiny.txt)"
mkdir -p "$TMP/fakeds/datasets"
cat > "$TMP/fakeds/datasets/__init__.py" <<'PY'
import os
def load_dataset(path, name=None, split=None, streaming=False):
    assert streaming and split == "train", (path, name, split, streaming)
    text = open(os.environ["FAKE_DATASET_TEXT"], encoding="utf-8", newline="").read()
    return ({"text": d, "id": i} for i, d in enumerate(text.split("\n\n")))
PY
must "prepare.py --dataset (fake, streamed)" env PYTHONPATH="$TMP/fakeds" FAKE_DATASET_TEXT="$TMP/tiny.txt" \
    $PREP --dataset tinystories --tokenizer "$TMP/tiny.model" --out-dir "$TMP/out6" --name st \
    --shard-tokens 250 --val-fraction 0.15 --batch-docs 7
must "check streamed val rule" python3 "$TMP/check.py" "$TMP/out6" st "$TMP/tiny.txt" "$TMP/tiny.model" 250 0.15 - stream
tail -n 1 "$TMP/last.log"
must "prepare.py --dataset --max-tokens" env PYTHONPATH="$TMP/fakeds" FAKE_DATASET_TEXT="$TMP/tiny.txt" \
    $PREP --dataset c4 --tokenizer "$TMP/tiny.model" --out-dir "$TMP/out7" --name st7 --max-tokens 500 --batch-docs 4
n7=$(python3 -c "import sys; sys.path.insert(0, 'dev/data'); import prepare, glob; print(sum(prepare.read_shard(f)[0].size for f in glob.glob('$TMP/out7/st7_*.bin')))")
[ "$n7" = "500" ] && pass || fail "--dataset with --max-tokens 500 wrote $n7 tokens"

echo "== uint32 shards for a vocabulary > 65535"
must "uint32 shards" python3 - <<'PY'
import os, sys, tempfile
import numpy as np
sys.path.insert(0, "dev/data")
import prepare
d = tempfile.mkdtemp()
w = prepare.ShardWriter(d, "big", "train", 5, 70000)
w.add([1, 69999, 65536, 3])
w.add([1, 65535, 0, 7, 8])
files = w.close()
assert [os.path.basename(f) for f in files] == ["big_train_000000.bin", "big_train_000001.bin"], files
toks = np.concatenate([prepare.read_shard(f)[0] for f in files])
assert toks.dtype == np.dtype("<u4") and toks.tolist() == [1, 69999, 65536, 3, 1, 65535, 0, 7, 8], toks
raw = open(files[0], "rb").read()
assert np.frombuffer(raw[:64], "<i8").tolist() == [20261101, 1, 4, 5, 70000, 0, 0, 0]
assert len(raw) == 64 + 5 * 4
w = prepare.ShardWriter(d, "small", "val", 10, 65535)
w.add([65534, 0])
f = w.close()[0]
assert np.frombuffer(open(f, "rb").read()[:64], "<i8").tolist() == [20261101, 1, 2, 2, 65535, 0, 0, 0]
print("uint32/uint16 shard checks OK")
PY

echo "== errors"
must_fail "missing input" "not found" $PREP --input "$TMP/nope.txt" --tokenizer "$TMP/tiny.model" --out-dir "$TMP/e1"
must_fail "missing tokenizer" "not found" $PREP --input "$TMP/tiny.txt" --tokenizer "$TMP/nope.model" --out-dir "$TMP/e2"
must_fail "two sources" "exactly one source" $PREP --input "$TMP/tiny.txt" --dataset tinystories --out-dir "$TMP/e3"
must_fail "no source" "exactly one source" $PREP --tokenizer "$TMP/tiny.model" --out-dir "$TMP/e4"
printf '\xff\xfe not utf8' > "$TMP/bad.txt"
must_fail "non-UTF-8 input" "not valid UTF-8" $PREP --input "$TMP/bad.txt" --tokenizer "$TMP/tiny.model" --out-dir "$TMP/e5"
# downloads: offline they must fail with a clear message; online they may succeed
for ds in tinyshakespeare tinystories; do
    if $PREP --dataset $ds --tokenizer "$TMP/tiny.model" --out-dir "$TMP/dl_$ds" --max-tokens 2000 > "$TMP/dl.log" 2>&1; then
        echo "  --dataset $ds worked (online)"; pass
    elif grep -qE "could not download|could not open the dataset|pip install datasets" "$TMP/dl.log"; then
        echo "  --dataset $ds offline: $(grep -m1 error "$TMP/dl.log")"; pass
    else
        fail "--dataset $ds failed without a clear message:"; tail -n 10 "$TMP/dl.log"
    fi
done
# the default tokenizer: ../shared/data/llama2_tokenizer.model or data/llama2_tokenizer.model
if [ -f "$SHARED/llama2_tokenizer.model" ] || [ -f data/llama2_tokenizer.model ]; then
    must "default tokenizer found" $PREP --tokenizer-only --out-dir "$TMP/e6"
else
    must_fail "no default tokenizer" "no SentencePiece tokenizer model given" $PREP --tokenizer-only --out-dir "$TMP/e6"
fi

echo "== --train-tokenizer: a BPE model trained on the train split only"
# 40 documents; the first 4 are val (f = 0.1) and alone use the letters j, q, x, z (in words
# repeated many times, which BPE would merge if it saw them); the train documents never do
python3 - "$TMP" <<'PY' || fail "could not write tt.txt"
import random, sys
rng = random.Random(5)
train_words = ("the king is dead long live the king my lord shall we go now to bed good night sweet "
               "prince and flights of angels sing thee to thy rest café über 東京 😀 12 345").split()
val_words = "jazz quiz xylophone jinx zephyr quixotic".split()
docs = []
for d in range(40):
    words = val_words if d < 4 else train_words
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) for _ in range(rng.randint(2, 6))]
    docs.append("\n".join(lines) + "\n\n")
open(f"{sys.argv[1]}/tt.txt", "w", encoding="utf-8", newline="").write("".join(docs))
PY
must "prepare.py --train-tokenizer 320" $PREP --input "$TMP/tt.txt" --train-tokenizer 320 --out-dir "$TMP/tt1" --name tt
grep -E "trained|val  :|train:" "$TMP/last.log" | sed 's/^/  /'
must "check --train-tokenizer shards (BOS + encoding, val+train decode to the text)" \
    python3 "$TMP/check.py" "$TMP/tt1" tt "$TMP/tt.txt" "$TMP/tt1/tokenizer.model" 100000000 0.1
tail -n 1 "$TMP/last.log"
must "trained tokenizer: vocab, bytes, train-only, train shard decodes to the train text" python3 - "$TMP" <<'PY'
import glob, re, struct, sys
import numpy as np
import sentencepiece as spm
tmp = sys.argv[1]
sp = spm.SentencePieceProcessor(model_file=f"{tmp}/tt1/tokenizer.model")
assert sp.vocab_size() == 320, sp.vocab_size()
hdr = struct.unpack("<8i", open(f"{tmp}/tt1/tokenizer.bin", "rb").read(32))
assert hdr[:6] == (20261104, 1, 320, 1, 2, 0), f"tokenizer.bin header {hdr}"
pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
assert all(f"<0x{b:02X}>" in pieces for b in range(256)), "byte fallback pieces missing"
leak = [p for p in pieces if not p.startswith("<") and re.search("[jqxz]", p)]
assert not leak, f"pieces from the val text: {leak}"
enc = sp.encode("jazz quiz", out_type=str)
assert [p for p in enc if re.search("[jqxz]", p) and not p.startswith("<0x")] == [] \
    and enc.count("<0x7A>") == 3 and enc.count("<0x6A>") == 1, enc  # j, q, z only as bytes
docs = re.findall(r".*?\n\n|.+", open(f"{tmp}/tt.txt", encoding="utf-8").read(), re.S)
def docs_of(split):
    toks = np.concatenate([np.frombuffer(open(f, "rb").read()[64:], "<u2")
                           for f in sorted(glob.glob(f"{tmp}/tt1/tt_{split}_*.bin"))]).tolist()
    cut = [i for i, t in enumerate(toks) if t == 1] + [len(toks)]
    return [sp.decode(toks[cut[i] + 1:cut[i + 1]]) for i in range(len(cut) - 1)]
assert "".join(docs_of("train")) == "".join(docs[4:]), "train shard does not decode to the train documents"
assert "".join(docs_of("val")) == "".join(docs[:4]), "val shard does not decode to the val documents"
assert any(pieces[i] == "▁king" for i in range(len(pieces))), "no '▁king' piece: was it trained?"
print("trained tokenizer checks OK")
PY
must "prepare.py --train-tokenizer again" $PREP --input "$TMP/tt.txt" --train-tokenizer 320 --out-dir "$TMP/tt2" --name tt
if cmp -s "$TMP/tt1/tokenizer.model" "$TMP/tt2/tokenizer.model" && cmp -s "$TMP/tt1/tt_train_000000.bin" "$TMP/tt2/tt_train_000000.bin" \
    && cmp -s "$TMP/tt1/tokenizer.bin" "$TMP/tt2/tokenizer.bin"; then pass
else fail "--train-tokenizer is not deterministic: two runs wrote different models or shards"; fi
if [ -x tests/bin/test_tokenizer ]; then
    must "C tokenizer_init on the trained tokenizer.bin" tests/bin/test_tokenizer --load-only "$TMP/tt1/tokenizer.bin"
fi
must "prepare.py tt.txt with a given tokenizer" $PREP --input "$TMP/tt.txt" --tokenizer "$TMP/tiny.model" --out-dir "$TMP/tt3" --name tt
must "val is the same text with the trained and the given tokenizer" python3 - "$TMP" <<'PY'
import glob, sys
import numpy as np
import sentencepiece as spm
tmp = sys.argv[1]
def val_text(d, model):
    sp = spm.SentencePieceProcessor(model_file=model)
    toks = np.concatenate([np.frombuffer(open(f, "rb").read()[64:], "<u2") for f in sorted(glob.glob(f"{d}/tt_val_*.bin"))])
    return sp.decode([t for t in toks.tolist() if t != sp.bos_id()])
a, b = val_text(f"{tmp}/tt1", f"{tmp}/tt1/tokenizer.model"), val_text(f"{tmp}/tt3", f"{tmp}/tiny.model")
assert a == b and "jazz" in a and "king" not in a, (a[:80], b[:80])
PY
must_fail "--train-tokenizer with --tokenizer" "without --tokenizer" \
    $PREP --input "$TMP/tt.txt" --train-tokenizer 320 --tokenizer "$TMP/tiny.model" --out-dir "$TMP/e7"
must_fail "--train-tokenizer with a streamed dataset" "needs the whole text" \
    $PREP --dataset tinystories --train-tokenizer 320 --out-dir "$TMP/e8"
must_fail "--train-tokenizer too small" "at least 260" $PREP --input "$TMP/tt.txt" --train-tokenizer 100 --out-dir "$TMP/e9"
must_fail "--train-tokenizer too large for the text" "smaller V" \
    $PREP --input "$TMP/tt.txt" --train-tokenizer 20000 --out-dir "$TMP/e10"

echo "== --dataset kjv"
# without the bible program: a clear error naming the package and --input
mkdir -p "$TMP/nobin"
must_fail "--dataset kjv without bible" "apt-get install bible-kjv.*|--input FILE" \
    env PATH="$TMP/nobin" "$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')" \
    dev/data/prepare.py --dataset kjv --out-dir "$TMP/nokjv"
grep -q "apt-get install bible-kjv" "$TMP/last.log" && grep -q -- "--input FILE" "$TMP/last.log" && pass \
    || fail "the no-bible error should name 'apt-get install bible-kjv' and --input FILE: $(cat "$TMP/last.log")"
if command -v bible > /dev/null 2>&1; then
    must "prepare.py --dataset kjv --train-tokenizer 4096" $PREP --dataset kjv --out-dir "$TMP/kjv" --train-tokenizer 4096
    grep -E "^bible:|trained|val  :|train:" "$TMP/last.log" | sed 's/^/  /'
    must "check kjv shards" python3 "$TMP/check.py" "$TMP/kjv" kjv "$TMP/kjv/kjv.txt" "$TMP/kjv/tokenizer.model" 100000000 0.1
    tail -n 1 "$TMP/last.log"
    # the chapters against bible's other output format (-f: one line per verse, "Gen1:1 text")
    bible -f "gen1:1-rev22:21" > "$TMP/kjv_f.txt" 2>/dev/null
    must "kjv.txt: 1189 chapters, headings, verses equal to 'bible -f'" python3 - "$TMP" <<'PY'
import re, sys
tmp = sys.argv[1]
text = open(f"{tmp}/kjv/kjv.txt", encoding="utf-8").read()
chapters = text.split("\n\n")
assert chapters[-1] == "" and text.endswith("Amen.\n\n"), repr(text[-40:])
chapters = chapters[:-1]
assert len(chapters) == 1189, len(chapters)
heads = [c.split("\n", 1)[0] for c in chapters]
assert heads[0] == "Genesis 1" and heads[-1] == "Revelation 22" and "Song of Solomon 8" in heads, heads[:3]
assert all(re.fullmatch(r"(?:[1-3] )?[A-Z][A-Za-z ]+ [0-9]+", h) for h in heads)
verses = [v for c in chapters for v in c.split("\n")[1:]]
ref = [" ".join(line.split(" ", 1)[1].split()) for line in open(f"{tmp}/kjv_f.txt", encoding="utf-8") if line.strip()]
assert len(verses) == len(ref) == 31102, (len(verses), len(ref))
bad = [(a, b) for a, b in zip(verses, ref) if a != b]
assert not bad, bad[:2]
assert verses[0] == "In the beginning God created the heaven and the earth."
print(f"kjv.txt: {len(chapters)} chapters, {len(verses)} verses, equal to bible -f")
PY
    tail -n 1 "$TMP/last.log"
    must "prepare.py --dataset kjv again (cached text)" $PREP --dataset kjv --out-dir "$TMP/kjv" --train-tokenizer 4096
    grep -q "using the cached" "$TMP/last.log" && pass || fail "the second --dataset kjv did not use the cached kjv.txt"
else
    skip "--dataset kjv: no 'bible' program (sudo apt-get install bible-kjv)"
fi

# ---------------------------------------------------------------------------------------
if [ -f "$SHARED/llama2_tokenizer.model" ] && [ -f "$SHARED/tinyshakespeare.txt" ]; then
    echo "== LLaMA-2 tokenizer on all of TinyShakespeare"
    must "prepare.py tinyshakespeare" $PREP --input "$SHARED/tinyshakespeare.txt" --name tinyshakespeare \
        --tokenizer "$SHARED/llama2_tokenizer.model" --out-dir "$TMP/ts" --shard-tokens 100000
    must "check tinyshakespeare" python3 "$TMP/check.py" "$TMP/ts" tinyshakespeare "$SHARED/tinyshakespeare.txt" \
        "$SHARED/llama2_tokenizer.model" 100000 0.1
    tail -n 1 "$TMP/last.log"
else
    skip "the LLaMA-2 tokenizer on TinyShakespeare: no ../shared/data/llama2_tokenizer.model or tinyshakespeare.txt"
fi

finish
