"""Training debaters on verdicts: samples, rewards, objectives, the learner, the warm start."""
