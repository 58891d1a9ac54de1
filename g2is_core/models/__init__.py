"""Models: loading (the packaged default, local directories, the tiny test Llama), LoRA, generation.

May import: :mod:`g2is_core.data` and the base modules (workspace, progress, runtime).
"""
