#!/usr/bin/env bash
# Trains one almtok config on a Cloud TPU pod slice, and keeps it going through preemptions.
#
#   export TPU_NAME=almtok-base ZONE=us-east5-a ACCELERATOR=v5p-32 RUNTIME=v2-alpha-tpuv5 \
#          CONFIG=configs/paper.py:base \
#          WORKDIR=/mnt/almtok/runs/cont_base LATENTS=/mnt/almtok/prep/latents
#   experiments/launch/tpu_pod.sh create    # queue the slice (SPOT=1: spot capacity)
#   experiments/launch/tpu_pod.sh install   # this checkout (git HEAD) on every worker, pip install
#   experiments/launch/tpu_pod.sh train     # the same command on every worker, --multihost
#   experiments/launch/tpu_pod.sh watch     # until the run is finished: on preemption delete,
#                                           # recreate, install and train again (it resumes)
#   experiments/launch/tpu_pod.sh log       # the newest lines of worker 0's log
#
# On a TPU VM `jax.distributed.initialize()` needs no address: `--multihost` alone joins the
# workers into one mesh. almtok reads and writes through the filesystem, so WORKDIR and LATENTS
# must be paths every worker sees: MOUNT (run on every worker after `create`, e.g. a Filestore
# NFS mount or a gcsfuse mount of a bucket) makes them so. Plan the layout first:
#   python -m almtok.plan --config=$CONFIG --num_devices=16   # v5p-32 has 16 chips
set -euo pipefail

: "${TPU_NAME:?}" "${ZONE:?}" "${ACCELERATOR:?e.g. v5p-32}" "${RUNTIME:?e.g. v2-alpha-tpuv5}"
: "${CONFIG:?e.g. configs/paper.py:base}" "${WORKDIR:?}" "${LATENTS:?}"
: "${MOUNT:=}"          # Shell command that mounts the shared filesystem on a worker.
: "${SPOT:=0}"
: "${EXTRA_FLAGS:=}"    # More --config.* overrides for the trainer.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

tpu() { gcloud compute tpus "$@" --zone="${ZONE}"; }
on_all() { tpu tpu-vm ssh "${TPU_NAME}" --worker=all --command="$1"; }
state() {
  tpu queued-resources describe "${TPU_NAME}" --format='value(state.state)' 2>/dev/null \
    || echo MISSING
}

create() {
  local spot=""
  [[ "${SPOT}" == 1 ]] && spot="--spot"
  # shellcheck disable=SC2086  # ${spot} is one flag or nothing.
  tpu queued-resources create "${TPU_NAME}" --node-id="${TPU_NAME}" \
    --accelerator-type="${ACCELERATOR}" --runtime-version="${RUNTIME}" ${spot}
  local s
  while s="$(state)"; [[ "${s}" != ACTIVE ]]; do
    if [[ "${s}" == FAILED || "${s}" == SUSPENDED ]]; then
      echo "${TPU_NAME} is ${s}: delete it and create again" >&2
      return 1
    fi
    echo "waiting for ${TPU_NAME}: ${s}"
    sleep 60
  done
  [[ -z "${MOUNT}" ]] || on_all "${MOUNT}"
}

install() {
  local tarball=/tmp/almtok-src.tar.gz
  git -C "${HERE}" archive --format=tar.gz -o "${tarball}" HEAD
  tpu tpu-vm scp "${tarball}" "${TPU_NAME}:~/almtok-src.tar.gz" --worker=all
  on_all "rm -rf ~/almtok && mkdir ~/almtok && tar -xzf ~/almtok-src.tar.gz -C ~/almtok \
    && (python3 -m venv ~/venv || (sudo apt-get update -q \
        && sudo apt-get install -y -q python3-venv && python3 -m venv ~/venv)) \
    && ~/venv/bin/pip install -q -e \"\$HOME/almtok[tpu]\""
}

train() {
  on_all "cd ~/almtok && nohup ~/venv/bin/python -m almtok.train --config=${CONFIG} \
    --workdir=${WORKDIR} --config.data.latents_dir=${LATENTS} --multihost ${EXTRA_FLAGS} \
    >> ~/train.log 2>&1 &"
}

finished() {
  tpu tpu-vm ssh "${TPU_NAME}" --worker=0 \
    --command="~/venv/bin/python ~/almtok/experiments/launch/run_finished.py ${WORKDIR}"
}

watch() {
  while true; do
    case "$(state)" in
      ACTIVE)
        if finished; then echo "run finished: ${WORKDIR}"; return 0; fi
        if ! tpu tpu-vm ssh "${TPU_NAME}" --worker=0 --command="pgrep -f almtok.train" \
            > /dev/null; then
          echo "the trainer is not running and the run is not finished: see 'log'" >&2
          return 1
        fi ;;
      SUSPENDED|FAILED|MISSING)   # Preempted (or gone): start again; the trainer resumes.
        echo "$(date -u +%FT%TZ) ${TPU_NAME} is $(state): recreating"
        tpu queued-resources delete "${TPU_NAME}" --force --quiet || true
        create && install && train ;;
      *) ;;                        # Provisioning, waiting for resources.
    esac
    sleep 300
  done
}

log() { tpu tpu-vm ssh "${TPU_NAME}" --worker=0 --command="tail -n 40 ~/train.log"; }

case "${1:-}" in
  create|install|train|watch|log) "$1" ;;
  *) echo "usage: $0 create|install|train|watch|log" >&2; exit 2 ;;
esac
