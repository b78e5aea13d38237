#!/usr/bin/env bash
# tests/test_tokenizer.sh: tokenizer.h (C) against the sentencepiece library (Python).
#
#   bash tests/test_tokenizer.sh            (from anywhere; needs g++, python3, sentencepiece)
#
# (a) when ../shared/data/llama2_tokenizer.model exists (next to the repository): export it
#     to tokenizer.bin, have sentencepiece encode and decode EVERY line of
#     ../shared/data/tinyshakespeare.txt (unit: one line, the file split at '\n', newline
#     excluded), the whole file as one string, special strings (empty, spaces, unicode, emoji,
#     invalid UTF-8, ...), random strings and random id sequences; then tests/bin/test_tokenizer
#     checks that tokenizer.h gives identical ids and bytes.
# (b) always: write a few KB of varied text, train a small BPE SentencePiece model on it with
#     LLaMA-2's settings (byte fallback, identity normalizer, dummy prefix, split digits), and
#     run the same comparison on it.
# (c) always: bad tokenizer files (missing, wrong magic, wrong version, truncated, trailing
#     bytes) must make tokenizer_init exit 1 with a message naming the file.
# Ends with "test_tokenizer.sh: N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
SHARED="$ROOT/../shared/data"

passed=0
failed=0
skipped=0
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
pass() { passed=$((passed + 1)); }
skip() { skipped=$((skipped + 1)); echo "skipped: $*"; }  # counted by tests/run_all.sh
finish() {
    echo "test_tokenizer.sh: $passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
    [ "$failed" -eq 0 ] && exit 0 || exit 1
}

if ! python3 -c "import sentencepiece, numpy" 2>/dev/null; then
    fail "python3 with sentencepiece and numpy is needed (pip install sentencepiece numpy)"
    finish
fi

mkdir -p tests/bin
if ! g++ -x c++ -O2 -Wall -I. tests/test_tokenizer.c -o tests/bin/test_tokenizer; then
    fail "build of tests/test_tokenizer.c"
    finish
fi

# ---------------------------------------------------------------------------------------
# reference maker: python3 make_ref.py MODEL TEXT OUT
cat > "$TMP/make_ref.py" <<'PY'
import random, sys
import sentencepiece as spm

model, text_path, out_path = sys.argv[1:4]
sp = spm.SentencePieceProcessor(model_file=model)
V = sp.vocab_size()
raw = open(text_path, "rb").read()
text = raw.decode("utf-8")
rng = random.Random(1234)
out = open(out_path, "w")
n_records = 0

def hexs(b):
    return b.hex() if b else "-"

def dec_field(ids, inp_bytes):
    d = sp.decode(ids).encode("utf-8")
    return "=" if d == inp_bytes else hexs(d)

def record(kind, inp_field, ids, dec):
    global n_records
    out.write(f"{kind} {inp_field} {len(ids)}{''.join(' ' + str(i) for i in ids)} {dec}\n")
    n_records += 1

# every line of the file (split at '\n', like the C side), encoded as a batch
lines = text.split("\n")
out.write(f"# {len(lines)} lines of {text_path}\n")
for line, ids in zip(lines, sp.encode(lines)):
    record("E", "L", ids, dec_field(ids, line.encode("utf-8")))
# the whole file as one string
ids = sp.encode(text)
record("E", "F", ids, dec_field(ids, raw))

# special strings
specials = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "a", "A", "hello", "Hello, world!",
    " leading space", "   three leading spaces", "trailing spaces   ", "multiple    spaces   inside",
    "tab\tseparated\tvalues", "line one\nline two\n", "\r\nwindows\r\nnewlines\r\n",
    "héllo wörld, café naïve façade Straße São Paulo jalapeño crème brûlée",
    "Ωμέγα ελληνικά, Русский текст, שלום עולם, مرحبا بالعالم",
    "日本語のテキストです。東京タワー", "中文字符测试，你好世界！", "한국어 텍스트",
    "emoji 😀🎉🚀 skin 👍🏽 family 👨‍👩‍👧 flag 🇫🇷", "🧬🦀🪐", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙",
    "combining e\u0301 a\u0308 and zero\u200bwidth\u200djoiner", "\u2581 literal lower block ▁▁ x",
    "<s> </s> <unk> <0x0A> <pad>", " \u2047 ", "\ufffd replacement \ufffd", "nul\x00byte", "\x00",
    "digits 0123456789 3.14159 1,000,000 2024-11-29 x86_64", "  12  345  ", "mixed123abc456",
    "ALL CAPS SHOUTING", "CamelCaseIdentifiersHere", "snake_case_identifier = value;",
    "def f(x):\n    return x ** 2  # comment\n", "{\"json\": [1, 2, 3], \"ok\": true}",
    "a" * 1000, " " * 100, "ab" * 500, "\n" * 50, "é" * 300, "😀" * 100,
    "\u00a0non-breaking\u00a0space", "\u3000ideographic space", "\u2028line separator\u2029",
    "\U0010FFFF\U000E0001\uE000\uFFFF", "z\u0303\u0324\u0325\u0326\u0327\u0328",
]
for s in specials:
    b = s.encode("utf-8")
    ids = sp.encode(s)
    record("E", hexs(b), ids, dec_field(ids, b))
