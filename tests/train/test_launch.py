"""ttds.train.launch's trainer: Ray Train's TorchTrainer less the PlacementGroupCleaner, whose
shutdown wait cost every run ~12 s (ttds.train.launch._trainer_class says why). Ray is pinned:
if a Ray upgrade renames the hook or the callback, this test says so."""

from __future__ import annotations


def test_the_trainer_keeps_every_default_callback_but_the_placement_group_cleaner(ray_session, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from ttds.train.launch import _trainer_class

    def build(cls):
        return cls(lambda config: None, scaling_config=ScalingConfig(num_workers=1), run_config=RunConfig(storage_path=str(tmp_path), name="x"))

    ray_default = [type(c) for c in build(TorchTrainer)._create_default_callbacks()]
    ours = [type(c) for c in build(_trainer_class())._create_default_callbacks()]
    assert PlacementGroupCleanerCallback in ray_default  # what Ray 2.60 adds to every run
    assert ours == [c for c in ray_default if c is not PlacementGroupCleanerCallback]
    assert issubclass(_trainer_class(), TorchTrainer) and _trainer_class() is _trainer_class()
