#!/usr/bin/env bash
# Stops what .ci/slurm-up.sh started.
pkill -x slurmd || true
pkill -x slurmctld || true
pkill -x munged || true
