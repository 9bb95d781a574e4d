"""Benchmarks of lightning_deepfeat: ``python -m benchmarks [--quick]`` (see ``docs/benchmarks.md``).

Modules: :mod:`benchmarks.overhead` (Lightning vs a hand-written loop),
:mod:`benchmarks.max_norm_cost` (cost of the max-norm constraint),
``benchmarks.translation`` (batched augmentation throughput),
:mod:`benchmarks.time_to_accuracy` (minutes to a test accuracy), and the shared
helpers of :mod:`benchmarks._timing`.
"""
