#!/usr/bin/env python3
"""
Export a SentencePiece model (e.g. the LLaMA-2 tokenizer.model) to tokenizer.bin, the
vocabulary file that tokenizer.h reads (format: docs/FORMATS.md, "Tokenizer").

    python dev/data/export_tokenizer.py --tokenizer ../shared/data/llama2_tokenizer.model \
        --out data/tokenizer.bin

The same function is used by prepare.py (which writes <out-dir>/tokenizer.bin next to the
shards, and has --tokenizer-only to do just this).

Besides pieces and scores, the model file holds the normalizer and trainer settings that
decide how text is encoded. tokenizer.h implements the LLaMA-2 settings (identity
normalization, a dummy "▁" prefix, spaces escaped as "▁", no extra-whitespace removal,
BPE, byte fallback). The model file is read here with a small protobuf reader (no protobuf
package needed) and every setting that tokenizer.h would not reproduce is reported, so that
a mismatch is never silent.
"""
import argparse
import os
import struct
import sys

TOKENIZER_MAGIC = 20261104
TOKENIZER_VERSION = 1

# SentencePiece piece types (ModelProto.SentencePiece.Type)
T_NORMAL, T_UNKNOWN, T_CONTROL, T_USER_DEFINED, T_UNUSED, T_BYTE = 1, 2, 3, 4, 5, 6
DEFAULT_UNK_SURFACE = " \u2047 "


# ----------------------------------------------------------------------------------------
# a minimal protobuf wire-format reader, enough for sentencepiece's ModelProto

def _varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """yields (field_number, wire_type, value); value is int for varints/fixed, bytes for LEN"""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val = buf[pos:pos + 8]
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val = buf[pos:pos + n]
            if len(val) != n:
                raise ValueError("truncated length-delimited field")
            pos += n
        elif wt == 5:
            val = buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        yield num, wt, val


def read_model_proto(path):
    """Returns dict(pieces=[(piece, score, type)], trainer={...}, normalizer={...})."""
    with open(path, "rb") as f:
        buf = f.read()
    pieces = []
    trainer = {"model_type": 1, "byte_fallback": False, "treat_whitespace_as_suffix": False,
               "unk_surface": DEFAULT_UNK_SURFACE}
    normalizer = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
                  "remove_extra_whitespaces": True, "escape_whitespaces": True}
    has_denormalizer = False
    for num, wt, val in _fields(buf):
        if num == 1 and wt == 2:
            piece, score, ptype = b"", 0.0, T_NORMAL
            for n2, w2, v2 in _fields(val):
                if n2 == 1:
                    piece = v2
                elif n2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif n2 == 3:
                    ptype = v2
            pieces.append((piece.decode("utf-8"), score, ptype))
        elif num == 2 and wt == 2:
            for n2, w2, v2 in _fields(val):
                if n2 == 3:
                    trainer["model_type"] = v2
                elif n2 == 35:
                    trainer["byte_fallback"] = bool(v2)
                elif n2 == 24:
                    trainer["treat_whitespace_as_suffix"] = bool(v2)
                elif n2 == 44:
                    trainer["unk_surface"] = v2.decode("utf-8")
        elif num == 3 and wt == 2:
            for n2, w2, v2 in _fields(val):
                if n2 == 1:
                    normalizer["name"] = v2.decode("utf-8")
                elif n2 == 2:
                    normalizer["precompiled_charsmap"] = v2
                elif n2 == 3:
                    normalizer["add_dummy_prefix"] = bool(v2)
                elif n2 == 4:
                    normalizer["remove_extra_whitespaces"] = bool(v2)
                elif n2 == 5:
                    normalizer["escape_whitespaces"] = bool(v2)
        elif num == 5 and wt == 2:
            has_denormalizer = len(val) > 0
    return {"pieces": pieces, "trainer": trainer, "normalizer": normalizer,
            "has_denormalizer": has_denormalizer}


