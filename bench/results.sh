#!/usr/bin/env bash
# Reproduces the committed results/ (CPU, this repo's defaults): per dataset, every method with the
# default ratio estimator at four reference sizes (refs_of below), the bounds beside them — the
# label-informed ratio (`--ratio labels`) everywhere and the exact ratio on the analytic sets — for
# iw_dsm and tiw_dsm at the same sizes; at ref 0.05 also the paper's protocol (`--ratio paper`) and
# the ablations of the default discriminator; then the report that writes results/<dataset>/ with
# the records of every run behind it (runs/) and the reading of the numbers in
# bench/summaries/<dataset>.md. Run folders go to results/runs (git-ignored); finished runs are
# skipped, so a second invocation trains nothing and an interrupted one goes on where it stopped.
# JOBS (default 2) runs that many in parallel, the cores split among them (sweep --jobs). REFS
# overrides every dataset's sizes, SEEDS the seeds (0,1,2), DATASETS the datasets (a
# space-separated subset, in the order to run them). STUDIES (default "gmm2d_seeds
# gmm2d_stratified"; "" for none) adds results/gmm2d_seeds, gmm2d's default rows over seeds 0-7
# paired to dsm_ref, and results/gmm2d_stratified, the same with a D_ref of exactly the target's
# shares paired to the exact-ratio bound, with refitted and unselected discriminators; their runs
# in results/runs-<study> (git-ignored too). Timings: bench/NOTES.md.
set -euo pipefail
T=${TIWBENCH:-.venv/bin/tiwbench}
SEEDS=${SEEDS:-0,1,2}
J="--jobs ${JOBS:-2}"
refs_of() {  # four reference sizes per dataset: the smallest still gives >= 100 reference images
  case $1 in           # on shapes16 (120); digits_lt stops where its classes run out (0.57)
    digits_lt) echo 0.05,0.1,0.25,0.5 ;;
    shapes16) echo 0.01,0.025,0.05,0.1 ;;
    *) echo 0.01,0.05,0.1,0.25 ;;
  esac
}
RATIO_METHODS=iw_dsm,tiw_dsm,tiw_nocorr,tiw_corr
for D in ${DATASETS:-gmm_hd gmm2d digits_lt shapes16}; do
  R=${REFS:-$(refs_of $D)}
  $T sweep --dataset $D --methods all --refs $R --seeds $SEEDS $J
  # the label-informed ratio (a group classifier trained on D_bias's labels): the bound on any dataset
  $T sweep --dataset $D --methods iw_dsm,tiw_dsm --refs $R --seeds $SEEDS $J --ratio labels
  if [ $D = gmm2d ] || [ $D = gmm_hd ]; then  # the analytic sets: the exact ratio as the upper bound
    $T sweep --dataset $D --methods iw_dsm,tiw_dsm --refs $R --seeds $SEEDS $J --ratio exact
    $T sweep --dataset $D --methods $RATIO_METHODS --refs 0.05 --seeds $SEEDS $J --ratio exact
  fi
  if [ $D != shapes16 ]; then  # the ablations, at ref 0.05
    # the published protocol: a discriminator trained for a fixed number of steps, no selection
    $T sweep --dataset $D --methods iw_dsm,tiw_dsm --refs 0.05 --seeds $SEEDS $J --ratio paper
    # the discriminator as a head on a frozen, noise-aware encoder (the paper's approach)
    $T sweep --dataset $D --methods iw_dsm,tiw_dsm --refs 0.05 --seeds $SEEDS $J --ratio-backbone score
    # the time-dependent discriminator on the linear large-σ term alone, not the tilted base
    $T sweep --dataset $D --methods tiw_dsm --refs 0.05 --seeds $SEEDS $J --ratio-option limit_base=linear
    # the tilt weighted by the linear term's clean value always, not chosen on held-out data
    $T sweep --dataset $D --methods tiw_dsm --refs 0.05 --seeds $SEEDS $J --ratio-option tilt_weights=linear
  fi
  rm -rf results/$D && $T report --dataset $D --summary bench/summaries/$D.md
done
for S in ${STUDIES-gmm2d_seeds gmm2d_stratified}; do
  if [ $S = gmm2d_seeds ]; then  # is the learned tiw_dsm below D_ref's own draw?
    R=results/runs-gmm2d-seeds
    $T sweep --dataset gmm2d --methods dsm_obs,dsm_mix,dsm_ref,iw_dsm,tiw_dsm,tiw_corr --refs 0.05 \
      --seeds 0,1,2,3,4,5,6,7 --results $R
    $T sweep --dataset gmm2d --methods tiw_dsm --refs 0.05 --seeds 0,1,2,3,4,5,6,7 --results $R --ratio exact
    rm -rf results/$S && $T report --dataset gmm2d --results $R --out results/$S --baseline dsm_ref \
      --summary bench/summaries/$S.md
  fi
  if [ $S = gmm2d_stratified ]; then  # the same without D_ref's draw: the learned ratio against its bound
    R=results/runs-gmm2d-stratified
    O="--dataset gmm2d --dataset-option ref_sampling=stratified --refs 0.05 --seeds 0,1,2,3,4,5,6,7 --results $R"
    $T sweep $O --methods dsm_ref,iw_dsm,tiw_dsm,tiw_corr
    $T sweep $O --methods tiw_dsm --ratio exact
    $T sweep $O --methods tiw_dsm --ratio labels  # the label-informed bound against the exact one
    $T sweep $O --methods iw_dsm,tiw_dsm --ratio-option refit=true  # refitted on all the data
    $T sweep $O --methods iw_dsm --ratio-option holdout=0  # trained to the end, no selection
    $T sweep $O --methods tiw_dsm --ratio-option holdout=0 --ratio-option tilt_weights=classifier
    rm -rf results/$S && $T report --dataset gmm2d --results $R --out results/$S --baseline tiw_dsm+exact \
      --summary bench/summaries/$S.md
  fi
done
