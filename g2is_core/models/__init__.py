"""Models: loading (the packaged default, local directories, the tiny test Llama), LoRA (settings, presets,
attach), model plumbing written once (:mod:`.lm_ops`: peft unwrap, decoder parts, per-example response
loss, managed hooks), the one LoRA SFT loop (:mod:`.training`, used by the warmup, the head studies,
the experiment's cells and impact), generation.

May import: :mod:`g2is_core.data` and the base modules (workspace, progress, runtime, linalg).
"""
