#!/usr/bin/env bash
# Reproduces the committed results/ (CPU, this repo's defaults): one sweep per dataset (and the
# α sweep on gmm2d), then the report that writes results/<dataset>/. Run folders go to
# results/runs (git-ignored); finished runs are skipped, so a second invocation trains nothing.
set -euo pipefail
T=${TIWBENCH:-.venv/bin/tiwbench}
$T sweep --dataset gmm2d --methods all --refs 0.05,0.1,0.25,0.5 --seeds 0,1,2
$T sweep --dataset gmm2d --methods iw_dsm,tiw_dsm --refs 0.05 --seeds 0,1,2 --alphas 0.25,0.5,1,2
$T report --dataset gmm2d
$T sweep --dataset gmm_hd --methods all --refs 0.05,0.1,0.25,0.5 --seeds 0,1,2
$T report --dataset gmm_hd
$T sweep --dataset digits_lt --methods all --refs 0.05,0.1,0.25,0.5 --seeds 0,1,2
$T report --dataset digits_lt
# Ablation: ratio-training length on gmm_hd at ref 0.05 (its own runs folder, its own report).
R=results/runs/ratio-steps
$T sweep --dataset gmm_hd --methods iw_dsm,tiw_dsm --refs 0.05 --seeds 0,1,2 --results $R
$T sweep --dataset gmm_hd --methods iw_dsm,tiw_dsm --refs 0.05 --seeds 0,1,2 --ratio-steps 500 --results $R
$T sweep --dataset gmm_hd --methods tiw_dsm --refs 0.05 --seeds 0,1,2 --ratio-steps 20000 --results $R
$T report --dataset gmm_hd --results $R --out results/gmm_hd_ratio_steps
