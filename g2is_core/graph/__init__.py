"""The instruction graph: kNN (exact and approximate), scale, the 2-D layout, core knowledge and the walk.

Pure array code over feature matrices. May import only the base modules (workspace, runtime, progress, linalg).
"""
