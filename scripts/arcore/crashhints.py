"""Crash classes and the one-line next action for each (pure data, imported by arcore.runlog,
which gives the classes, and by arcore.report, which names them: small, so a report of a
ledger with crashes need not load the log parser)."""

HINTS = {
    "oom": "out of GPU memory: reduce DEVICE_BATCH_SIZE or the model size "
           "(keep TOTAL_BATCH_SIZE via gradient accumulation)",
    "nan": "loss diverged (NaN or exploding, train.py printed FAIL): lower the learning rate "
           "or undo the change that destabilised training",
    "timeout": "ran past the hard timeout: the change made steps far slower or hung; "
               "shrink it or drop it",
    "syntax": "train.py does not parse: fix the syntax error at the end of run.log and rerun",
    "import": "a module or name is missing: use only packages already in pyproject.toml "
              "or fix the import",
    "compile": "torch.compile/Inductor/Triton failed: simplify the new op or keep it "
               "out of the compiled region",
    "kernel": "the FA3 kernel (kernels.get_kernel) is unavailable on this GPU/driver/network: "
              "run check-hardware.sh or use an SDPA fallback",
    "data": "tokenizer or data shards are missing: run `uv run prepare.py` once "
            "(outside the experiment)",
    "killed": "killed by a signal (scheduler, OOM killer or a person): check dmesg or the "
              "scheduler, then rerun",
    "truncated": "the log stops mid-training with no error: the process or machine was lost; "
                 "rerun to confirm",
    "unknown": "no metric and no known failure: read `tail -n 50 run.log`",
    # Given by the judge (arcore.attest, arcore.experiment), never by runlog.classify:
    "unattested": "the score must come from prepare.evaluate_bpb, called once by train.py, "
                  "its value printed as it is; no attested evaluation was recorded",
    "tamper": "the evaluator, its inputs and the validation split are the harness's: train "
              "on the training split only and print evaluate_bpb's value as it is",
    "over-budget": "training ran past TIME_BUDGET plus the baseline's start-up overhead "
                   "(--budget-tolerance): a longer run is a different experiment",
}
JUDGE_CLASSES = ("unattested", "tamper", "over-budget")   # arcore.attest.CLASSES
