#!/usr/bin/env python3
"""dev/test_bench_gpu_vs_torch.py: checks of dev/bench_gpu_vs_torch.py's logic on the CPU (about 20 s).

  (a) the parameter count it asserts equals llama_config.h's dims counted here by hand: 1b with
      HF's ffn padded to the GPU build's stored 5504 (1 345 423 360) and at the model's 5461
      (1 339 082 752, train_llama's "parameters" line); built on the meta device;
  (b) the tiny config trains end to end on the CPU (--device cpu): the pure bf16 and AMP rows
      report tokens/s = B T / step time, a peak memory, a first loss near ln V (random init),
      the parameter count 4 194 624 (tiny, ffn 176 stored as 192), and the ratio to train_llama's
      tokens/s read from a log.txt (the median of its step lines after the first two);
  (c) a compile row past --budget-s is killed and skipped with the reason, and the eager rows still run;
  (d) without a GPU (CUDA_VISIBLE_DEVICES="") and without torch (a stand-in package that fails
      to import) it prints why, measures nothing and exits 0; bad flags exit non-zero.
It skips (exit 0, with the reason) only when torch or transformers is not importable here.
Prints "N passed, N failed"; exits non-zero on a failure.
    python3 dev/test_bench_gpu_vs_torch.py
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from checks import Checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "dev", "bench_gpu_vs_torch.py")

suite = Checks("test_bench_gpu_vs_torch")
check = suite.check
try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as e:
    suite.skip("the PyTorch peer's checks: torch or transformers not importable (%s)" % e)
    suite.finish()


def bench(args, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="2")
    e.update(env or {})
    p = subprocess.run([sys.executable, BENCH] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e)
    return p.returncode, p.stdout


tmp = tempfile.mkdtemp(prefix="test_bench_gpu_vs_torch_")

# ---- (a) the parameter count, by hand -----------------------------------------------------------
V, d, L = 32000, 2048, 24
for ffn, mode in ((5504, "pad"), (5461, "hf")):
    want = 2 * V * d + L * (4 * d * d + 3 * d * ffn + 2 * d) + d  # embed + head, q k v o, gate up down, 2 norms; final norm
    out = os.path.join(tmp, "p_%s.json" % mode)
    rc, txt = bench(["-c", "1b", "--params-only", "--ffn", mode, "--json", out])
    j = json.load(open(out)) if os.path.exists(out) else {}
    check(rc == 0 and j.get("params") == want and ("has %d parameters" % want) in txt,
          "(a) 1b, HF intermediate_size %d: LlamaForCausalLM has %d parameters, as counted here (got %s)"
          % (ffn, want, j.get("params")))
check(1345423360 == 2 * V * d + L * (4 * d * d + 3 * d * 5504 + 2 * d) + d and
      1339082752 == 2 * V * d + L * (4 * d * d + 3 * d * 5461 + 2 * d) + d, "(a) the two 1b counts: 1 345 423 360 and 1 339 082 752")

# ---- (b) the tiny config on the CPU ---------------------------------------------------------------
log = os.path.join(tmp, "log.txt")
with open(log, "w") as f:  # a train_llama log: its median tok/s over the step lines after the first two is 3000
    f.write("# grass.c config=tiny\n")
    for i, tok in enumerate([100.0, 200.0, 5000.0, 3000.0, 1000.0, 4000.0, 2000.0]):
        f.write("step=%d loss=10.3 lr=1e-4 grad_norm=1.0 tok_per_s=%.1f mfu=0.1 mfu_exec=0.1 mem_gib=1.0 dt_ms=10 comm_mib=0\n"
                % (i, tok))
        if i == 3:
            f.write("step=%d val_loss=10.3 val_ppl=29000\n" % i)
out = os.path.join(tmp, "tiny.json")
B, T = 2, 64
rc, txt = bench(["--device", "cpu", "-c", "tiny", "-b", str(B), "-t", str(T), "--warmup", "1", "--steps", "2",
                 "--rows", "bf16,amp,bf16_compile", "--budget-s", "3", "--ours-log", "adamw=" + log,
                 "--ours-tok-s", "grass=6000", "--json", out])
check(rc == 0, "(b) the CPU tiny run exits 0%s" % ("" if rc == 0 else ": " + txt[-600:]))
j = json.load(open(out)) if os.path.exists(out) else {"rows": []}
rows = {r["row"]: r for r in j.get("rows", [])}
tiny_params = 2 * 32000 * 64 + 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 192 + 2 * 64) + 64
check(j.get("measured") is True and j.get("params_expected") == tiny_params == 4194624 and j.get("ffn_run") == 192,
      "(b) tiny: ffn 176 stored as 192, %d parameters (counted here: %d)" % (j.get("params_expected", -1), tiny_params))
check(j.get("ours_tok_s") == {"adamw": 3000.0, "grass": 6000.0},
      "(b) train_llama's tok/s: the log's median after two steps (3000) and the flag's 6000 (%s)" % j.get("ours_tok_s"))
for name in ("bf16", "amp"):
    r = rows.get(name, {})
    ok = r.get("status") == "ok"
    check(ok and r["params"] == tiny_params, "(b) %s: ran, with %s parameters" % (name, r.get("params")))
    if not ok:
        continue
    med = sorted(r["step_ms_all"])[(len(r["step_ms_all"]) - 1) // 2] if len(r["step_ms_all"]) % 2 else \
        sum(sorted(r["step_ms_all"])[len(r["step_ms_all"]) // 2 - 1:len(r["step_ms_all"]) // 2 + 1]) / 2
    check(len(r["step_ms_all"]) == 2 and abs(r["step_ms"] - med) < 1e-9 and
          abs(r["tok_s"] - B * T / (med / 1e3)) < 1e-6 * r["tok_s"],
          "(b) %s: tokens/s %.0f = B T / median step (%.1f ms)" % (name, r["tok_s"], med))
    check(r["peak_gib"] > 0, "(b) %s: a peak memory (%.2f GiB, %s)" % (name, r["peak_gib"], r["peak_kind"]))
    check(abs(r["losses"][0] - math.log(32000)) < 0.1, "(b) %s: first loss %.4f near ln 32000 = %.4f (random init)"
          % (name, r["losses"][0], math.log(32000)))
    line = [x for x in j.get("table", "").splitlines() if x.startswith("| " + r["text"])]
    want = "".join(" %.2f |" % (v / r["tok_s"]) for v in j["ours_tok_s"].values())  # the columns in the JSON's order
    check(len(line) == 1 and line[0].endswith(want), "(b) %s: the table's ratios are train_llama's tok/s over the row's (%s)"
          % (name, want.strip()))
check(rows.get("bf16", {}).get("adamw") == "fused" or "not fused" in rows.get("bf16", {}).get("adamw", ""),
      "(b) the AdamW kind is reported (%s)" % rows.get("bf16", {}).get("adamw"))

# ---- (c) the compile budget -----------------------------------------------------------------------
r = rows.get("bf16_compile", {})
check(r.get("status") == "skipped" and "did not finish within the 3 s left of --budget-s" in r.get("reason", "") and
      "skipped: " in txt, "(c) bf16_compile past a 3 s budget: its child killed, the row skipped with the reason (%s)"
      % r.get("reason"))

# ---- (d) no GPU, no torch, bad flags ------------------------------------------------------------
out = os.path.join(tmp, "nogpu.json")
rc, txt = bench(["-c", "1b", "--json", out], env={"CUDA_VISIBLE_DEVICES": ""})
j = json.load(open(out)) if os.path.exists(out) else {}
check(rc == 0 and "no GPU here" in txt and "nothing measured" in txt and j.get("measured") is False,
      "(d) no GPU: says so, measures nothing, exits 0 (%s)" % txt.strip().splitlines()[-1:])
fake = os.path.join(tmp, "fake")
os.makedirs(os.path.join(fake, "torch"))
with open(os.path.join(fake, "torch", "__init__.py"), "w") as f:
    f.write("raise ImportError('stand-in: no torch on this machine')\n")
rc, txt = bench(["-c", "1b"], env={"PYTHONPATH": fake})
check(rc == 0 and "not importable" in txt and "nothing measured" in txt, "(d) no torch: says so, exits 0 (%s)"
      % txt.strip().splitlines()[-1:])
rc, txt = bench(["--rows", "bf16,fp8"])
check(rc != 0 and "unknown row 'fp8'" in txt, "(d) an unknown row: a clear error, non-zero exit")
rc, txt = bench(["-c", "nosuch"])
check(rc != 0 and "unknown config 'nosuch'" in txt, "(d) an unknown config: a clear error, non-zero exit")
rc, txt = bench(["--ours-log", "adamw=" + os.path.join(tmp, "missing", "log.txt")])
check(rc != 0 and "cannot open" in txt, "(d) a missing log: a clear error, non-zero exit")

shutil.rmtree(tmp, ignore_errors=True)
suite.finish()
