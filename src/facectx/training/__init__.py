"""Stage-by-stage GAN training: data on the device, checkpoints, the loop."""
