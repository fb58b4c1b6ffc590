"""Analysis: one module per question asked of a finished (or running) run.

gates: where the gate sends training samples (Figure 2, noisy vs clean, top-g images).
figures: the one figure-saving helper every module uses.
"""
