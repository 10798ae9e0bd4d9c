"""FOMAML-SFT workload (SPEC 6.2, seed 003): data preparation, validation, first-order MAML training, eval."""
