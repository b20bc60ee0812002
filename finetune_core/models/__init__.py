"""Models: where weights come from, what a run needs from the machine, and whether it fits.

``sources`` resolves the bundled model, Hub ids and local folders and holds
the device/dtype policy, ``catalogue`` lists the small instruct models the
picker offers, ``tokenizers`` caches the tokenizers the Data tab counts with, ``device_plan`` decides 4-bit loading, the attention
implementation and padding-free batches, ``memory`` estimates a run's peak
memory (its formulas and calibrated constants in ``memory_estimate``) and ``device_memory`` reads what this machine offers.

May import: ``finetune_core.config``, ``finetune_core.errors``, ``data``,
``runs`` and ``speedups``; never ``training``, ``inference`` or ``export``
(tests/test_layout.py refuses import cycles between subpackages).
"""