for s in ["", "hello", " x", "😀 hi"]:
    b = s.encode("utf-8")
    ids = sp.encode(s, add_bos=True)
    record("B", hexs(b), ids, dec_field(ids, b))
# invalid UTF-8 input: sentencepiece turns each bad byte into U+FFFD
for b in [b"\xff", b"abc\xff def", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82 x", b"\xf0\x9f\x98",
          b"\xed\xa0\x80 surrogate", b"\xc0\x80 overlong", b"\xf4\x90\x80\x80 too big", b"\x80\x80\x80",
          b"ok \xf8\x88\x80\x80\x80 five", b"caf\xe9 latin-1"]:
    ids = sp.encode(b)
    record("E", hexs(b), ids, dec_field(ids, b))

# random strings
alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3
            + list(" " * 30) + list("\t\n.,;:!?'\"-()[]{}<>/\\@#$%^&*_+=|~`")
            + list("éèêëàâäôöûüçñßøåæœÉÀÇÑ") + list("日本語中文字東京你好世界한국어")
            + ["😀", "🎉", "🚀", "👍🏽", "👨‍👩‍👧", "▁", "\u2047", "\ufffd", "\u00a0", "\x00"])
for k in range(400):
    n = rng.randint(0, 60)
    chars = []
    for _ in range(n):
        r = rng.random()
        if r < 0.9:
            chars.append(rng.choice(alphabet))
        else:  # any code point but surrogates
            cp = rng.randint(1, 0x10FFFF)
            while 0xD800 <= cp < 0xE000:
                cp = rng.randint(1, 0x10FFFF)
            chars.append(chr(cp))
    s = "".join(chars)
    b = s.encode("utf-8")
    ids = sp.encode(s)
    record("E", hexs(b), ids, dec_field(ids, b))

# decode-only: crafted and random id sequences
controls = [i for i in range(V) if sp.is_control(i)]
unks = [i for i in range(V) if sp.is_unknown(i)]
normals = [i for i in range(V) if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))]
byte_id = {}
for i in range(V):
    if sp.is_byte(i):
        byte_id[int(sp.id_to_piece(i)[3:5], 16)] = i
ws = sp.piece_to_id("\u2581")
ws = [ws] if ws not in unks else []
ws_pieces = [i for i in normals if sp.id_to_piece(i).startswith("\u2581")]
bos = sp.bos_id()

def B(bs):
    return [byte_id[x] for x in bs] if all(x in byte_id for x in bs) else []

crafted = [
    [], controls[:1], unks[:1], ws, ws + ws, ws + ws_pieces[:1], controls[:1] + ws + ws_pieces[:1],
    ws + controls[:1] + ws_pieces[:1], ws_pieces[:1] + ws_pieces[:1], controls + ws_pieces[:1] + controls,
    B(b"\xc3\xa9"), B(b"\xf0\x9f\x98\x80"), B(b"\xf0\x9f") + controls[:1] + B(b"\x98\x80"),
    B(b"\xe2\x82"), B(b"\xe2\x82") + ws_pieces[:1], B(b"\xc0\x80"), B(b"\xe0\x80\x80"),
    B(b"\xed\xa0\x80"), B(b"\xf4\x90\x80\x80"), B(b"\xf8\x88"), B(b"\xff\xfe"), B(b"\x80"),
    B(b"\xef\xbf\xbd"), B(b"\x00"), B(b"a\x00b"), B(b"\x0a") + ws_pieces[:1], ws + B(b"\xc3\xa9"),
    B(b"\xe2") + unks[:1] + B(b"\x82\xac"), B(b"\xe2\x82\xac\xe2\x82"), B(b" ") + ws_pieces[:1],
    unks[:1] + ws_pieces[:1], [bos] * 3 + ws_pieces[:2],
]
for ids in crafted:
    record("D", "-", ids, hexs(sp.decode(ids).encode("utf-8")))