def compatibility_problems(model):
    """Settings of this model that tokenizer.h does not reproduce (empty list: exact)."""
    t, n = model["trainer"], model["normalizer"]
    probs = []
    if t["model_type"] != 2:
        probs.append(f"model_type is {t['model_type']} (tokenizer_encode implements BPE = 2)")
    if n["precompiled_charsmap"] or n["name"] not in ("identity", ""):
        probs.append(f"normalizer '{n['name']}' is not the identity (tokenizer_encode does not "
                     "apply normalization rules such as NFKC)")
    if not n["add_dummy_prefix"]:
        probs.append("add_dummy_prefix is false (tokenizer.h assumes true)")
    if n["remove_extra_whitespaces"]:
        probs.append("remove_extra_whitespaces is true (tokenizer.h assumes false)")
    if not n["escape_whitespaces"]:
        probs.append("escape_whitespaces is false (tokenizer.h assumes true)")
    if t["treat_whitespace_as_suffix"]:
        probs.append("treat_whitespace_as_suffix is true (tokenizer.h assumes false)")
    if t["unk_surface"] != DEFAULT_UNK_SURFACE:
        probs.append(f"unk_surface is {t['unk_surface']!r} (tokenizer.h prints {DEFAULT_UNK_SURFACE!r})")
    if model["has_denormalizer"]:
        probs.append("the model has a denormalizer (tokenizer_decode does not apply it)")
    types = [p[2] for p in model["pieces"]]
    if T_USER_DEFINED in types or T_UNUSED in types:
        probs.append("the model has user-defined or unused pieces (tokenizer_encode treats them "
                     "as normal pieces)")
    has_bytes = T_BYTE in types
    if has_bytes != t["byte_fallback"]:
        probs.append("byte pieces present/absent do not agree with byte_fallback "
                     "(tokenizer.h uses byte fallback exactly when byte pieces exist)")
    return probs


def export_tokenizer(model_path, out_path, quiet=False, strict=False):
    """Writes tokenizer.bin for the SentencePiece model at model_path. Returns vocab size."""
    import sentencepiece as spm
    if not os.path.isfile(model_path):
        sys.exit(f"error: SentencePiece model '{model_path}' not found")
    sp = spm.SentencePieceProcessor(model_file=model_path)
    model = read_model_proto(model_path)
    V = sp.vocab_size()
    if len(model["pieces"]) != V:
        sys.exit(f"error: '{model_path}': parsed {len(model['pieces'])} pieces but sentencepiece "
                 f"reports {V}; the model file is not understood")
    probs = compatibility_problems(model)
    if probs:
        msg = (f"{'error' if strict else 'warning'}: '{model_path}' has settings that "
               "tokenizer.h does not reproduce, so C tokenizer_encode/decode may differ from "
               "sentencepiece (the shards written by prepare.py are not affected):\n  - "
               + "\n  - ".join(probs))
        if strict:
            sys.exit(msg)
        print(msg, file=sys.stderr)

    records = []
    max_bytes = 0
    for i in range(V):
        piece = sp.id_to_piece(i)
        score = sp.get_score(i)
        if sp.is_unknown(i):
            ptype = T_UNKNOWN
        elif sp.is_control(i):
            ptype = T_CONTROL
        elif sp.is_byte(i):
            ptype = T_BYTE
        elif sp.is_unused(i):
            ptype = T_UNUSED
        else:
            ptype = model["pieces"][i][2]  # NORMAL or USER_DEFINED
        mp, ms, mt = model["pieces"][i]
        if mp != piece or mt != ptype:
            sys.exit(f"error: '{model_path}': piece {i} is {piece!r} type {ptype} by sentencepiece "
                     f"but {mp!r} type {mt} in the file; the model file is not understood")
        b = piece.encode("utf-8")
        max_bytes = max(max_bytes, len(b))
        records.append(struct.pack("<fii", score, ptype, len(b)) + b)

    header = struct.pack("<8i", TOKENIZER_MAGIC, TOKENIZER_VERSION, V, sp.bos_id(), sp.eos_id(),
                         sp.unk_id(), max_bytes, 0)
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        for r in records:
            f.write(r)
    os.replace(tmp, out_path)
    if not quiet:
        print(f"wrote {out_path}: vocab {V}, bos {sp.bos_id()}, eos {sp.eos_id()}, "
              f"unk {sp.unk_id()}, max piece {max_bytes} bytes")
    return V


def main():
    ap = argparse.ArgumentParser(description="SentencePiece .model -> tokenizer.bin (docs/FORMATS.md)")
    ap.add_argument("--tokenizer", "-t", required=True, help="SentencePiece model file (.model)")
    ap.add_argument("--out", "-o", required=True, help="output path, e.g. data/tokenizer.bin")
    ap.add_argument("--strict", action="store_true",
                    help="fail (instead of warning) when tokenizer.h cannot reproduce the model exactly")
    ap.add_argument("--quiet", "-q", action="store_true")
    args = ap.parse_args()
    export_tokenizer(args.tokenizer, args.out, quiet=args.quiet, strict=args.strict)


if __name__ == "__main__":
    main()
