"""moe-steer workload (SteerMoE, seed 004): expert risk-difference analysis and expert-only fine-tuning."""
