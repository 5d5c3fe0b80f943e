"""Training: the train command (command.py: its request, one run or a sweep), the loop (loop.py: groups,
epochs, steps, validation, checkpoints), the launch (launch.py: run directory, lock, Ctrl-C, torchrun ranks,
resume), the modes the loop calls (modes.py: one process, jobs
or data parallel; one model after another or fused), one optimizer step (step.py, fused.py), the ranks'
messages (parallel.py), optimizer and schedule (optim.py), the models in training (members.py),
TensorBoard (board.py) and sweeps (sweeps.py). It may import every other folder.
"""
