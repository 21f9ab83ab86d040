"""
Autoresearch CPU pretraining script. Single-process, single-file, numpy only.
A byte-level MLP language model over a fixed context window, trained with Adam
for a fixed time budget (prepare.BudgetClock: reference seconds), then scored by
prepare.evaluate_bpb.
Usage: uv run train.py
"""

import os
# One BLAS thread, whatever the environment says, set before numpy is imported: the budget
# counts CPU time, and a pool of BLAS threads spins while it waits (on 2 busy cores, a small
# step's median CPU time 4x one thread's); the matrices are small, so one thread is as fast.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import math
import resource
import sys
import time

import numpy as np

from prepare import MAX_SEQ_LEN, TIME_BUDGET, BudgetClock, Tokenizer, load_split, evaluate_bpb

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model architecture
CONTEXT = 8             # bytes of context the model reads (at most MAX_SEQ_LEN)
EMBED_DIM = 16          # embedding size per context byte
HIDDEN_DIM = 256        # width of each hidden layer
DEPTH = 1               # number of hidden layers

# Optimization
BATCH_SIZE = 128        # examples per optimizer step
LEARNING_RATE = 0.001   # Adam learning rate
ADAM_BETAS = (0.9, 0.99) # Adam beta1, beta2
WEIGHT_DECAY = 0.0      # decoupled weight decay on matrices
WARMUP_RATIO = 0.0      # fraction of time budget for LR warmup
WARMDOWN_RATIO = 0.5    # fraction of time budget for LR warmdown
FINAL_LR_FRAC = 0.0     # final LR as fraction of initial
SEED = 42

NOMINAL_PEAK_FLOPS = 1e11 # a nominal 100 GFLOP/s CPU, the reference for mfu_percent

# ---------------------------------------------------------------------------
# Model: embeddings -> DEPTH x (linear + ReLU) -> linear -> logits, manual backprop
# ---------------------------------------------------------------------------

def init_params(rng, vocab_size):
    params = {"emb": rng.normal(0, 1.0, (vocab_size, EMBED_DIM))}
    fan_in = CONTEXT * EMBED_DIM
    for i in range(DEPTH):
        params[f"w{i}"] = rng.normal(0, math.sqrt(2.0 / fan_in), (fan_in, HIDDEN_DIM))
        params[f"b{i}"] = np.zeros(HIDDEN_DIM)
        fan_in = HIDDEN_DIM
    params["w_out"] = rng.normal(0, 1.0 / math.sqrt(fan_in), (fan_in, vocab_size)) * 0.5
    params["b_out"] = np.zeros(vocab_size)
    return {k: v.astype(np.float32) for k, v in params.items()}


def forward(params, x):
    """x: (B, CONTEXT) byte ids -> logits (B, V) and the activations backward needs."""
    h = params["emb"][x].reshape(len(x), -1)
    acts = [h]
    for i in range(DEPTH):
        h = np.maximum(h @ params[f"w{i}"] + params[f"b{i}"], 0.0)
        acts.append(h)
    return h @ params["w_out"] + params["b_out"], acts


def loss_and_grads(params, x, y):
    logits, acts = forward(params, x)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    norm = probs.sum(axis=1, keepdims=True)
    probs /= norm
    n = len(y)
    loss = (np.log(norm[:, 0]) - logits[np.arange(n), y]).mean()  # cross-entropy in nats
    d = probs
    d[np.arange(n), y] -= 1.0
    d /= n
    grads = {"w_out": acts[-1].T @ d, "b_out": d.sum(axis=0)}
    dh = d @ params["w_out"].T
    for i in reversed(range(DEPTH)):
        dh = dh * (acts[i + 1] > 0)
        grads[f"w{i}"] = acts[i].T @ dh
        grads[f"b{i}"] = dh.sum(axis=0)
        dh = dh @ params[f"w{i}"].T
    demb = np.zeros_like(params["emb"])
    np.add.at(demb, x.reshape(-1), dh.reshape(-1, EMBED_DIM))
    grads["emb"] = demb
    return float(loss), grads


class Model:
    """The callable evaluate_bpb scores: (B, MAX_SEQ_LEN) contexts -> (B, V) logits."""

    def __init__(self, params):
        self.params = params

    def __call__(self, contexts):
        return forward(self.params, contexts[:, -CONTEXT:])[0]

# ---------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------

