"""Ray Train plumbing shared by every training job: launch, DeepSpeed, checkpoints."""
