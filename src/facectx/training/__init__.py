"""Stage-by-stage GAN training, one module per job:

loop.py          StageTrainer: one stage's training, read top to bottom (set-up, step, loop, results)
batches.py       the stage's rows on the device, its batch size, each step's rows (epoch order, ranks)
build.py         generator and critic, their optimizers, the stage's loss, the DDP / compiled wrappers
step.py          one training step (critic phase, generator phase) and each loss term's gradient norm
state.py         torch's seeded scope, the previous stage's weights, resume state and final checkpoint
report.py        losses.csv, the log, the tracker, metrics.json; the gradient-share report
validation.py    validation metrics and the sample grid
checkpoint.py    self-describing checkpoints (safetensors, meta.json), the run's training identity
data.py          the prepared shards resident on the device
distributed.py   several processes (torchrun / run_processes): DDP helpers, global batch norm
graphed_step.py  the training step recorded once as a CUDA graph and replayed
remote_state.py  resume state kept in S3 as well (a preemptible pod's disk does not outlive it)
"""