class Adam:
    def __init__(self, params):
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads, lr):
        b1, b2 = ADAM_BETAS
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * (g * g)
            if WEIGHT_DECAY and k.startswith("w"):
                params[k] -= lr * WEIGHT_DECAY * params[k]
            params[k] -= (lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + 1e-8)).astype(np.float32)


def get_lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO if WARMUP_RATIO > 0 else 1.0
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown * 1.0 + (1 - cooldown) * FINAL_LR_FRAC


def get_batch(data, rng):
    starts = rng.integers(0, len(data) - CONTEXT - 1, BATCH_SIZE)
    idx = starts[:, None] + np.arange(CONTEXT + 1)
    window = data[idx].astype(np.int64)
    return window[:, :-1], window[:, -1]

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

t_start = time.time()
assert 1 <= CONTEXT <= MAX_SEQ_LEN, "CONTEXT must be between 1 and MAX_SEQ_LEN"
rng = np.random.default_rng(SEED)
tokenizer = Tokenizer()
vocab_size = tokenizer.get_vocab_size()
train_data = load_split("train")
params = init_params(rng, vocab_size)
optimizer = Adam(params)
num_params = sum(v.size for v in params.values())
matmul_params = sum(v.size for k, v in params.items() if k.startswith("w"))
num_flops_per_token = 6 * matmul_params
print(f"Vocab size: {vocab_size:,} | params: {num_params:,} | context: {CONTEXT} | depth: {DEPTH}")
print(f"Time budget: {TIME_BUDGET}s (reference seconds) | BLAS threads: "
      f"{os.environ['OPENBLAS_NUM_THREADS']}")

# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------

# The budget counts reference seconds (prepare.py's TIME_BUDGET_CLOCK = "reference"): this
# process's own CPU time (time.process_time, not the wall clock), scaled by the machine's speed
# now (prepare.BudgetClock). Other work on the machine slows the run down but does not take
# training steps away from it.
clock = BudgetClock()
t_start_training = time.process_time()
smooth_train_loss = 0.0
total_training_time = 0.0
total_training_cpu = 0.0
step = 0

while True:
    t0 = time.process_time()
    progress = min(total_training_time / TIME_BUDGET, 1.0)
    lr = LEARNING_RATE * get_lr_multiplier(progress)
    x, y = get_batch(train_data, rng)
    train_loss, grads = loss_and_grads(params, x, y)

    # Fast fail: abort if loss is exploding or NaN
    if math.isnan(train_loss) or train_loss > 100:
        print("FAIL")
        sys.exit(1)

    optimizer.step(params, grads, lr)
    cpu_dt = time.process_time() - t0
    dt = clock.charge(cpu_dt)
    if step > 10:
        total_training_time += dt
        total_training_cpu += cpu_dt

    ema_beta = 0.99
    smooth_train_loss = ema_beta * smooth_train_loss + (1 - ema_beta) * train_loss
    if step % 500 == 0:
        debiased = smooth_train_loss / (1 - ema_beta ** (step + 1))
        remaining = max(0.0, TIME_BUDGET - total_training_time)
        print(f"step {step:05d} ({100 * progress:.1f}%) | loss: {debiased:.6f} | "
              f"lr: {lr:.5f} | dt: {dt * 1000:.1f}ms | remaining: {remaining:.0f}s", flush=True)

    step += 1
    # Time's up, but only stop after the warmup steps that are not counted
    if step > 10 and total_training_time >= TIME_BUDGET:
        break

total_tokens = step * BATCH_SIZE
speed = total_training_time / total_training_cpu if total_training_cpu > 0 else 0.0
print(f"Trained {total_training_time:.1f} reference seconds on {total_training_cpu:.1f} CPU "
      f"seconds: the machine at {speed:.2f}x the reference core ({clock.measurements} measurements)")

# Final eval
val_bpb = evaluate_bpb(Model(params))

# Final summary
t_end = time.time()
steady_state_mfu = 100 * num_flops_per_token * BATCH_SIZE * (step - 10) / total_training_cpu / NOMINAL_PEAK_FLOPS if total_training_cpu > 0 else 0
peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
peak_vram_mb = peak_rss / (1024 * 1024) if sys.platform == "darwin" else peak_rss / 1024

print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {total_training_time:.1f}")
print(f"total_seconds:    {t_end - t_start:.1f}")
print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
print(f"mfu_percent:      {steady_state_mfu:.2f}")
print(f"total_tokens_M:   {total_tokens / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")