pools = [controls, unks, list(byte_id.values()), normals, ws_pieces, ws]
for k in range(600):
    n = rng.randint(0, 25)
    ids = []
    for _ in range(n):
        pool = rng.choices(pools, weights=[1, 1, 6, 6, 3, 1])[0]
        if pool:
            ids.append(rng.choice(pool))
    if rng.random() < 0.3:  # valid multi-byte characters as bytes
        ch = rng.choice(["é", "€", "😀", "日", "\u2047"]).encode("utf-8")
        at = rng.randint(0, len(ids))
        ids[at:at] = B(ch)
    record("D", "-", ids, hexs(sp.decode(ids).encode("utf-8")))
out.close()
print(f"  reference: {n_records} records from sentencepiece {spm.__version__} ({len(lines)} text lines)")
PY

# runs the C comparison; adds its counts to ours
run_c() {  # label tokenizer.bin text ref
    local label="$1" log="$TMP/c_$1.log"
    local t0=$(date +%s.%N)
    tests/bin/test_tokenizer "$2" "$3" "$4" > "$log" 2>&1
    local rc=$?
    local t1=$(date +%s.%N)
    grep -v "^  *" "$log" | head -n 40
    grep -q "^FAIL" "$log" && grep "^    " "$log" | head -n 20
    local last
    last=$(grep -E "test_tokenizer: [0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1)
    if [ -z "$last" ]; then
        fail "$label: tests/bin/test_tokenizer did not finish (exit $rc)"
        return
    fi
    local p f
    p=$(echo "$last" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
    f=$(echo "$last" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "$label: exit $rc"; fi
    awk -v a="$t0" -v b="$t1" -v l="$label" 'BEGIN { printf "  (%s: %.1f s)\n", l, b - a }'
}

# ---------------------------------------------------------------------------------------
# (a) the LLaMA-2 tokenizer on the whole of TinyShakespeare
if [ -f "$SHARED/llama2_tokenizer.model" ] && [ -f "$SHARED/tinyshakespeare.txt" ]; then
    echo "== (a) LLaMA-2 tokenizer, $SHARED/tinyshakespeare.txt"
    if python3 dev/data/export_tokenizer.py --tokenizer "$SHARED/llama2_tokenizer.model" \
            --out "$TMP/llama2.bin" --strict --quiet \
        && python3 "$TMP/make_ref.py" "$SHARED/llama2_tokenizer.model" "$SHARED/tinyshakespeare.txt" "$TMP/llama2.ref"; then
        pass
        run_c llama2 "$TMP/llama2.bin" "$SHARED/tinyshakespeare.txt" "$TMP/llama2.ref"
    else
        fail "(a) export or reference generation"
    fi
else
    skip "(a) the LLaMA-2 tokenizer on TinyShakespeare: $SHARED/llama2_tokenizer.model or tinyshakespeare.txt not found"
fi

# ---------------------------------------------------------------------------------------
# (b) a small BPE model trained here, with LLaMA-2's settings
echo "== (b) small BPE model trained on generated text"
cat > "$TMP/make_small.py" <<'PY'
import random, sys
import sentencepiece as spm
tmp = sys.argv[1]
rng = random.Random(7)
words = ("the of and to in is was for on that with as by at from his her they this be are "
         "have had not but what all were when we there can an your which their said if do will "
         "each about how up out them then she many some so these would other into has more "
         "time could two like him see number no way people my than first water been call who "
         "oil its now find long down day did get come made may part over new sound take only "
         "little work know place year live me back give most very after thing our just name").split()
accented = "café naïve façade Straße über déjà résumé jalapeño crème brûlée São Paulo Zürich Ærø señor".split()
cjk = ["日本語", "東京", "中文", "你好", "世界", "한국어", "漢字", "テキスト", "ひらがな"]
emoji = ["😀", "🎉", "🚀", "👍🏽", "❤️", "🇫🇷", "🧪"]
lines = []
for i in range(260):
    n = rng.randint(3, 14)
    toks = []
    for _ in range(n):
        r = rng.random()
        if r < 0.70:
            w = rng.choice(words)
            if rng.random() < 0.1:
                w = w.capitalize()
            toks.append(w)
        elif r < 0.80:
            toks.append(rng.choice(accented))
        elif r < 0.86:
            toks.append(rng.choice(cjk))
        elif r < 0.90:
            toks.append(rng.choice(emoji))
        else:
            toks.append(str(rng.choice([rng.randint(0, 99), rng.randint(100, 99999), 2024, 3.14159])))
    sep = rng.choice([" "] * 12 + ["  ", "   ", "\t"])
    line = sep.join(toks)
    r = rng.random()
    if r < 0.05:
        line = "   " + line
    elif r < 0.10:
        line = line + "  "
    elif r < 0.15:
        line = line + rng.choice([".", "!", "?", ",", ";"])
    lines.append(line)
    if rng.random() < 0.05:
        lines.append("")
text = "\n".join(lines) + "\n"
open(f"{tmp}/small.txt", "w", encoding="utf-8", newline="").write(text)
spm.SentencePieceTrainer.train(
    input=f"{tmp}/small.txt", model_prefix=f"{tmp}/small", model_type="bpe", vocab_size=480,
    byte_fallback=True, split_digits=True, normalization_rule_name="identity",
    add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    split_by_unicode_script=True, split_by_whitespace=True, split_by_number=True,
    max_sentencepiece_length=16, character_coverage=0.995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    hard_vocab_limit=False, num_threads=1, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=f"{tmp}/small.model")
print(f"  generated {len(text.encode())} bytes, {len(lines)} lines; trained vocab {sp.vocab_size()}")
PY
if python3 "$TMP/make_small.py" "$TMP" 2> "$TMP/train.log" \
    && python3 dev/data/export_tokenizer.py --tokenizer "$TMP/small.model" --out "$TMP/small.bin" --strict --quiet \
    && python3 "$TMP/make_ref.py" "$TMP/small.model" "$TMP/small.txt" "$TMP/small.ref"; then
    pass
    run_c small "$TMP/small.bin" "$TMP/small.txt" "$TMP/small.ref"
else
    tail -n 20 "$TMP/train.log"
    fail "(b) training, export or reference generation"
fi

# ---------------------------------------------------------------------------------------
# (c) bad tokenizer files must fail cleanly, naming the file
echo "== (c) bad tokenizer files"
expect_load_fail() {  # label file pattern
    local out rc
    out=$(tests/bin/test_tokenizer --load-only "$2" 2>&1)
    rc=$?
    if [ "$rc" -eq 1 ] && echo "$out" | grep -qF "$2" && echo "$out" | grep -qiE "$3"; then
        pass
    else
        fail "$1: expected exit 1 and a message naming '$2' and matching /$3/; got exit $rc: $out"
    fi
}
if [ -f "$TMP/small.bin" ]; then
    if tests/bin/test_tokenizer --load-only "$TMP/small.bin" > /dev/null; then pass; else fail "loading a good tokenizer.bin"; fi
    expect_load_fail missing "$TMP/nonexistent/tokenizer.bin" "prepare.py"
    python3 - "$TMP" <<'PY'
import struct, sys
t = sys.argv[1]
good = open(f"{t}/small.bin", "rb").read()
open(f"{t}/shard.bin", "wb").write(struct.pack("<8q", 20261101, 1, 2, 0, 480, 0, 0, 0))
open(f"{t}/version.bin", "wb").write(good[:4] + struct.pack("<i", 2) + good[8:])
open(f"{t}/truncated.bin", "wb").write(good[:len(good) // 2])
open(f"{t}/trailing.bin", "wb").write(good + b"\0\0\0\0")
open(f"{t}/short.bin", "wb").write(good[:10])
open(f"{t}/badvocab.bin", "wb").write(good[:8] + struct.pack("<i", -5) + good[12:])
PY
    expect_load_fail "data shard as tokenizer" "$TMP/shard.bin" "magic.*data shard"
    expect_load_fail "wrong version" "$TMP/version.bin" "version 2"
    expect_load_fail truncated "$TMP/truncated.bin" "truncated"
    expect_load_fail "trailing bytes" "$TMP/trailing.bin" "after the last piece"
    expect_load_fail "too short" "$TMP/short.bin" "too short"
    expect_load_fail "bad vocab size" "$TMP/badvocab.bin" "vocab_size"
else
    fail "(c) needs the tokenizer.bin of (b)"
fi

finish
